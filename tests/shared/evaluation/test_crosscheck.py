"""Cross-check of the hand-written evaluation metrics against independent libraries.

Each metric of :mod:`shared.evaluation` is recomputed on the same simulated cohorts with
scikit-learn (logistic regression, AUROC, R², nearest neighbours, PCA, kernel density,
kernels) or scipy, and must agree within the tolerance stated next to each assertion.

The cohorts: one simulated site of the demo bundle (900 patients) split into members
(``real``, even rows) and ``holdout`` (odd rows), and a ``synth`` cohort from the
marginals baseline fitted on the members without noise; ``leaky`` is ``synth`` with its
first 20 patients replaced by copies of members, so the privacy metrics have something to
find. Every side is below the metrics' ``max_n`` caps, so none subsamples.

SDMetrics is not used: sdmetrics 0.32 requires pandas < 3 and the project runs pandas 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.special import log_expit, log_softmax
from scipy.stats import pearsonr, wasserstein_distance
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
from sklearn.metrics.pairwise import euclidean_distances, rbf_kernel
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.neighbors import KernelDensity, NearestNeighbors
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from shared.baselines import marginals
from shared.bundle import StudyBundle
from shared.evaluation import utility
from shared.evaluation.attacks import domias_auroc, nnaa
from shared.evaluation.classifier import DEFAULT_L2, fit_logistic, stratified_folds
from shared.evaluation.dcr import dcr, dcr_membership_auroc, dcr_percentiles
from shared.evaluation.detection import discriminator_auroc
from shared.evaluation.fidelity import DEFAULT_BANDWIDTHS, cooccurrence_r2, lab_wasserstein, mmd2_unbiased, prevalence_r2
from shared.evaluation.stats import auroc, auroc_null_sd
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium
from shared.trajectories.tensorize import tensorize
from shared.trajectories.tensors import TrajectoryTensors

#: Members replaced by copies in the ``leaky`` cohort.
COPIES = 20
#: Largest gap between our predicted probabilities and scikit-learn's at its tight optimum.
#: Ours stops at L-BFGS-B's default test (a step that lowers the loss by < 2.2e-9), ~2e-8
#: above the optimum: measured 5.5e-4 to 8.9e-4 (two classes) and 2.1e-4 to 7.3e-4 (the
#: diseases) on these cohorts; a penalty off by a factor 2 gives 0.14.
PROBA_TOL = 3e-3
#: Largest excess of our penalised loss over scikit-learn's minimum (absolute; the loss is
#: ~0.1–0.2). Measured 1.6e-8 to 2.8e-8: the stopping rule above, not another objective.
LOSS_GAP_TOL = 1e-6
#: Largest gap between AUROCs from the two fits: probabilities < 1e-3 apart reorder only the
#: pairs that were that close, a few out of 10⁴–10⁵. Measured ≤ 2.5e-4 (one detection fold).
AUROC_TOL = 2e-3


@dataclass(frozen=True)
class Cohorts:
    """The cohorts of the module docstring, and the number of study diseases."""

    real: TrajectoryTensors
    holdout: TrajectoryTensors
    synth: TrajectoryTensors
    leaky: TrajectoryTensors
    n_diseases: int


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One BLAS/OpenMP thread: on two busy cores, two threads make each L-BFGS fit 30× slower."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def cohorts(demo_bundle, coordinator_key) -> Cohorts:
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    n_diseases = len(bundle.diseases)
    (_, site), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=11, min_patients=900,
                                     max_patients=900)
    t = tensorize(site, bundle)[0]
    real, holdout = t.subset(np.arange(0, t.n, 2)), t.subset(np.arange(1, t.n, 2))
    model = marginals.fit([marginals.release_site(real, n_diseases, epsilon=None, delta=1e-5)])
    synth = model.sample(real.disease, seed=0)
    leaky = TrajectoryTensors.concat([real.subset(np.arange(COPIES)), synth.subset(np.arange(COPIES, synth.n))])
    return Cohorts(real=real, holdout=holdout, synth=synth, leaky=leaky, n_diseases=n_diseases)


def vectors(t: TrajectoryTensors) -> np.ndarray:
    """float64 patient vectors (the metrics' own input)."""
    return t.patient_vectors().astype(np.float64)


def sklearn_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> Pipeline:
    """scikit-learn's counterpart of :func:`fit_logistic` with penalty ``l2`` on ``len(y)`` rows.

    Ours minimises mean CE + (λ/2)‖W‖² over K weight columns; scikit-learn minimises
    C·Σ CE + ½‖w‖², i.e. mean CE + ‖w‖²/(2Cn). With K > 2 both penalise all K columns:
    C = 1/(λn). With K = 2 ours has two columns whose optimum is w₁ = −w₀ = v/2 (only v
    enters the loss), so its penalty is (λ/4)‖v‖² on scikit-learn's single v: C = 2/(λn).
    Both standardize with the population SD (a constant column gets scale 1) and leave the
    intercept unpenalised. tol=1e-10 puts scikit-learn at the optimum (its loss agrees with
    tol=1e-8 to 1e-14).
    """
    k = np.unique(y).size
    c = (2.0 if k == 2 else 1.0) / (l2 * y.size)
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, tol=1e-10, max_iter=10_000)).fit(x, y)


