"""Federation-wide settings: ``[tool.flwr.app.config]`` in pyproject.toml (``flwr run .
--run-config 'k=v'`` overrides), or ``raregraph federate``'s options. Parsed once into a
frozen :class:`RunConfig`."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from shared.errors import ConfigError
from shared.model.settings import guidance_problem
from shared.survey import SurveyRequest, parse_time_edges, time_edges_text

#: how the server combines the sites' updates (:func:`server.aggregation.aggregate`): FedAvg or coordinate-wise median
Rule = Literal["mean", "median"]
RULES: tuple[str, ...] = ("mean", "median")
#: run-config keys read by the simulated sites of `flwr run .` on the simulation engine, not by the server
SIMULATION_PREFIX = "simulation."
#: run-config key → (field, type); defaults are the dataclass defaults
KEYS: dict[str, tuple[str, type]] = {
    "num-server-rounds": ("rounds", int),
    "run-dir": ("run_dir", str),
    "bundle.path": ("bundle_path", str),
    "bundle.pub": ("bundle_pub", str),
    "model.guidance": ("guidance", str),
    "model.pretrain-steps": ("pretrain_steps", int),
    "model.pretrain-patients": ("pretrain_patients", int),
    "train.local-steps": ("local_steps", int),
    "train.lr": ("lr", float),
    "train.seed": ("seed", int),
    "dp.accountant": ("accountant", str),
    "dp.planned-rounds": ("planned_rounds", int),
    "fed.min-sites": ("min_sites", int),
    "fed.round-timeout": ("round_timeout", float),
    "fed.outlier-factor": ("outlier_factor", float),
    "fed.max-update-norm": ("max_update_norm", float),
    "fed.max-site-patients": ("max_site_patients", int),
    "fed.max-site-share": ("max_site_share", float),
    "fed.aggregate": ("aggregate", str),
    "fed.evaluate-fraction": ("evaluate_fraction", float),
    "fed.site-keys": ("site_keys", str),
    "fed.consortium-record": ("consortium_record", str),
    "fed.auditor-pub": ("auditor_pub", str),
    "eval.per-disease": ("eval_per_disease", int),
    "survey.run": ("survey", bool),
    "survey.max-codes": ("survey_max_codes", int),
    "survey.time-weight": ("survey_time_weight", float),
    "survey.time-edges": ("survey_time_edges", str),
}


@dataclass(frozen=True)
class RunConfig:
    run_dir: Path  # where checkpoints, privacy.json and the final model go
    bundle_path: Path  # the signed study bundle (coordinator side)
    bundle_pub: Path  # the coordinator public key the bundle must verify with
    rounds: int = 5  # federated rounds
    guidance: str = "kg"  # kg, none (plain diffusion, γ = 0, no graph inputs) or learned (learned schedule, no graph)
    pretrain_steps: int = 1000  # coordinator steps on public-prior patients before round 1 (kg guidance; 0: none)
    pretrain_patients: int = 3000  # patients drawn from the bundle's knowledge for pretraining
    local_steps: int = 50  # DP-SGD steps per site per round
    lr: float = 2e-3  # site optimizer learning rate (AdamW, fresh each round)
    seed: int = 0  # initial weights and site randomness
    accountant: str = "rdp"  # privacy accountant sites use
    planned_rounds: int = 0  # rounds sites calibrate σ for (0: this run's rounds); more when a run will resume
    min_sites: int = 2  # a round needs at least this many replies
    round_timeout: float = 3600.0  # seconds a round waits for sites
    outlier_factor: float = 10.0  # with ≥ 3 replies: reject an update whose change norm exceeds factor × the median
    max_update_norm: float = 0.0  # clip each site's change ‖w_site − w_global‖ to this (0: lr × local steps × √weights)
    max_site_patients: int = 1_000_000  # a site claiming more patients (or fewer than 1) is rejected
    max_site_share: float = 1.0  # cap on one site's FedAvg weight n_k / Σ n (1: no cap)
    aggregate: str = "mean"  # mean (FedAvg, weighted by patients) or median (coordinate-wise, unweighted)
    evaluate_fraction: float = 0.0  # sites asked for a DP evaluation after each round (each charges its budget)
    site_keys: Path | None = None  # folder of the sites' public keys <site-id>.pub: ledgers verified on merge
    consortium_record: Path | None = None  # ledger heads kept across runs (None: RUN/../consortium.json)
    auditor_pub: Path | None = None  # the auditor's key: accepts a site's ledger carried forward on its acknowledgement
    eval_per_disease: int = 100  # synthetic patients per disease sent to every site for the evaluation suite (0: none)
    # a survey run (server.survey): no training; each site releases noisy counts of the bundle's public candidate
    # codes outside its vocabulary and of its event times once (client.vocabulary_survey), pooled into RUN/survey.json for `bundle grow`
    survey: bool = False
    survey_max_codes: int = SurveyRequest.max_codes  # codes one patient contributes at most (contribution bound m)
    survey_time_weight: float = SurveyRequest.time_weight  # weight w of the event-time histogram against the codes
    # days from the index date where an event-time bin ends, comma-separated;
    # the first bin also holds everything earlier, the last everything later
    survey_time_edges: str = time_edges_text(SurveyRequest.time_edges)

    def __post_init__(self) -> None:
        if problem := guidance_problem(self.guidance, "model.guidance"):
            raise ConfigError(problem)
        if self.accountant not in ("rdp", "prv"):
            raise ConfigError(f"dp.accountant must be rdp or prv, got {self.accountant!r}")
        if self.planned_rounds and self.planned_rounds < self.rounds:
            raise ConfigError(f"dp.planned-rounds ({self.planned_rounds}) must be 0 or ≥ num-server-rounds ({self.rounds})")
        if self.pretrain_steps < 0 or self.pretrain_patients < 1:
            raise ConfigError("model.pretrain-steps must be ≥ 0 and model.pretrain-patients ≥ 1")
        if self.eval_per_disease < 0:
            raise ConfigError(f"eval.per-disease must be ≥ 0, got {self.eval_per_disease}")
        for name in ("rounds", "local_steps", "min_sites"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.evaluate_fraction <= 1.0:
            raise ConfigError(f"fed.evaluate-fraction must be in [0, 1], got {self.evaluate_fraction}")
        if not self.outlier_factor > 1:
            raise ConfigError(f"fed.outlier-factor must be > 1, got {self.outlier_factor}")
        if not (math.isfinite(self.max_update_norm) and self.max_update_norm >= 0):
            raise ConfigError(f"fed.max-update-norm must be ≥ 0 (0: automatic), got {self.max_update_norm}")
        if self.max_site_patients < 1:
            raise ConfigError(f"fed.max-site-patients must be ≥ 1, got {self.max_site_patients}")
        if not 0 < self.max_site_share <= 1:
            raise ConfigError(f"fed.max-site-share must be in (0, 1], got {self.max_site_share}")
        if self.aggregate not in RULES:
            raise ConfigError(f"fed.aggregate must be one of {', '.join(RULES)}, got {self.aggregate!r}")
        self.survey_request()  # checks survey.*

    def survey_request(self) -> SurveyRequest:
        """What a survey run asks every site (``survey.*``)."""
        return SurveyRequest(max_codes=self.survey_max_codes, time_weight=self.survey_time_weight,
                             time_edges=parse_time_edges(self.survey_time_edges))

    @classmethod
    def from_mapping(cls, values: dict) -> RunConfig:
        """Parse a run-config mapping; unknown keys and wrong types fail with the key named."""
        # simulation.*: how simulated sites derive their node configs (client.simulated_site); not the server's
        values = {k: v for k, v in values.items() if not k.startswith(SIMULATION_PREFIX)}
        unknown = sorted(set(values) - set(KEYS))
        if unknown:
            raise ConfigError(f"unknown run config key {unknown[0]!r}; known: {', '.join(KEYS)}")
        parsed = {}
        for key, value in values.items():
            name, kind = KEYS[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ConfigError(f"run config {key!r} must be {kind.__name__}, got {value!r}")
            if name in ("run_dir", "bundle_path", "bundle_pub"):
                if value == "":
                    raise ConfigError(f"run config {key!r} must be set (flwr run . --run-config '{key}=\"...\"')")
                value = Path(value)
            if name in ("site_keys", "consortium_record", "auditor_pub"):
                value = Path(value) if value else None
            parsed[name] = value
        for required in ("run_dir", "bundle_path", "bundle_pub"):
            if required not in parsed:
                key = next(k for k, (n, _) in KEYS.items() if n == required)
                raise ConfigError(f"run config {key!r} must be set")
        return cls(**parsed)

    @property
    def participation_rounds(self) -> int:
        """Rounds each site calibrates its noise for."""
        return self.planned_rounds or self.rounds

    def as_mapping(self) -> dict:
        by_name = {name: key for key, (name, _) in KEYS.items()}
        return {by_name[f.name]: (str(v) if isinstance(v := getattr(self, f.name), Path) else "" if v is None else v)
                for f in fields(self)}
