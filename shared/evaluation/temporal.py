"""Temporal fidelity: does the synthetic cohort move from one window to the next as the
real one does?

Consecutive-window transition probabilities, compared like prevalences (HALO reports the
agreement of "consecutive visit" code probabilities: Theodorou et al. 2023, "Synthesize
high-dimensional longitudinal electronic health records via hierarchical autoregressive
language model", Nature Communications 14:5305, Fig. 2).
"""

from __future__ import annotations

import numpy as np

from shared.evaluation.fidelity import Agreement, _agreement
from shared.evaluation.stats import check_same_columns
from shared.trajectories.tensors import TrajectoryTensors

#: A real conditional P(j at t+1 | i at t) is kept only when feature i occurs in at least this
#: many real patient-windows (t < T − 1): below it the real estimate itself is too noisy to
#: be a target.
DEFAULT_MIN_COUNT = 5


def transition_probabilities(t: TrajectoryTensors, features: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive-window conditional probabilities of one cohort.

    ==============  ===============================================================
    variable        symbol
    ==============  ===============================================================
    ``now``         e_{p,t,i} for t = 0 … T − 2 (patient-windows that have a successor)
    ``after``       e_{p,t+1,j}
    ``counts``      n_i = Σ_{p,t<T−1} e_{p,t,i}
    ``joint``       n_ij = Σ_{p,t<T−1} e_{p,t,i} · e_{p,t+1,j}
    result          P̂(j at t+1 | i at t) = n_ij / n_i, 0 where n_i = 0
    ==============  ===============================================================

    Parameters
    ----------
    t
        A cohort with T ≥ 2 windows.
    features
        Column indices to keep (default all).

    Returns
    -------
    (np.ndarray, np.ndarray)
        float64 [F, F] P̂ (row i: the feature now, column j: the feature in the next window;
        the diagonal is persistence) and float64 [F] n_i.

    Raises
    ------
    ValueError
        The cohort has fewer than two windows.
    """
    if t.windows < 2:
        raise ValueError(f"transitions need at least 2 windows, the cohort has {t.windows}")
    events = t.events > 0.5
    if features is not None:
        events = events[:, :, features]
    width = events.shape[2]
    now = events[:, :-1].reshape(-1, width).astype(np.float64)
    after = events[:, 1:].reshape(-1, width).astype(np.float64)
    counts = now.sum(axis=0)
    joint = now.T @ after
    cond = np.divide(joint, counts[:, None], out=np.zeros_like(joint), where=counts[:, None] > 0)
    return cond, counts


def transition_r2(real: TrajectoryTensors, synth: TrajectoryTensors, *,
                  min_count: int = DEFAULT_MIN_COUNT) -> Agreement:
    """Agreement of consecutive-window transition probabilities, real against synthetic.

    1. Rows i: features that occur in at least ``min_count`` real patient-windows with a
       successor window. Columns j: features seen at least once in the real data (as in
       :func:`~shared.evaluation.fidelity.cooccurrence_r2`).
    2. P̂ᴿ(j | i) and P̂ˢ(j | i) from :func:`transition_probabilities`; a synthetic cohort
       that never generates i gets P̂ˢ(· | i) = 0, an error the score counts.
    3. Compare all |rows| × |columns| points (diagonal included: persistence of a
       chronic feature is a transition too).

    Parameters
    ----------
    real, synth
        Cohorts with the same columns and grid (T ≥ 2).
    min_count
        See step 1 (≥ 1).

    Returns
    -------
    Agreement
        ``corr``, ``r2_corr`` and ``r2_identity`` (1 − SSE/SST around y = x) over the
        points; NaN statistics with fewer than two points.

    Raises
    ------
    ValueError
        The cohorts differ in columns or grid, T < 2, or ``min_count`` < 1.
    """
    check_same_columns(real, synth, "synth")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an integer ≥ 1, got {min_count!r}")
    seen = np.flatnonzero((real.events > 0.5).any(axis=(0, 1)))
    p_real, n_real = transition_probabilities(real, seen)
    p_synth, _ = transition_probabilities(synth, seen)
    rows = n_real >= min_count
    return _agreement(p_real[rows].ravel(), p_synth[rows].ravel())
