"""Disproportionality statistics of (drug, reaction) pairs over reports: 2×2 tables, PRR,
Yates χ², ROR and the shrunk IC, and the thresholds a signal must pass (see
:mod:`kg.sources.faers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import gammaincinv

SIGNAL_COLUMNS = ("drug", "reaction", "a", "b", "c", "d", "prr", "chi2", "ror", "ror_low",
                  "ror_high", "ic", "ic025")


@dataclass(frozen=True, slots=True)
class SignalThresholds:
    """Which (drug, reaction) pairs are kept: all three must hold (Evans et al. 2001)."""

    prr: float = 2.0  # minimum PRR; 2 is Evans' criterion
    chi2: float = 4.0  # minimum Yates χ² (1 df); 4 ≈ p < 0.05
    n: int = 3  # minimum reports with both drug and reaction (cell a)

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be an integer ≥ 1, got {self.n!r}")
        for name in ("prr", "chi2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number ≥ 0, got {value!r}")


def contingency_statistics(a: npt.ArrayLike, b: npt.ArrayLike, c: npt.ArrayLike,
                           d: npt.ArrayLike) -> pd.DataFrame:
    """PRR, Yates χ², ROR with its 95 % CI, and the shrunk IC with IC025 for 2×2 tables.

    ============  =================================================================
    symbol        meaning (counts of reports)
    ============  =================================================================
    a             drug and reaction        b   drug, not reaction
    c             reaction, not drug       d   neither;  N = a + b + c + d
    E             expected a = (a + b)(a + c) / N
    ============  =================================================================

    1. PRR = [a / (a + b)] / [c / (c + d)]  (Evans, Waller & Davis 2001, PDS 10:483).
    2. χ² = N (max(|ad − bc| − N/2, 0))² / [(a + b)(c + d)(a + c)(b + d)], Yates-corrected,
       1 df; the ``max`` stops the correction from overshooting when |ad − bc| < N/2.
    3. ROR = ad / bc, 95 % CI exp(ln ROR ± 1.96 √(1/a + 1/b + 1/c + 1/d)) (Woolf 1955;
       van Puijenbroek et al. 2002, PDS 11:3).
    4. IC = log2((a + 0.5) / (E + 0.5)); IC025 = log2 of the 2.5 % quantile of
       Gamma(shape a + 0.5, rate E + 0.5), the posterior of the observed-to-expected ratio
       under the +0.5 shrinkage (Norén, Hopstadius & Bate 2013, SMMR 22:57; the shrinkage
       of Norén et al. 2006, Stat Med 25:3740).

    Zero cells never raise: c = 0 gives PRR = inf; b·c = 0 gives ROR = inf (NaN when a·d
    = 0 too) and a NaN CI, since Woolf's standard error is infinite; a zero margin gives
    NaN χ². NaN never passes a threshold.

    Parameters
    ----------
    a, b, c, d
        Non-negative counts, scalars or equal-length arrays.

    Returns
    -------
    pandas.DataFrame
        Float columns ``prr, chi2, ror, ror_low, ror_high, ic, ic025``.
    """
    a, b, c, d = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (a, b, c, d))
    n = a + b + c + d
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        prr = (a / (a + b)) / (c / (c + d))
        margins = (a + b) * (c + d) * (a + c) * (b + d)
        excess = np.maximum(np.abs(a * d - b * c) - n / 2.0, 0.0)
        chi2 = np.where(margins > 0, n * excess**2 / np.where(margins > 0, margins, 1.0), np.nan)
        ror = (a * d) / (b * c)
        any_zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
        half_width = 1.96 * np.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
        ror_low = np.where(any_zero, np.nan, np.exp(np.log(ror) - half_width))
        ror_high = np.where(any_zero, np.nan, np.exp(np.log(ror) + half_width))
        expected = np.where(n > 0, (a + b) * (a + c) / np.where(n > 0, n, 1.0), np.nan)
        ic = np.log2((a + 0.5) / (expected + 0.5))
        # the Gamma(a + 0.5, rate E + 0.5) quantile, as scipy.stats.gamma.ppf computes it (the regularised
        # incomplete gamma inverse × scale), without loading scipy.stats: half a second of every `kg build`
        ic025 = np.log2(gammaincinv(a + 0.5, 0.025) * (1.0 / (expected + 0.5)))
    return pd.DataFrame({"prr": prr, "chi2": chi2, "ror": ror, "ror_low": ror_low,
                         "ror_high": ror_high, "ic": ic, "ic025": ic025})


def disproportionality(report_drugs: pd.DataFrame, report_reactions: pd.DataFrame, *,
                       n_reports: int, min_a: int = 1) -> pd.DataFrame:
    """2×2 tables and statistics for every (drug, reaction) pair seen together ``min_a``+ times.

    Parameters
    ----------
    report_drugs
        Columns ``report`` and ``drug``; repeats count once.
    report_reactions
        Columns ``report`` and ``reaction``; repeats count once.
    n_reports
        N, the number of reports in the database (at least every report named above).
    min_a
        Pairs with fewer reports in cell a are not computed.

    Returns
    -------
    pandas.DataFrame
        :data:`SIGNAL_COLUMNS`, sorted by drug then reaction.
    """
    rd = report_drugs[["report", "drug"]].drop_duplicates()
    rr = report_reactions[["report", "reaction"]].drop_duplicates()
    seen = pd.concat([rd["report"], rr["report"]]).nunique()
    if n_reports < seen:
        raise ValueError(f"n_reports={n_reports} is below the {seen} distinct reports given")
    if rd.empty or rr.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("drug", "reaction") else
                                          np.int64 if c in "abcd" else np.float64)
                             for c in SIGNAL_COLUMNS})
    # Integer codes keep the report × drug × reaction join small on a full FAERS build.
    drug_code, drugs = pd.factorize(rd["drug"], sort=True)
    reaction_code, reactions = pd.factorize(rr["reaction"], sort=True)
    pairs = pd.DataFrame({"report": rd["report"].to_numpy(), "i": drug_code}).merge(
        pd.DataFrame({"report": rr["report"].to_numpy(), "j": reaction_code}), on="report")
    key, a = np.unique(pairs["i"].to_numpy(np.int64) * len(reactions) + pairs["j"].to_numpy(np.int64),
                       return_counts=True)
    key, a = key[a >= min_a], a[a >= min_a]
    i, j = np.divmod(key, len(reactions))
    b = np.bincount(drug_code, minlength=len(drugs))[i] - a
    c = np.bincount(reaction_code, minlength=len(reactions))[j] - a
    cells = pd.DataFrame({"drug": np.asarray(drugs, dtype=object)[i],
                          "reaction": np.asarray(reactions, dtype=object)[j],
                          "a": a, "b": b, "c": c, "d": n_reports - a - b - c})
    cells = cells.astype({k: np.int64 for k in "abcd"})
    stats = contingency_statistics(cells["a"], cells["b"], cells["c"], cells["d"])
    return pd.concat([cells, stats], axis=1)[list(SIGNAL_COLUMNS)]
