"""Fidelity: how close the synthetic cohort's distribution is to the real one.

Four views, coarse to fine: a kernel two-sample statistic on whole patient vectors and
on single windows (MMD², :func:`window_vectors`), first-order agreement of binary
feature prevalences, second-order agreement of within-window co-occurrence rates, and a
per-lab 1-D Wasserstein distance on observed standardized values. Transitions over time
are in :mod:`shared.evaluation.temporal`, the discriminator in
:mod:`shared.evaluation.detection`. All functions are pure; cohorts must share the
bundle's columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import wasserstein_distance

from shared.evaluation.stats import as_vectors, check_same_columns, check_same_width, squared_distances
from shared.trajectories.tensors import TrajectoryTensors

#: RBF widths as multiples of the median pairwise distance (DESIGN.md, "Evaluation").
DEFAULT_BANDWIDTHS: tuple[float, ...] = (0.5, 1.0, 2.0)
#: Patients per side kept for MMD; the kernel matrix is (2·max_n)² float64 ≈ 128 MB.
DEFAULT_MAX_N = 2000
#: Patient-windows per side kept for the per-window MMD: a cohort has T times more windows
#: than patients, and 1,000 a side keeps that test under a second.
DEFAULT_WINDOW_MAX_N = 1000
#: Permutation labels scored per matrix product in the MMD test; [2·max_n, 64] float64 = 2 MiB.
_PERMUTATION_CHUNK = 64
#: Patient-windows per block when accumulating co-occurrence counts (bounds the float64 copy).
_COOC_BLOCK_ROWS = 16_384


@dataclass(frozen=True)
class MMDResult:
    """Outcome of :func:`mmd2_unbiased`.

    Attributes
    ----------
    mmd2
        MMD²_u with the summed kernel; ≈ 0 for equal distributions, can dip below 0.
    p_value
        Permutation p-value in (0, 1]: (1 + #{permuted ≥ observed}) / (1 + permutations).
    median_distance
        Median pairwise Euclidean distance of the pooled (subsampled) sample.
    bandwidths_used
        The RBF widths h actually used, one per bandwidth factor. When the median is 0
        (over half the pairs are duplicates) the factors apply to the median of the
        nonzero distances instead.
    n_x, n_y
        Patients per side after subsampling to ``max_n``.
    """

    mmd2: float
    p_value: float
    median_distance: float
    bandwidths_used: tuple[float, ...]
    n_x: int
    n_y: int


@dataclass(frozen=True)
class Agreement:
    """Agreement of paired statistics, real (x) against synthetic (y).

    Attributes
    ----------
    corr
        Pearson r between the real and synthetic values.
    r2_corr
        r², the R² of the best *fitted* line; blind to a systematic scale or offset.
    r2_identity
        1 − SSE/SST around the identity line y = x, SST taken around the real mean; 1 only
        when the values are equal, negative when worse than predicting the real mean.
    n_points
        Number of paired values compared. Undefined statistics (fewer than two points, or
        a constant side) are NaN.
    """

    corr: float
    r2_corr: float
    r2_identity: float
    n_points: int


@dataclass(frozen=True)
class LabWasserstein:
    """Per-lab W1 between observed standardized values (see :func:`lab_wasserstein`).

    Attributes
    ----------
    per_lab
        lab code → W1 in reference-range half-widths; NaN when a side has no observations.
    mean
        Mean W1 over the labs observed on both sides; NaN when there are none.
    observed_real, observed_synth
        lab code → number of observed values on each side.
    """

    per_lab: dict[str, float]
    mean: float
    observed_real: dict[str, int]
    observed_synth: dict[str, int]


def mmd2_unbiased(
    x: np.ndarray | TrajectoryTensors,
    y: np.ndarray | TrajectoryTensors,
    *,
    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
    permutations: int = 200,
    seed: int = 0,
    max_n: int = DEFAULT_MAX_N,
) -> MMDResult:
    """Unbiased squared maximum mean discrepancy with a permutation test.

    MMD²_u is Gretton et al. (2012), "A Kernel Two-Sample Test", JMLR 13:723–773,
    Lemma 6, Eq. (3), with the sum of RBF kernels k = Σ_h exp(−‖a − b‖²/(2h²)) (a sum of
    characteristic kernels is a kernel; cf. Gretton et al. 2012, NeurIPS, "Optimal kernel
    choice for large-scale two-sample tests"). The widths are ``bandwidths`` × the median
    pairwise distance of the pooled sample (the median heuristic of the JMLR paper's
    experiments). The p-value counts the observed labelling as one permutation, so it is never
    0 (Phipson & Smyth 2010, "Permutation p-values should never be zero", SAGMB 9(1)).

    =====================  =======================================================
    variable               symbol
    =====================  =======================================================
    ``m, n``               m, n: sizes of X and Y
    ``z``                  Z = X ∪ Y, the pooled sample (X first)
    ``d2``                 ‖zᵢ − zⱼ‖²
    ``hs``                 h: RBF widths
    ``k``                  K̃: pooled kernel matrix with its diagonal set to 0
    ``a``                  a ∈ {0,1}^{m+n}: 1 where zᵢ is labelled X
    ``s_xx, s_yy, s_xy``   Σ_{i≠j∈X} k, Σ_{i≠j∈Y} k, Σ_{i∈X, j∈Y} k
    =====================  =======================================================

    MMD²_u = s_xx / (m(m−1)) + s_yy / (n(n−1)) − 2 s_xy / (mn), and with r = K̃1 and
    c = 1ᵀK̃1: s_xx = aᵀK̃a, s_yy = c − 2aᵀr + aᵀK̃a, s_xy = aᵀr − aᵀK̃a. So any
    relabelling costs one matrix–vector product with the kernel matrix built once.

    Parameters
    ----------
    x, y
        float [m, D] and [n, D] patient vectors, or cohorts (their ``patient_vectors()``).
    bandwidths
        Positive factors applied to the median distance; one RBF kernel per factor.
    permutations
        Number of random relabellings for the p-value (≥ 1).
    seed
        Seeds the subsampling and the permutations; equal seeds give equal results.
    max_n
        At most this many patients per side (≥ 2). A larger side is subsampled without
        replacement by a generator seeded with ``seed``, so the result is deterministic.
        Memory is about 3 × (m + n)² × 8 bytes: ≈ 400 MB at the default.

    Returns
    -------
    MMDResult

    Raises
    ------
    ValueError
        Widths differ, a side has fewer than 2 patients, values are not finite, or an
        option is out of range.
    """
    xs, ys = as_vectors(x, "x"), as_vectors(y, "y")
    check_same_width(x=xs, y=ys)
    factors = tuple(float(b) for b in bandwidths)
    if not factors or not all(np.isfinite(b) and b > 0 for b in factors):
        raise ValueError(f"bandwidths must be a non-empty sequence of positive factors, got {bandwidths!r}")
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise ValueError(f"permutations must be an integer ≥ 1, got {permutations!r}")
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 2:
        raise ValueError(f"max_n must be an integer ≥ 2, got {max_n!r}")
    if xs.shape[0] < 2 or ys.shape[0] < 2:
        raise ValueError(f"MMD²_u needs at least 2 patients per side, got {xs.shape[0]} and {ys.shape[0]}")
    sub_rng, perm_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    xs, ys = _subsample(xs, max_n, sub_rng), _subsample(ys, max_n, sub_rng)
    m, n = xs.shape[0], ys.shape[0]
    size = m + n

    # 1. pooled squared distances
    z = np.concatenate([xs, ys])
    d2 = squared_distances(z, z)
    np.fill_diagonal(d2, 0.0)
    # 2. median heuristic over the off-diagonal entries (each pair twice: same median)
    dist = np.sqrt(d2.ravel()[1:].reshape(size - 1, size + 1)[:, :-1])
    median = float(np.median(dist))
    base = median
    if base == 0.0:
        # Over half the pairs are duplicates: widths from the distinct pairs; if every
        # point is equal the kernel is constant, MMD² = 0, and any width will do.
        positive = dist[dist > 0]
        base = float(np.median(positive)) if positive.size else 1.0
    del dist
    hs = tuple(f * base for f in factors)
    # 3. summed kernel matrix, built once; diagonal 0 because the U-statistic skips i = j
    k = np.zeros_like(d2)
    tmp = np.empty_like(d2)
    for h in hs:
        np.multiply(d2, -1.0 / (2.0 * h * h), out=tmp)
        np.exp(tmp, out=tmp)
        k += tmp
    del tmp, d2
    np.fill_diagonal(k, 0.0)
    r = k.sum(axis=1)
    c = float(r.sum())

    # 4. statistic for a batch of labellings, one column of a each: the observed one first,
    #    then the permutations in chunks
    def statistic(a: np.ndarray) -> np.ndarray:
        s_xx = (a * (k @ a)).sum(axis=0)
        a_r = a.T @ r
        s_yy = c - 2.0 * a_r + s_xx
        s_xy = a_r - s_xx
        return s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2.0 * s_xy / (m * n)

    observed_labels = np.zeros((size, 1))
    observed_labels[:m] = 1.0
    observed = float(statistic(observed_labels)[0])
    exceed = 0
    # relative tolerance so that relabellings equal to the observed one up to round-off
    # count as ≥ (as scipy.stats.permutation_test does)
    threshold = observed - 100.0 * np.finfo(np.float64).eps * abs(observed)
    for start in range(0, permutations, _PERMUTATION_CHUNK):
        cols = min(_PERMUTATION_CHUNK, permutations - start)
        labels = np.zeros((size, cols))
        for j in range(cols):
            labels[perm_rng.permutation(size)[:m], j] = 1.0
        exceed += int((statistic(labels) >= threshold).sum())
    # 5. permutation p-value, the observed labelling counted once
    p_value = (1 + exceed) / (1 + permutations)
    return MMDResult(mmd2=observed, p_value=float(p_value), median_distance=median,
                     bandwidths_used=hs, n_x=m, n_y=n)


def window_vectors(t: TrajectoryTensors) -> np.ndarray:
    """float32 [N·T, B + 2L]: every patient-window as one vector, for MMD on windows.

    Layout per row: events (B) | labs (L, 0 where unobserved) | lab_mask (L), rows ordered
    patient-major (row p·T + k is window k of patient p). The window's position and the
    static fields are left out on purpose: this compares what a single window holds,
    whatever its time; order over time is what :func:`~shared.evaluation.temporal.transition_r2`
    and the patient-vector MMD check.
    """
    width = t.events.shape[2] + 2 * t.labs.shape[2]
    return np.concatenate([t.events, t.labs, t.lab_mask], axis=2).reshape(-1, width).astype(np.float32)


def prevalence(t: TrajectoryTensors) -> np.ndarray:
    """Share of patients with each binary feature, over the whole grid and per window.

    Parameters
    ----------
    t
        A cohort; events [N, T, B].

    Returns
    -------
    np.ndarray
        float64 [1 + T, B]. Row 0: share of patients with the feature in any window.
        Row 1 + k: share of patients with the feature in window k. Columns follow
        ``t.binary_codes``.
    """
    events = t.events > 0.5
    return np.vstack([events.any(axis=1).mean(axis=0)[None, :], events.mean(axis=0)]).astype(np.float64)


def prevalence_r2(real: TrajectoryTensors, synth: TrajectoryTensors) -> Agreement:
    """Agreement of feature prevalences: the dimension-wise probability plot of medGAN.

    Choi et al. (2017), "Generating Multi-label Discrete Patient Records using Generative
    Adversarial Networks", MLHC, compare per-feature Bernoulli success rates of real and
    synthetic records. Here the points are every entry of :func:`prevalence`: each
    feature in any window and in each window, (1 + T)·B points, all features included —
    a feature absent from the real data but present in the synthetic data is an error.

    Parameters
    ----------
    real, synth
        Cohorts with the same columns and grid.

    Returns
    -------
    Agreement
        ``corr`` (Pearson r), ``r2_corr`` (r²), ``r2_identity`` (1 − SSE/SST around y = x).

    Raises
    ------
    ValueError
        The cohorts differ in columns or grid.
    """
    check_same_columns(real, synth, "synth")
    return _agreement(prevalence(real).ravel(), prevalence(synth).ravel())


def cooccurrence(t: TrajectoryTensors, features: np.ndarray | None = None) -> np.ndarray:
    """float64 [F, F]: share of patient-windows with both features i and j (diagonal: one).

    ``features`` picks columns (default all). Counts accumulate in blocks of patient-windows.
    """
    events = t.events.reshape(-1, t.events.shape[2])
    if features is not None:
        events = events[:, features]
    counts = np.zeros((events.shape[1], events.shape[1]))
    for start in range(0, events.shape[0], _COOC_BLOCK_ROWS):
        block = (events[start:start + _COOC_BLOCK_ROWS] > 0.5).astype(np.float64)
        counts += block.T @ block
    return counts / max(1, events.shape[0])


def cooccurrence_r2(real: TrajectoryTensors, synth: TrajectoryTensors) -> Agreement:
    """Agreement of pairwise co-occurrence rates within a window: the second-order
    analogue of :func:`prevalence_r2`.

    ==============  ==================================================================
    variable        symbol
    ==============  ==================================================================
    ``keep``        F: features with prevalence > 0 in the real patient-windows
    ``c_real``      Cᴿᵢⱼ = (1/NT) Σ_{p,w} eᴿ_{p,w,i} eᴿ_{p,w,j}
    ``c_synth``     Cˢᵢⱼ, the same on the synthetic cohort (its own N)
    ==============  ==================================================================

    1. Keep the features seen at least once in the real data; a pair of features the real
       data never shows would add (0, ·) points that say nothing about dependence.
    2. Build C on both cohorts over the kept features.
    3. Compare the strict upper triangles (i < j), |F|(|F| − 1)/2 points.

    Parameters
    ----------
    real, synth
        Cohorts with the same columns and grid.

    Returns
    -------
    Agreement
        As in :func:`prevalence_r2`; NaN statistics when fewer than two pairs remain.

    Raises
    ------
    ValueError
        The cohorts differ in columns or grid.
    """
    check_same_columns(real, synth, "synth")
    # 1. features present in real
    keep = np.flatnonzero((real.events > 0.5).any(axis=(0, 1)))
    # 2. co-occurrence rates
    c_real, c_synth = cooccurrence(real, keep), cooccurrence(synth, keep)
    # 3. strict upper triangle
    iu = np.triu_indices(keep.size, k=1)
    return _agreement(c_real[iu], c_synth[iu])


def lab_wasserstein(real: TrajectoryTensors, synth: TrajectoryTensors) -> LabWasserstein:
    """1-D Wasserstein-1 distance per lab between observed standardized values.

    W1(P, Q) = ∫ |F_P(v) − F_Q(v)| dv, computed by ``scipy.stats.wasserstein_distance``
    on the pooled values of all windows where ``lab_mask`` is 1 (see Ramdas, García
    Trillos & Cuturi 2017, "On Wasserstein two-sample testing", Entropy 19(2):47). Values
    are in reference-range half-widths, so W1 = 0.1 is a shift of 5 % of the range.

    Parameters
    ----------
    real, synth
        Cohorts with the same columns and grid; labs [N, T, L], lab_mask [N, T, L].

    Returns
    -------
    LabWasserstein
        Per-lab W1, their mean over labs observed on both sides, and the counts.

    Raises
    ------
    ValueError
        The cohorts differ in columns or grid.
    """
    check_same_columns(real, synth, "synth")
    per_lab: dict[str, float] = {}
    n_real: dict[str, int] = {}
    n_synth: dict[str, int] = {}
    for j, code in enumerate(real.lab_codes):
        u = real.labs[..., j][real.lab_mask[..., j] > 0.5].astype(np.float64)
        v = synth.labs[..., j][synth.lab_mask[..., j] > 0.5].astype(np.float64)
        n_real[code], n_synth[code] = int(u.size), int(v.size)
        per_lab[code] = float(wasserstein_distance(u, v)) if u.size and v.size else float("nan")
    defined = [w for w in per_lab.values() if np.isfinite(w)]
    mean = float(np.mean(defined)) if defined else float("nan")
    return LabWasserstein(per_lab=per_lab, mean=mean, observed_real=n_real, observed_synth=n_synth)


def _agreement(real_values: np.ndarray, synth_values: np.ndarray) -> Agreement:
    """Pearson r, r² and identity-line R² of paired values (NaN where undefined)."""
    x, y = np.asarray(real_values, np.float64), np.asarray(synth_values, np.float64)
    nan = float("nan")
    if x.size < 2:
        return Agreement(corr=nan, r2_corr=nan, r2_identity=nan, n_points=int(x.size))
    sst = float(((x - x.mean()) ** 2).sum())
    sse = float(((y - x) ** 2).sum())
    r2_identity = 1.0 - sse / sst if sst > 0 else nan
    corr = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else nan
    return Agreement(corr=corr, r2_corr=corr * corr, r2_identity=r2_identity, n_points=int(x.size))


def _subsample(v: np.ndarray, max_n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_n`` rows of ``v`` without replacement, in their original order."""
    if v.shape[0] <= max_n:
        return v
    return v[np.sort(rng.choice(v.shape[0], size=max_n, replace=False))]
