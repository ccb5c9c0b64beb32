"""A site's node config: hospital facts, set by hospital IT with ``flower-supernode
--node-config`` (or by ``raregraph federate`` for simulated sites). Parsed once, at the
top of each handler, into a frozen :class:`NodeConfig`; nothing below sees string keys."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from shared.privacy.settings import DEFAULT_CLIP_NORM
from shared.ehr.cdm_connection import DEFAULT_PASSWORD_ENV, CdmDatabase
from shared.ehr.codemap import ACCEPT, DEFAULT_ACCEPT
from shared.ehr.omop_checks import parse_sex_codes
from shared.errors import ConfigError, InputError

#: σ of the disease-histogram release: alone ε ≈ 0.80 (RDP; 0.74 PRV) at δ = 1e-5, but composed with
#: DP-SGD it adds only 0.07–0.12 to ε at budgets 8–4 (the DP-SGD σ rises 0.5–2.8 % to pay for it);
#: noise sd 5 patients per disease and site, which pooling over sites averages down
#: The recommended σ; a node config opts in with it (the key's default is 0: the site declines),
#: and `raregraph federate` and the demo give their simulated sites this one.
DEFAULT_HISTOGRAM_NOISE = 5.0
#: node-config key → (field, type, default or REQUIRED)
REQUIRED = object()
KEYS: dict[str, tuple[str, type, object]] = {
    "site-id": ("site_id", str, REQUIRED),  # shown in logs, the ledger and privacy.json
    # the site's data: a folder (OMOP CSV/Parquet or FHIR Bulk; read-only is enough) or its
    # CDM database (cdm-url); exactly one of the two
    "data-path": ("data_path", str, ""),
    "cdm-url": ("cdm_url", str, ""),  # SQLAlchemy URL without the password (postgresql+psycopg://…, duckdb:///…)
    "cdm-schema": ("cdm_schema", str, ""),  # schema of the clinical tables ("": the connection's default)
    "vocabulary-schema": ("vocabulary_schema", str, ""),  # schema of concept, … ("": the same as cdm-schema)
    "cdm-password-env": ("cdm_password_env", str, DEFAULT_PASSWORD_ENV),  # env variable holding the password
    "cdm-password-file": ("cdm_password_file", str, ""),  # file holding it, mode 0600 ("": use cdm-password-env)
    # what other gender_source_value codes mean, e.g. "1=M,2=F" ("": only F/M/FEMALE/MALE and gender_concept_id)
    "sex-codes": ("sex_codes", str, ""),
    "state-path": ("state_path", str, REQUIRED),  # privacy state and bundle cache (must persist)
    "coordinator-pub": ("coordinator_pub", str, REQUIRED),  # pinned coordinator key (PEM)
    "site-key": ("site_key", str, REQUIRED),  # the site's own Ed25519 private key (PEM): signs its privacy ledger
    "epsilon": ("epsilon", float, REQUIRED),  # the site's lifetime ε for this dataset
    "budget-raise": ("budget_raise", bool, False),  # true only for the run that raises epsilon/delta on purpose
    "delta": ("delta", float, 1e-5),  # δ; keep it below 1 / number of patients
    "clip-norm": ("clip_norm", float, DEFAULT_CLIP_NORM),  # per-patient gradient norm bound C
    "batch-size": ("batch_size", int, 32),  # expected Poisson batch; q = batch-size / patients
    "noise-multiplicity": ("noise_multiplicity", int, 4),  # diffusion noise draws per patient and step
    "skip-bad-rows": ("skip_bad_rows", bool, False),  # count and drop bad OMOP rows / FHIR lines
    # weakest code-map relation used: exact, narrower (default: never gives a patient a disease
    # they may not have), broader or related; the same as `data validate --accept`
    "code-accept": ("code_accept", str, DEFAULT_ACCEPT),
    "site-code-map": ("site_code_map", str, ""),  # the site's own mapping TSV ("": none); never leaves the site
    "threads": ("threads", int, 1),  # torch threads for this site's training
    "eval-noise-multiplier": ("eval_noise_multiplier", float, 0.0),  # σ of DP evaluation releases; 0: never evaluate
    "eval-loss-clip": ("eval_loss_clip", float, 2.0),  # per-patient loss bound B of DP evaluation
    # σ of the site's one disease-histogram release (client/disease_mix.py); 0: decline (the model
    # then counts this site as a uniform mix)
    "histogram-noise-multiplier": ("histogram_noise_multiplier", float, 0.0),
    # σ of the site's one vocabulary-survey release (its codes and event times, client/vocabulary_survey.py);
    # 0: decline (the study vocabulary then grows from the other sites only)
    "survey-noise-multiplier": ("survey_noise_multiplier", float, 0.0),
    # the evaluation suite on the coordinator's synthetic sample (aggregate numbers, not covered by ε)
    "eval-suite": ("eval_suite", bool, True),
    "holdout-path": ("holdout_path", str, ""),  # patients never trained on (OMOP/FHIR folder; "": none)
}
PATH_FIELDS = ("data_path", "state_path", "coordinator_pub", "site_key", "site_code_map", "holdout_path",
               "cdm_password_file")


@dataclass(frozen=True)
class NodeConfig:
    site_id: str
    state_path: Path
    coordinator_pub: Path
    site_key: Path
    epsilon: float
    data_path: Path | None = None
    cdm_url: str = ""
    cdm_schema: str = ""
    vocabulary_schema: str = ""
    cdm_password_env: str = DEFAULT_PASSWORD_ENV
    cdm_password_file: Path | None = None
    sex_codes: str = ""
    delta: float = 1e-5
    clip_norm: float = DEFAULT_CLIP_NORM
    batch_size: int = 32
    noise_multiplicity: int = 4
    skip_bad_rows: bool = False
    code_accept: str = DEFAULT_ACCEPT
    site_code_map: Path | None = None
    threads: int = 1
    eval_noise_multiplier: float = 0.0
    eval_loss_clip: float = 2.0
    histogram_noise_multiplier: float = 0.0  # opt in: DEFAULT_HISTOGRAM_NOISE
    survey_noise_multiplier: float = 0.0  # opt in: shared.survey.DEFAULT_SURVEY_NOISE
    eval_suite: bool = True
    holdout_path: Path | None = None
    budget_raise: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"node config epsilon must be a positive number, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"node config delta must be in (0, 1), got {self.delta}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ConfigError(f"node config clip-norm must be > 0, got {self.clip_norm}")
        if not (math.isfinite(self.eval_noise_multiplier) and self.eval_noise_multiplier >= 0):
            raise ConfigError(f"node config eval-noise-multiplier must be ≥ 0, got {self.eval_noise_multiplier}")
        for key, value in (("histogram-noise-multiplier", self.histogram_noise_multiplier),
                           ("survey-noise-multiplier", self.survey_noise_multiplier)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"node config {key} must be ≥ 0, got {value}")
        if not (math.isfinite(self.eval_loss_clip) and self.eval_loss_clip > 0):
            raise ConfigError(f"node config eval-loss-clip must be > 0, got {self.eval_loss_clip}")
        if (self.data_path is None) == (not self.cdm_url):
            raise ConfigError("node config needs exactly one of 'data-path' (a folder) and 'cdm-url' (a CDM database)")
        try:
            parse_sex_codes(self.sex_codes)
            if self.cdm_url:
                self.data_source  # noqa: B018 — parses the URL, refuses one holding a password
        except (ValueError, InputError) as exc:
            raise ConfigError(f"node config: {exc}") from None
        if self.holdout_path is not None and self.data_path is not None and \
                self.holdout_path.resolve() == Path(self.data_path).resolve():
            raise ConfigError("node config holdout-path must not be data-path: the site trains on data-path, and "
                              "held-out patients are ones it never trained on")
        if self.code_accept not in ACCEPT:
            raise ConfigError(f"node config code-accept must be one of {', '.join(ACCEPT)}, got {self.code_accept!r}")
        for name in ("batch_size", "noise_multiplicity", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"node config {name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")

    @property
    def data_source(self) -> Path | CdmDatabase:
        """What :func:`shared.ehr.site.read_site` reads: the data folder, or the CDM database."""
        if self.data_path is not None:
            return self.data_path
        return CdmDatabase(self.cdm_url, schema=self.cdm_schema or None,
                           vocabulary_schema=self.vocabulary_schema or None, password_env=self.cdm_password_env,
                           password_file=self.cdm_password_file)

    @property
    def sex_code_map(self) -> dict[str, str]:
        """:attr:`sex_codes` parsed (``{"1": "M", "2": "F"}``)."""
        return parse_sex_codes(self.sex_codes)

    @classmethod
    def from_mapping(cls, values: dict) -> NodeConfig:
        """Parse a node config mapping (kebab-case keys); unknown keys and wrong types fail.

        Raises
        ------
        ConfigError
            Names the key and what was expected.
        """
        unknown = sorted(set(values) - set(KEYS) - {"partition-id", "num-partitions"})
        if unknown:
            raise ConfigError(f"unknown node config key {unknown[0]!r}; known: {', '.join(KEYS)}")
        parsed = {}
        for key, (name, kind, default) in KEYS.items():
            if key not in values:
                if default is REQUIRED:
                    raise ConfigError(f"node config is missing {key!r}")
                continue
            value = values[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if kind is bool and isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"node config {key!r} must be {kind.__name__}, got {value!r}")
            if name in PATH_FIELDS:
                value = Path(value) if value or default is REQUIRED else None  # "": an optional path unset
            parsed[name] = value
        return cls(**parsed)

    def as_mapping(self) -> dict:
        """The kebab-case mapping (for ``--node-config`` and simulated nodes)."""
        by_name = {name: key for key, (name, _, _) in KEYS.items()}
        return {by_name[f.name]: (str(v) if isinstance(v := getattr(self, f.name), Path) else "" if v is None else v)
                for f in fields(self)}