def real_vs_synth(a: TrajectoryTensors, b: TrajectoryTensors) -> tuple[np.ndarray, np.ndarray]:
    """x = both cohorts' patient vectors, y = 0 for ``a`` and 1 for ``b`` (the discriminator's task)."""
    return np.concatenate([vectors(a), vectors(b)]), np.r_[np.zeros(a.n, np.int64), np.ones(b.n, np.int64)]


def split(n: int, seed: int) -> np.ndarray:
    """bool [n]: a seeded 75 % training mask."""
    return np.random.default_rng(seed).random(n) < 0.75


# --- AUROC -------------------------------------------------------------------------------


SCORES = {  # a patient-level score for the AUROC check: two with many ties, one continuous
    "event count": lambda t: t.events.sum(axis=(1, 2)),
    "labs observed": lambda t: t.lab_mask.sum(axis=(1, 2)),
    "age": lambda t: t.age,
}


@pytest.mark.parametrize("score", list(SCORES))
def test_auroc_equals_roc_auc_score_with_ties(cohorts, score) -> None:
    # Both are exact rank statistics in float64 (sums of ½s and 1s over n₁n₀ ≈ 2·10⁵
    # pairs): agreement to 1e-12, ties included.
    pos, neg = (np.asarray(SCORES[score](t), np.float64) for t in (cohorts.synth, cohorts.real))
    if score != "age":
        assert np.unique(np.r_[pos, neg]).size < (pos.size + neg.size) / 4  # heavily tied
    expected = roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg])
    assert auroc(pos, neg) == pytest.approx(expected, abs=1e-12)
    assert auroc(neg, pos) == pytest.approx(1.0 - expected, abs=1e-12)


def test_auroc_null_sd_equals_the_spread_of_roc_auc_score_under_relabelling() -> None:
    # The null distribution of a tie-free AUROC depends only on the ranks, so random
    # relabellings of 0 … n−1 give it exactly. 1,000 draws estimate the SD with a relative
    # standard error of 1/√(2·999) ≈ 2.2 %: 9 % is about 4 standard errors (a variance off by
    # a factor 2 would be 41 % off).
    n_pos, n_neg = 100, 300
    rng = np.random.default_rng(0)
    scores = np.arange(n_pos + n_neg, dtype=np.float64)
    labels = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    draws = [roc_auc_score(rng.permutation(labels), scores) for _ in range(1000)]
    assert float(np.std(draws, ddof=1)) == pytest.approx(auroc_null_sd(n_pos, n_neg), rel=0.09)


# --- logistic regression -----------------------------------------------------------------


