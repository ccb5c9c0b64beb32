"""What the auditor of :mod:`shared.evaluation.canary_audit` fixes before the run.

Kept apart from the audit, which trains a model and so imports torch, so that
``raregraph audit empirical --help`` shows the defaults without loading torch (issue 23).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ConfigError


@dataclass(frozen=True)
class EmpiricalAuditConfig:
    """What the auditor chooses before the run (fixed in advance, as the bound requires)."""

    canaries: int = 128  # m: more canaries tighten the bound; about m/2 of them join the training data
    guesses_in: int = 16  # k₊: the highest-scoring canaries guessed "in"
    guesses_out: int = 16  # k₋: the lowest-scoring canaries guessed "out"
    beta: float = 0.05  # the bound holds with confidence 1 − β
    draws: int = 128  # (t, noise) draws averaged into each canary's loss; the same draws for all
    events: int = 16  # present (window, feature) cells per canary: enough to be unique, few enough to learn
    seed: int = 0  # canary construction and scoring draws (never the inclusion draw)

    def __post_init__(self) -> None:
        for name in ("canaries", "draws", "events"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.guesses_in < 0 or self.guesses_out < 0 or self.guesses_in + self.guesses_out < 1:
            raise ConfigError(f"guesses must be ≥ 0 on each side and ≥ 1 in all, got {self.guesses_in} 'in' "
                              f"and {self.guesses_out} 'out'")
        if self.guesses_in + self.guesses_out > self.canaries:
            raise ConfigError(f"{self.guesses_in} 'in' + {self.guesses_out} 'out' guesses exceed the "
                              f"{self.canaries} canaries; make fewer guesses or more canaries")
        if not 0.0 < self.beta < 1.0:
            raise ConfigError(f"beta must be in (0, 1), got {self.beta}")
