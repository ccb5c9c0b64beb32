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
#: the event-time bins' edges, days from the index date: a year wide near it, wider further out, to
#: 20 years on each side. Each bin carries the same noise, so few wide bins far out show a thin
#: tail of events spread over years that 40 bins of 180 days could not (kg.growth tests a tail
#: as the sum of its bins: noise sd × √bins). Measured on the independent simulator (3 sites,
#: seeds 0-2, σ 4, 15 noise draws each): the grown grid (a median 16 windows of 180 d) held a
#: median 70-89 % of each site's events, where 40 bins of 180 days (8 windows: no growth) held
#: 51-69 %; on our own simulator the grid stays at the study's 8 windows (95-98 %).
DEFAULT_TIME_EDGES: tuple[int, ...] = (-7300, -3650, -1825, -730, -365, 0, 365, 730, 1460, 2555, 3650, 5475, 7300)


@dataclass(frozen=True)
class SurveyRequest:
    """What the coordinator asks (the survey's run config, :mod:`shared.protocol` ``survey.*``)."""

    # m: codes one patient contributes at most, of the candidates outside the vocabulary. Measured on the
    # independent simulator (3 and 5 sites): a patient has a median 6 of them (90th centile 8, most 12);
    # the share a σ-4 survey can reach is within a point for m of 6 to 8 and 1-3 points lower at 24
    max_codes: int = 8
    time_weight: float = 1.0  # w: weight of the time histogram against the codes
    time_edges: tuple[int, ...] = DEFAULT_TIME_EDGES  # days from the index date where a time bin ends

    def __post_init__(self) -> None:
        if self.max_codes < 1:
            raise ConfigError(f"survey max-codes must be ≥ 1, got {self.max_codes}")
        if not (math.isfinite(self.time_weight) and self.time_weight > 0):
            raise ConfigError(f"survey time-weight must be > 0, got {self.time_weight}")
        edges = self.time_edges
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or not edges[0] < 0 < edges[-1]:
            raise ConfigError(f"survey time-edges must be at least 2 increasing days from before the index date "
                              f"(< 0) to after it (> 0), got {','.join(map(str, edges))}")

    @property
    def bins(self) -> int:
        """B = edges + 1: the first bin holds everything before the first edge, the last everything from the last."""
        return len(self.time_edges) + 1

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
                   time_edges=tuple(int(e) for e in record[P.SURVEY_TIME_EDGES]))

    def to_record(self) -> dict:
        return {P.SURVEY_MAX_CODES: self.max_codes, P.SURVEY_TIME_WEIGHT: self.time_weight,
                P.SURVEY_TIME_EDGES: list(self.time_edges)}


def parse_time_edges(text: str) -> tuple[int, ...]:
    """``-3650,-1825,...``: the time edges of a run config or command line (checked by :class:`SurveyRequest`)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"survey time-edges must be comma-separated whole days, got {text!r}") from None


def time_edges_text(edges: tuple[int, ...]) -> str:
    return ",".join(str(e) for e in edges)


__all__ = ["DEFAULT_SURVEY_NOISE", "DEFAULT_TIME_EDGES", "SURVEY_FORMAT", "SurveyRequest", "parse_time_edges",
           "time_edges_text"]