def test_binary_logistic_matches_sklearn(cohorts) -> None:
    x, y = real_vs_synth(cohorts.real, cohorts.synth)
    train = split(y.size, seed=1)
    ours = fit_logistic(x[train], y[train], l2=DEFAULT_L2)
    theirs = sklearn_logistic(x[train], y[train], DEFAULT_L2)
    scaler, lr = theirs[0], theirs[-1]
    # same standardization: both are the training mean and population SD (constant → 1)
    np.testing.assert_allclose(ours.mean, scaler.mean_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.scale, scaler.scale_, rtol=1e-12)
    # same model: scikit-learn's v = w₁ − w₀, its intercept b₁ − b₀; our w₀ = −w₁ exactly
    np.testing.assert_allclose(ours.weights.sum(axis=1), 0.0, atol=1e-12)
    v, c = ours.weights[:, 1] - ours.weights[:, 0], ours.bias[1] - ours.bias[0]
    z = scaler.transform(x[train])
    # our solution sits on scikit-learn's optimum of the objective the docstring states
    loss = penalised_binary_loss(z, y[train], v, c, DEFAULT_L2)
    best = penalised_binary_loss(z, y[train], lr.coef_[0], lr.intercept_[0], DEFAULT_L2)
    assert best <= loss <= best + LOSS_GAP_TOL
    # held-out predictions
    test = ~train
    p, q = ours.predict_proba(x[test])[:, 1], theirs.predict_proba(x[test])[:, 1]
    assert np.abs(p - q).max() < PROBA_TOL
    assert auroc(p[y[test] == 1], p[y[test] == 0]) == pytest.approx(roc_auc_score(y[test], q), abs=AUROC_TOL)
    # accuracy: at most one held-out row on the other side of ½
    assert abs(accuracy_score(y[test], p > 0.5) - accuracy_score(y[test], theirs.predict(x[test]))) <= 1 / test.sum()
    # the factor 2 of the binary case is real: C = 1/(λn) is a different model
    wrong = make_pipeline(StandardScaler(), LogisticRegression(C=1 / (DEFAULT_L2 * train.sum()), tol=1e-10,
                                                               max_iter=10_000)).fit(x[train], y[train])
    assert np.abs(p - wrong.predict_proba(x[test])[:, 1]).max() > 10 * PROBA_TOL


def penalised_binary_loss(z: np.ndarray, y: np.ndarray, v: np.ndarray, c: float, l2: float) -> float:
    """fit_logistic's objective for two classes, in scikit-learn's parameters: mean CE + (λ/4)‖v‖²."""
    s = z @ v + c
    return float(-np.mean(np.where(y == 1, log_expit(s), log_expit(-s))) + 0.25 * l2 * v @ v)


def test_multinomial_logistic_matches_sklearn(cohorts) -> None:
    # the disease of the members from their patient vectors: up to 8 classes, some with a
    # single training patient
    x, y = vectors(cohorts.real), cohorts.real.disease
    train = split(y.size, seed=2)
    ours = fit_logistic(x[train], y[train], l2=DEFAULT_L2)
    theirs = sklearn_logistic(x[train], y[train], DEFAULT_L2)
    assert np.array_equal(ours.classes, theirs.classes_)
    z = theirs[0].transform(x[train])
    lr = theirs[-1]
    loss = penalised_multinomial_loss(z, y[train], ours.weights, ours.bias, ours.classes, DEFAULT_L2)
    best = penalised_multinomial_loss(z, y[train], lr.coef_.T, lr.intercept_, lr.classes_, DEFAULT_L2)
    assert best <= loss <= best + LOSS_GAP_TOL
    test = ~train
    p, q = ours.predict_proba(x[test]), theirs.predict_proba(x[test])
    assert np.abs(p - q).max() < PROBA_TOL
    assert abs(accuracy_score(y[test], ours.classes[p.argmax(axis=1)])
               - accuracy_score(y[test], theirs.predict(x[test]))) <= 1 / test.sum()


def penalised_multinomial_loss(z: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, classes: np.ndarray,
                               l2: float) -> float:
    """fit_logistic's objective: mean CE + (λ/2)‖W‖² (scikit-learn's softmax is invariant to a
    shift of all columns, and its optimum has the same zero-sum columns as ours)."""
    log_p = log_softmax(z @ w + b, axis=1)
    return float(-log_p[np.arange(y.size), np.searchsorted(classes, y)].mean() + 0.5 * l2 * (w * w).sum())


# --- detection and utility ---------------------------------------------------------------


@pytest.mark.parametrize("other", ["synth", "holdout"])
def test_discriminator_auroc_matches_sklearn_on_the_same_folds(cohorts, other) -> None:
    # "synth" (the members' own noiseless marginals) is ranked well below 0.5, the reversal
    # detection.py describes (measured 0.25); "holdout" is the same population (0.47, the
    # probabilities crowded together: the harder case for rank agreement).
    b = getattr(cohorts, other)
    ours = discriminator_auroc(cohorts.real, b, folds=5, seed=3)
    x, y = real_vs_synth(cohorts.real, b)
    # the same folds: below max_n nothing is subsampled, so the fold deal is the first use
    # of the seeded generator (detection.py, step 2)
    fold = stratified_folds(y, 5, np.random.default_rng([3, 2]))
    n_train = int((fold != 0).sum())
    assert all(int((fold != f).sum()) == n_train for f in range(5))  # one C fits every fold
    model = make_pipeline(StandardScaler(), LogisticRegression(C=2.0 / (DEFAULT_L2 * n_train), tol=1e-10,
                                                               max_iter=10_000))
    p = cross_val_predict(model, x, y, cv=PredefinedSplit(fold), method="predict_proba")[:, 1]
    assert ours.auroc == pytest.approx(roc_auc_score(y, p), abs=AUROC_TOL)
    expected_folds = [roc_auc_score(y[fold == f], p[fold == f]) for f in range(5)]
    np.testing.assert_allclose(ours.fold_aurocs, expected_folds, rtol=0, atol=AUROC_TOL)
    assert (ours.n_real, ours.n_synth) == (cohorts.real.n, b.n)


