"""The vocabulary survey's request and its pooled release: what the coordinator asks every site
(``survey.*`` of the run config) and what ``RUN/survey.json`` holds; the site's side is
:mod:`client.vocabulary_survey`, the pooling :mod:`server.survey`, the use :mod:`kg.growth`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared import protocol as P
from shared.errors import ConfigError

SURVEY_FORMAT = "raregraph-survey"
#: σ of a site's survey release relative to its L2 sensitivity: alone ε ≈ 1.0 at δ = 1e-5 (RDP); a node
#: config opts in with it (its key's default is 0: the site declines), as `raregraph survey` and the demo do
DEFAULT_SURVEY_NOISE = 4.0


@dataclass(frozen=True)
class SurveyRequest:
    """What the coordinator asks (the survey's run config, :mod:`shared.protocol` ``survey.*``)."""

    # m: codes one patient contributes at most, of the candidates outside the vocabulary. Measured on the
    # independent simulator (3 and 5 sites): a patient has a median 6 of them (90th centile 8, most 12);
    # the share a σ-4 survey can reach is within a point for m of 6 to 8 and 1-3 points lower at 24
    max_codes: int = 8
    time_weight: float = 1.0  # w: weight of the time histogram against the codes
    bin_days: int = 180  # days per time bin
    bins_before: int = 20  # bins before the index date (20 × 180 d ≈ 10 years)
    bins_after: int = 20  # bins from the index date on

    def __post_init__(self) -> None:
        if self.max_codes < 1 or self.bin_days < 1 or self.bins_before < 1 or self.bins_after < 1:
            raise ConfigError("survey max-codes, bin-days, bins-before and bins-after must be ≥ 1")
        if not (math.isfinite(self.time_weight) and self.time_weight > 0):
            raise ConfigError(f"survey time-weight must be > 0, got {self.time_weight}")

    @property
    def bins(self) -> int:
        return self.bins_before + self.bins_after

    @property
    def sensitivity(self) -> float:
        """S: the L2 norm bound of one patient's row (c_i / √m, w·h_i)."""
        return math.sqrt(1.0 + self.time_weight ** 2)

    def code_sd(self, sigma: float) -> float:
        """Noise sd of one released code count (patients)."""
        return sigma * self.sensitivity * math.sqrt(self.max_codes)

    def time_sd(self, sigma: float) -> float:
        """Noise sd of one released time bin (patients)."""
        return sigma * self.sensitivity / self.time_weight

    @classmethod
    def from_record(cls, record) -> SurveyRequest:
        return cls(max_codes=int(record[P.SURVEY_MAX_CODES]), time_weight=float(record[P.SURVEY_TIME_WEIGHT]),
                   bin_days=int(record[P.SURVEY_BIN_DAYS]), bins_before=int(record[P.SURVEY_BINS_BEFORE]),
                   bins_after=int(record[P.SURVEY_BINS_AFTER]))

    def to_record(self) -> dict:
        return {P.SURVEY_MAX_CODES: self.max_codes, P.SURVEY_TIME_WEIGHT: self.time_weight,
                P.SURVEY_BIN_DAYS: self.bin_days, P.SURVEY_BINS_BEFORE: self.bins_before,
                P.SURVEY_BINS_AFTER: self.bins_after}


__all__ = ["DEFAULT_SURVEY_NOISE", "SURVEY_FORMAT", "SurveyRequest"]
