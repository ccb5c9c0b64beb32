"""Small statistics shared by the fidelity and privacy metrics: AUROC, pairwise distances,
input checks. Pure functions of numpy arrays; no state."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from shared.trajectories.tensors import TrajectoryTensors

#: Largest block of a query × reference distance matrix held at once (bytes, float64).
#: 64 MiB keeps DCR on 10⁵ × 10⁵ patients within a laptop's memory.
BLOCK_BYTES = 64 * 2**20


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Area under the ROC curve from the Mann–Whitney rank statistic, ties counted as ½.

    AUROC = P(s⁺ > s⁻) + ½·P(s⁺ = s⁻) for a random positive and a random negative
    (Hanley & McNeil 1982, "The meaning and use of the area under a ROC curve",
    Radiology 143:29–36; the U statistic is Mann & Whitney 1947).

    ==================  ==========================================================
    variable            symbol
    ==================  ==========================================================
    ``n_pos, n_neg``    n₁, n₀: numbers of positives and negatives
    ``rank_sum``        R₁: sum of the positives' mid-ranks in the pooled sample
    ``u``               U₁ = R₁ − n₁(n₁ + 1)/2
    ==================  ==========================================================

    1. Rank the pooled scores, giving tied scores their mean rank (mid-ranks).
    2. U₁ = R₁ − n₁(n₁ + 1)/2 counts pairs with s⁺ > s⁻, plus ½ per tie.
    3. AUROC = U₁ / (n₁ n₀).

    Parameters
    ----------
    positive_scores
        float [n₁]: scores of the positive class (higher = more likely positive).
    negative_scores
        float [n₀]: scores of the negative class.

    Returns
    -------
    float
        In [0, 1]: 1 = every positive outscores every negative, 0.5 = no separation,
        0 = reversed.

    Raises
    ------
    ValueError
        A class is empty, an input is not 1-D, or a score is not finite.
    """
    pos = _finite_1d(positive_scores, "positive_scores")
    neg = _finite_1d(negative_scores, "negative_scores")
    n_pos, n_neg = pos.size, neg.size
    # 1. mid-ranks of the pooled sample
    ranks = rankdata(np.concatenate([pos, neg]), method="average")
    # 2. Mann–Whitney U of the positives
    rank_sum = float(ranks[:n_pos].sum())
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    # 3. normalise by the number of (positive, negative) pairs
    return u / (n_pos * n_neg)


def auroc_null_sd(n_positive: int, n_negative: int) -> float:
    """Standard deviation of :func:`auroc` when the two classes come from one distribution.

    Under "no separation" the Mann–Whitney U has variance n₁n₀(n₁ + n₀ + 1)/12 (no ties;
    Mann & Whitney 1947), so the AUROC's is (n₁ + n₀ + 1)/(12 n₁ n₀) (Hanley & McNeil 1982).
    A membership-attack AUROC more than about 2 of these above 0.5 is a signal; within that it
    is what chance gives at these sizes.

    Raises
    ------
    ValueError
        A class has no members.
    """
    if n_positive < 1 or n_negative < 1:
        raise ValueError(f"both classes need a member, got {n_positive} and {n_negative}")
    return float(np.sqrt((n_positive + n_negative + 1) / (12.0 * n_positive * n_negative)))


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 [n, m]: ‖aᵢ − bⱼ‖² via ‖a‖² + ‖b‖² − 2a·b, clipped at 0 against round-off."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d2 = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :]
    d2 -= 2.0 * (a @ b.T)
    np.maximum(d2, 0.0, out=d2)
    return d2


def nearest_distances(queries: np.ndarray, reference: np.ndarray, *, block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """float64 [n]: Euclidean distance from each query row to its nearest reference row.

    Works through the queries in blocks so that one block × reference distance matrix
    stays under ``block_bytes``. The distance to the chosen neighbour is then recomputed
    directly, so an exact copy reads 0 rather than the ~1e-5 that the expanded form
    ‖a‖² + ‖b‖² − 2a·b leaves after round-off.
    """
    q = np.asarray(queries, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    rows = max(1, block_bytes // (8 * max(1, r.shape[0])))
    out = np.empty(q.shape[0], dtype=np.float64)
    for start in range(0, q.shape[0], rows):
        block = q[start:start + rows]
        nearest = squared_distances(block, r).argmin(axis=1)
        out[start:start + rows] = np.sqrt(((block - r[nearest]) ** 2).sum(axis=1))
    return out


def as_vectors(x: np.ndarray | TrajectoryTensors, name: str) -> np.ndarray:
    """float64 [N, D] patient vectors from a cohort or a matrix; rejects empty or non-finite input."""
    if isinstance(x, TrajectoryTensors):
        x = x.patient_vectors()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [patients, features], got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: no patients (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def check_same_width(**arrays: np.ndarray) -> None:
    """Raise ValueError unless every named [N, D] array has the same D."""
    widths = {name: a.shape[1] for name, a in arrays.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"patient vectors differ in width: {widths}")


def check_same_columns(real: TrajectoryTensors, other: TrajectoryTensors, name: str) -> None:
    """Raise ValueError unless ``other`` has ``real``'s grid and column labels."""
    for attr in ("binary_codes", "lab_codes", "window_days", "windows_before"):
        if getattr(real, attr) != getattr(other, attr):
            raise ValueError(f"{name}.{attr} differs from real.{attr}; cohorts must share the bundle's "
                             "vocabulary and time grid")
    if real.windows != other.windows:
        raise ValueError(f"{name} has {other.windows} windows, real has {real.windows}")


def _finite_1d(x: np.ndarray, name: str) -> np.ndarray:
    """float64 1-D, non-empty and finite, or ValueError."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr
