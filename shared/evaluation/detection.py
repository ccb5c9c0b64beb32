"""Detection: can a classifier tell synthetic patients from real ones?

A real-vs-synthetic discriminator scored by cross-validated AUROC, the "detection" or
"propensity" test of synthetic-data benchmarks (synthcity's ``detection_*`` metrics;
Snoke et al. 2018, "General and specific utility measures for synthetic data", JRSS A
181(3):663–688, pMSE with a logistic model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.evaluation.classifier import DEFAULT_L2, fit_logistic, stratified_folds
from shared.evaluation.stats import as_vectors, auroc, check_same_width
from shared.trajectories.tensors import TrajectoryTensors

#: Patients per side kept for the discriminator (it fits ``folds`` models on ~2·max_n rows).
DEFAULT_DETECTION_MAX_N = 1000


@dataclass(frozen=True)
class DiscriminatorResult:
    """Outcome of :func:`discriminator_auroc`.

    Attributes
    ----------
    auroc
        AUROC of the out-of-fold probabilities, all folds pooled; 0.5 = indistinguishable.
    fold_aurocs
        AUROC within each test fold, for the spread.
    n_real, n_synth, folds
        Patients per side after subsampling, and the number of folds.
    """

    auroc: float
    fold_aurocs: tuple[float, ...]
    n_real: int
    n_synth: int
    folds: int


def discriminator_auroc(
    real: np.ndarray | TrajectoryTensors,
    synth: np.ndarray | TrajectoryTensors,
    *,
    folds: int = 5,
    seed: int = 0,
    max_n: int = DEFAULT_DETECTION_MAX_N,
    l2: float = DEFAULT_L2,
) -> DiscriminatorResult:
    """Cross-validated AUROC of a logistic real-vs-synthetic classifier on patient vectors.

    1. Subsample each side to at most ``max_n`` patients (seeded).
    2. Label synthetic 1 and real 0; split into ``folds`` stratified folds (seeded).
    3. For each fold: fit :func:`~shared.evaluation.classifier.fit_logistic` on the other
       folds, predict P(synthetic) on the held-out fold.
    4. AUROC of the pooled out-of-fold P(synthetic), synthetic positive.

    A generator that matches the real distribution gives ≈ 0.5 (the classifier cannot
    beat chance on unseen rows); 1 means every synthetic patient is recognisable. Values
    well below 0.5 happen when synthetic rows copy real ones: a copy in the training folds
    pulls its twin in the test fold towards the wrong label. They also happen when the
    synthetic data reproduces these very real patients' feature means (a generator fitted to
    them without noise, such as exact marginals): the real rows left in the training folds
    then differ from the synthetic mean opposite to the held-out ones, and the classifier
    learns the reverse direction. Both are signs of fitting the members, not the population.

    Parameters
    ----------
    real, synth
        float [m, D] and [n, D] patient vectors, or cohorts (their ``patient_vectors()``).
    folds
        Number of folds (≥ 2); each side needs at least that many patients.
    seed
        Seeds subsampling and fold assignment.
    max_n
        At most this many patients per side (≥ ``folds``).
    l2
        Weight penalty of the logistic model.

    Returns
    -------
    DiscriminatorResult

    Raises
    ------
    ValueError
        Widths differ, a side is smaller than ``folds``, a value is not finite, or an
        option is out of range.
    """
    xr, xs = as_vectors(real, "real"), as_vectors(synth, "synth")
    check_same_width(real=xr, synth=xs)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer ≥ 2, got {folds!r}")
    if max_n < folds:
        raise ValueError(f"max_n must be ≥ folds ({folds}), got {max_n!r}")
    if min(xr.shape[0], xs.shape[0]) < folds:
        raise ValueError(f"{folds}-fold discrimination needs ≥ {folds} patients per side, "
                         f"got {xr.shape[0]} real and {xs.shape[0]} synthetic")
    rng = np.random.default_rng([seed, 2])
    # 1. subsample
    if xr.shape[0] > max_n:
        xr = xr[np.sort(rng.choice(xr.shape[0], size=max_n, replace=False))]
    if xs.shape[0] > max_n:
        xs = xs[np.sort(rng.choice(xs.shape[0], size=max_n, replace=False))]
    # 2. labels and folds
    x = np.concatenate([xr, xs])
    y = np.r_[np.zeros(xr.shape[0], np.int64), np.ones(xs.shape[0], np.int64)]
    fold = stratified_folds(y, folds, rng)
    # 3. out-of-fold P(synthetic)
    p = np.empty(y.size)
    per_fold = []
    for f in range(folds):
        test = fold == f
        model = fit_logistic(x[~test], y[~test], l2=l2)
        p[test] = model.scores(x[test], np.array([1]))[:, 0]
        per_fold.append(auroc(p[test & (y == 1)], p[test & (y == 0)]))
    # 4. pooled AUROC
    return DiscriminatorResult(auroc=auroc(p[y == 1], p[y == 0]), fold_aurocs=tuple(per_fold),
                               n_real=int(xr.shape[0]), n_synth=int(xs.shape[0]), folds=folds)