def test_tstr_and_trtr_match_sklearn_on_the_same_features(cohorts) -> None:
    real, synth, holdout = cohorts.real, cohorts.synth, cohorts.holdout
    results = utility.tstr_trtr(real, synth, holdout)
    names = [r.name for r in results]
    assert names[:2] == ["disease", "drug_adverse_event"] and any(n.startswith("onset:") for n in names)
    n_diseases = int(max(c.disease.max() for c in (real, synth, holdout))) + 1
    for r in results:
        build = task_builder(r.name, real)
        (x_r, y_r), (x_s, y_s), (x_h, y_h) = (build(c, n_diseases) for c in (real, synth, holdout))
        assert (r.n_train_real, r.n_train_synth, r.n_test) == (y_r.size, y_s.size, y_h.size)
        assert r.trtr == pytest.approx(sklearn_task_auroc(x_r, y_r, x_h, y_h), abs=AUROC_TOL), r.name
        assert r.tstr == pytest.approx(sklearn_task_auroc(x_s, y_s, x_h, y_h), abs=AUROC_TOL), r.name


def task_builder(name: str, real: TrajectoryTensors):
    """The utility task builder behind a TaskResult name."""
    if name == "disease":
        return utility.disease_task
    if name == "drug_adverse_event":
        return utility.drug_adverse_event_task
    column = real.binary_codes.index(name.removeprefix("onset:"))
    return lambda t, n: utility.onset_task(t, n, column)


