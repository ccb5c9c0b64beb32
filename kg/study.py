"""The study file (TOML): which diseases, and how the bundle is cut from the graph.

Three lines are enough::

    [study]
    name = "demo"
    diseases = ["ORPHA:355", "ORPHA:324"]

Every other table is optional; the defaults below are commented with their unit and reason.
Unknown keys and wrong types are errors.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kg.metapaths import FEATURE_METAPATHS
from shared.ehr.report import DEFAULT_MIN_PATIENTS
from shared.errors import ConfigError

_ORPHA = re.compile(r"^ORPHA:\d+$")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, alias_generator=_kebab,
                              populate_by_name=True)


class StudyTable(_Strict):
    name: str = Field(min_length=1)  # shown in reports and the data card
    diseases: tuple[str, ...] = Field(min_length=1)  # ORPHA codes in scope
    description: str = ""
    # patients with a study diagnosis a site needs to take part; each `data validate` report
    # says whether the site meets it. Below ~20, DP-SGD's noise (σ·C / batch) swamps a
    # site's few gradients and one patient weighs too much in what the site sends.
    min_patients: int = Field(DEFAULT_MIN_PATIENTS, ge=1)

    @field_validator("diseases", mode="before")
    @classmethod
    def _list_to_tuple(cls, v):
        return tuple(v) if isinstance(v, list) else v

    @field_validator("diseases")
    @classmethod
    def _orpha_codes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for code in v:
            if not _ORPHA.match(code):
                raise ValueError(f"{code!r} is not an Orphanet code like ORPHA:558")
        if len(set(v)) != len(v):
            raise ValueError("diseases are listed more than once")
        return v


class TimeGrid(_Strict):
    windows: int = Field(8, ge=2, le=64)  # windows per trajectory: DESIGN's default grid
    windows_before: int = Field(1, ge=0)  # of which before the index date (prodrome)
    window_days: int = Field(180, ge=1, le=3650)  # days per window: 8 × 180 d ≈ 4 years

    def model_post_init(self, _context) -> None:
        if self.windows_before >= self.windows:
            raise ValueError("windows-before must be smaller than windows")


class VocabularyLimits(_Strict):
    phenotypes: int = Field(128, ge=1)  # HPO phenotype features; model width grows with it
    drugs: int = Field(32, ge=0)  # DrugBank drugs
    adverse_events: int = Field(48, ge=0)  # HPO terms reached as drug effects
    labs: int = Field(24, ge=0)  # LOINC labs with reference ranges


class Scoring(_Strict):
    damping: float = Field(0.4, ge=0.0, le=1.0)  # DWPC damping w; Hetionet's value
    weights: dict[str, float] = Field(default_factory=lambda: {
        "DhP": 1.0,  # direct annotation: the strongest evidence
        "DaGhP": 0.5,  # via the disease's genes: broader, noisier
        "DhPiP": 0.25,  # ontology neighbours of annotated terms: weak support
        "DtC": 1.0,  # curated indication
        "DtCeP": 1.0,  # labelled adverse effect of an indicated drug
        "DtCsP": 0.5,  # FAERS signal (spontaneous reports: disproportionality, not causality)
        "DhPmL": 1.0,  # lab that reflects an annotated phenotype
        "DtCePmL": 0.5,  # lab that reflects an adverse effect
    })
    frequency_weight: float = Field(1.0, ge=0.0)  # weight of the annotated frequency (0–1) in the score
    unknown_frequency: float = Field(0.5, ge=0.0, le=1.0)  # frequency assumed where HPO gives none
    not_penalty: float = Field(2.0, ge=0.0)  # subtracted for an explicit NOT annotation
    clip: float = Field(3.0, gt=0.0)  # standardized scores are clipped to ±clip

    @field_validator("weights")
    @classmethod
    def _known_metapaths(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(FEATURE_METAPATHS))
        if unknown:
            raise ValueError(f"unknown meta-path {unknown[0]!r}; known: {', '.join(FEATURE_METAPATHS)}")
        if any(w < 0 for w in v.values()):
            raise ValueError("meta-path weights must be ≥ 0")
        return v


class PriorGraph(_Strict):
    top_k: int = Field(8, ge=1)  # PathSim neighbours kept per phenotype
    min_pathsim: float = Field(0.05, ge=0.0, le=1.0)  # weaker phenotype–phenotype links are dropped


class Study(_Strict):
    study: StudyTable
    time: TimeGrid = TimeGrid()
    vocabulary: VocabularyLimits = VocabularyLimits()
    scoring: Scoring = Scoring()
    prior_graph: PriorGraph = PriorGraph()


def load_study(path: str | Path) -> Study:
    """Read and validate a study file.

    Raises
    ------
    ConfigError
        Missing file, TOML syntax error, unknown key, wrong type or bad value; the
        message names the file and the key.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: study file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_study(data, source=str(path))


def parse_study(data: dict, *, source: str = "<study>") -> Study:
    """Validate a study mapping (as read from TOML)."""
    try:
        return Study.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{source}: {where}: {err['msg']}") from None