def sklearn_task_auroc(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Macro one-vs-rest roc_auc_score over the test classes; a class the model never saw scores 0."""
    if np.unique(y_train).size < 2:
        return 0.5
    model = sklearn_logistic(x_train, y_train, DEFAULT_L2)
    proba = model.predict_proba(x_test)
    aurocs = []
    for c in np.unique(y_test):
        seen = np.flatnonzero(model.classes_ == c)
        score = proba[:, seen[0]] if seen.size else np.zeros(y_test.size)
        aurocs.append(roc_auc_score(y_test == c, score))
    return float(np.mean(aurocs))


# --- fidelity ----------------------------------------------------------------------------


@pytest.mark.parametrize("other", ["synth", "holdout"])
def test_mmd2_matches_sklearn_kernels(cohorts, other) -> None:
    xs, ys = vectors(cohorts.real), vectors(getattr(cohorts, other))
    ours = mmd2_unbiased(xs, ys, permutations=1, seed=0)
    # median heuristic over the m+n choose 2 distinct pairs (ours counts each pair twice:
    # the same median); both use ‖a‖² + ‖b‖² − 2a·b, whose round-off is ~1e-15 relative
    z = np.concatenate([xs, ys])
    d = euclidean_distances(z)
    median = float(np.median(d[np.triu_indices(z.shape[0], k=1)]))
    assert ours.median_distance == pytest.approx(median, rel=1e-9)
    hs = [f * median for f in DEFAULT_BANDWIDTHS]
    np.testing.assert_allclose(ours.bandwidths_used, hs, rtol=1e-9)
    # Gretton et al. (2012) Eq. (3) term by term, with the sum of scikit-learn's RBF kernels
    kernel = sum(rbf_kernel(z, gamma=1.0 / (2.0 * h * h)) for h in hs)
    m, n = xs.shape[0], ys.shape[0]
    kxx, kyy, kxy = kernel[:m, :m], kernel[m:, m:], kernel[:m, m:]
    expected = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                - 2.0 * kxy.mean())
    # each kernel entry is ≤ 3 and exact to ~1e-15; the averages keep that: 1e-10 absolute
    # (MMD² of the same population is ~1e-3 and may be negative, so no relative tolerance)
    assert ours.mmd2 == pytest.approx(expected, abs=1e-10)
    assert (ours.n_x, ours.n_y) == (m, n)


def test_lab_wasserstein_matches_scipy_and_the_cdf_integral(cohorts) -> None:
    real, synth = cohorts.real, cohorts.synth
    ours = lab_wasserstein(real, synth)
    defined = []
    for j, code in enumerate(real.lab_codes):
        u = real.labs[:, :, j][real.lab_mask[:, :, j] == 1].astype(np.float64)
        v = synth.labs[:, :, j][synth.lab_mask[:, :, j] == 1].astype(np.float64)
        assert (ours.observed_real[code], ours.observed_synth[code]) == (u.size, v.size)
        if not (u.size and v.size):
            assert np.isnan(ours.per_lab[code])
            continue
        # ours calls scipy too, so this checks which values it hands over (observed ones,
        # every window pooled): identical input gives identical output
        assert ours.per_lab[code] == wasserstein_distance(u, v)
        # an independent route: ∫|F_u − F_v| over the pooled support, exact up to round-off
        assert ours.per_lab[code] == pytest.approx(cdf_w1(u, v), rel=1e-9, abs=1e-12)
        defined.append(ours.per_lab[code])
    assert len(defined) >= 2
    assert ours.mean == pytest.approx(np.mean(defined), rel=1e-12)


def cdf_w1(u: np.ndarray, v: np.ndarray) -> float:
    """W1 of two samples: Σ over the gaps of the pooled sorted values of |F_u − F_v| × gap."""
    grid = np.sort(np.concatenate([u, v]))
    f_u = np.searchsorted(np.sort(u), grid[:-1], side="right") / u.size
    f_v = np.searchsorted(np.sort(v), grid[:-1], side="right") / v.size
    return float(np.sum(np.abs(f_u - f_v) * np.diff(grid)))


@pytest.mark.parametrize("other", ["synth", "holdout"])
def test_prevalence_r2_is_r2_score_with_real_as_truth(cohorts, other) -> None:
    real, b = cohorts.real, getattr(cohorts, other)

    def prevalences(t: TrajectoryTensors) -> np.ndarray:
        present = t.events == 1  # the tensors are 0/1
        return np.concatenate([present.max(axis=1).mean(axis=0), present.mean(axis=0).ravel()])

    x, y = prevalences(real), prevalences(b)
    ours = prevalence_r2(real, b)
    assert ours.n_points == x.size == (1 + real.windows) * len(real.binary_codes)
    check_agreement(ours, x, y)


@pytest.mark.parametrize("other", ["synth", "holdout"])
def test_cooccurrence_r2_is_r2_score_with_real_as_truth(cohorts, other) -> None:
    real, b = cohorts.real, getattr(cohorts, other)
    keep = np.flatnonzero(real.events.max(axis=(0, 1)) == 1)

    def rates(t: TrajectoryTensors) -> np.ndarray:
        e = t.events[:, :, keep].astype(np.float64)
        c = np.einsum("pwi,pwj->ij", e, e) / (t.n * t.windows)
        return c[np.triu_indices(keep.size, k=1)]

    x, y = rates(real), rates(b)
    ours = cooccurrence_r2(real, b)
    assert ours.n_points == x.size == keep.size * (keep.size - 1) // 2
    check_agreement(ours, x, y)


def check_agreement(ours, x: np.ndarray, y: np.ndarray) -> None:
    """Ours against r2_score(y_true=real, y_pred=synth) and scipy's Pearson r: closed forms, 1e-12."""
    assert ours.r2_identity == pytest.approx(r2_score(x, y), abs=1e-12)
    # the orientation matters: with synthetic as truth the figure differs
    assert abs(r2_score(y, x) - r2_score(x, y)) > 1e-6
    r = pearsonr(x, y).statistic
    assert ours.corr == pytest.approx(r, abs=1e-12)
    assert ours.r2_corr == pytest.approx(r * r, abs=1e-12)


# --- privacy -----------------------------------------------------------------------------


def exact_nearest(queries: np.ndarray, reference: np.ndarray, k: int = 1) -> np.ndarray:
    """float64 [n, k]: distances to the k nearest reference rows from a ball tree, which
    computes each distance directly (not by ‖a‖² + ‖b‖² − 2a·b), so a copy is exactly 0."""
    return NearestNeighbors(n_neighbors=k, algorithm="ball_tree").fit(reference).kneighbors(queries)[0]


def test_dcr_matches_nearest_neighbors(cohorts) -> None:
    s, m, h = vectors(cohorts.leaky), vectors(cohorts.real), vectors(cohorts.holdout)
    ours = dcr(s, m)
    theirs = exact_nearest(s, m)[:, 0]
    # ours picks the neighbour from the expanded form, then recomputes its distance
    # directly: the same value up to the last bits (distances are ~1–10)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    assert (ours[:COPIES] == 0).all() and (theirs[:COPIES] == 0).all() and (ours[COPIES:] > 0).all()
    # the membership attack: AUROC of −DCR, members positive
    d_m, d_h = exact_nearest(m, s)[:, 0], exact_nearest(h, s)[:, 0]
    expected = roc_auc_score(np.r_[np.ones(d_m.size), np.zeros(d_h.size)], -np.r_[d_m, d_h])
    assert dcr_membership_auroc(s, m, h) == pytest.approx(expected, abs=1e-12)
    got = dcr_percentiles(s, m, h, percentiles=(5.0, 50.0))
    for q in (5.0, 50.0):
        assert got[f"synth_to_members_p{q:g}"] == pytest.approx(np.percentile(theirs, q), rel=1e-12, abs=1e-12)
        assert got[f"holdout_to_members_p{q:g}"] == pytest.approx(np.percentile(exact_nearest(h, m)[:, 0], q),
                                                                  rel=1e-12)


def test_nnaa_matches_nearest_neighbors(cohorts) -> None:
    s, m, h = vectors(cohorts.leaky), vectors(cohorts.real), vectors(cohorts.holdout)
    ours = nnaa(s, m, h)
    assert ours.n == s.shape[0] == m.shape[0] == h.shape[0]  # equal sizes: nothing subsampled
    d_ss = exact_nearest(s, s, k=2)[:, 1]

    def aa(target: np.ndarray) -> tuple[float, int]:
        """Yale et al.'s AA from exact distances, and the number of exact ties it compares."""
        d_ts, d_st = exact_nearest(target, s)[:, 0], exact_nearest(s, target)[:, 0]
        d_tt = exact_nearest(target, target, k=2)[:, 1]
        ties = int((d_ts == d_tt).sum() + (d_st == d_ss).sum())
        return 0.5 * (float(np.mean(d_ts > d_tt)) + float(np.mean(d_st > d_ss))), ties

    # Shares of strict inequalities over n rows. The copies make exact ties (a member whose
    # nearest other member was copied is as far from the copy as from that member); ours
    # takes distances from ‖a‖² + ‖b‖² − 2a·b, which may break such a tie by round-off, so
    # each tie may move its share by 1/n: tolerance ties/(2n). Measured: equal exactly.
    n = s.shape[0]
    for target, got in ((m, ours.aa_members), (h, ours.aa_holdout)):
        exact, ties = aa(target)
        assert got == pytest.approx(exact, abs=ties / (2 * n) + 1e-15)
    assert ours.privacy_loss == pytest.approx(ours.aa_holdout - ours.aa_members, abs=1e-15)


def test_domias_matches_sklearn_pca_and_kernel_density(cohorts) -> None:
    s, m, h = vectors(cohorts.leaky), vectors(cohorts.real), vectors(cohorts.holdout)
    ref, evaluation = h[: h.shape[0] // 2], h[h.shape[0] // 2:]
    ours = domias_auroc(s, m, evaluation, reference=ref, components=10)
    assert ours.components == 10 and (ours.n_reference, ours.n_holdout_eval) == (ref.shape[0], evaluation.shape[0])
    # whitened PCA of S ∪ R (scikit-learn divides by √(explained variance), n − 1 as ours)
    pca = PCA(n_components=10, whiten=True, svd_solver="full").fit(np.concatenate([s, ref]))
    z_s, z_r = pca.transform(s), pca.transform(ref)

    def log_ratio(x: np.ndarray) -> np.ndarray:
        # Gaussian KDEs with Scott's n^(−1/(q+4)); scikit-learn's normalising constant
        # (2π)^(−q/2) cancels in the ratio, ours leaves it out on both sides
        kde = [KernelDensity(bandwidth=len(c) ** (-1.0 / 14)).fit(c) for c in (z_s, z_r)]
        z = pca.transform(x)
        return kde[0].score_samples(z) - kde[1].score_samples(z)

    expected = roc_auc_score(np.r_[np.ones(m.shape[0]), np.zeros(evaluation.shape[0])],
                             np.r_[log_ratio(m), log_ratio(evaluation)])
    # the scores agree to ~1e-12 and no two are that close: the AUROCs are equal to 1e-12
    assert ours.auroc == pytest.approx(expected, abs=1e-12)
