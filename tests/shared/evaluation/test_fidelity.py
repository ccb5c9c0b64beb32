"""MMD²_u and its permutation test, prevalence and co-occurrence agreement, lab W1."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from shared.evaluation.fidelity import (
    _agreement,
    cooccurrence_r2,
    lab_wasserstein,
    mmd2_unbiased,
    prevalence,
    prevalence_r2,
)
from tests.shared.evaluation.cohorts import random_cohort, replace


def naive_mmd2(x: np.ndarray, y: np.ndarray, factors=(0.5, 1.0, 2.0)) -> tuple[float, float]:
    """Gretton et al. 2012, Lemma 6, Eq. (3), by double loops; returns (MMD²_u, median distance)."""
    z = np.concatenate([x, y])
    median = statistics.median(math.dist(z[i], z[j]) for i, j in itertools.combinations(range(len(z)), 2))
    hs = [f * median for f in factors]

    def k(a, b):
        return sum(math.exp(-math.dist(a, b) ** 2 / (2 * h * h)) for h in hs)

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy, median


@pytest.mark.parametrize(("m", "n", "shift"), [(7, 9, 0.0), (6, 6, 0.7), (3, 11, 2.0)])
def test_mmd2_matches_naive_double_loop(m, n, shift) -> None:
    rng = np.random.default_rng(m * 100 + n)
    x, y = rng.normal(size=(m, 3)), rng.normal(shift, 1.0, size=(n, 3))
    expected, median = naive_mmd2(x, y)
    result = mmd2_unbiased(x, y, permutations=20)
    assert result.mmd2 == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert result.median_distance == pytest.approx(median, rel=1e-9)
    assert result.bandwidths_used == pytest.approx((0.5 * median, median, 2 * median), rel=1e-9)


def test_mmd2_same_distribution_is_near_zero_and_not_significant() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 5)), rng.normal(size=(120, 5))
    result = mmd2_unbiased(x, y)
    assert abs(result.mmd2) < 0.005
    assert result.p_value > 0.2


def test_mmd2_shifted_distribution_is_large_and_significant() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 5)), rng.normal(1.0, 1.0, size=(120, 5))
    result = mmd2_unbiased(x, y)
    assert result.mmd2 > 0.2
    assert result.p_value == pytest.approx(1 / 201)  # no permutation reaches the observed value


def test_mmd2_on_cohorts_detects_a_shift_but_not_resampling() -> None:
    real = random_cohort(200, seed=1)
    same = mmd2_unbiased(real, random_cohort(200, seed=2))
    shifted = mmd2_unbiased(real, random_cohort(200, seed=3, rate_scale=1.5, lab_shift=0.3))
    assert same.p_value > 0.05
    assert shifted.p_value < 0.05
    assert shifted.mmd2 > 20 * abs(same.mmd2)


def test_permutation_p_value_is_deterministic_and_in_range() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 4)), rng.normal(0.2, 1.0, size=(25, 4))
    a = mmd2_unbiased(x, y, permutations=99, seed=7)
    b = mmd2_unbiased(x, y, permutations=99, seed=7)
    assert a == b
    assert 0.0 < a.p_value <= 1.0
    assert (a.p_value * 100) == pytest.approx(round(a.p_value * 100))  # (1 + count) / (1 + 99)
    assert mmd2_unbiased(x, y, permutations=99, seed=8).mmd2 == a.mmd2  # seed moves only the p-value


def test_subsampling_caps_each_side_deterministically() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(80, 3)), rng.normal(size=(60, 3))
    a = mmd2_unbiased(x, y, max_n=50, permutations=10, seed=3)
    assert (a.n_x, a.n_y) == (50, 50)
    assert a == mmd2_unbiased(x, y, max_n=50, permutations=10, seed=3)
    assert mmd2_unbiased(x[:40], y[:40], max_n=50, permutations=10).n_x == 40


def test_mmd2_handles_mostly_duplicate_points() -> None:
    x = np.zeros((10, 3))
    y = np.zeros((10, 3))
    y[0] = 1.0
    result = mmd2_unbiased(x, y, permutations=10)
    assert result.median_distance == 0.0
    assert all(h > 0 for h in result.bandwidths_used)
    assert math.isfinite(result.mmd2)
    assert mmd2_unbiased(x, x, permutations=10).mmd2 == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"bandwidths": (0.0, 1.0)}, "bandwidths"),
    ({"bandwidths": ()}, "bandwidths"),
    ({"permutations": 0}, "permutations"),
    ({"max_n": 1}, "max_n"),
])
def test_mmd2_rejects_bad_options(kwargs, match) -> None:
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match=match):
        mmd2_unbiased(x, x + 1, **kwargs)


def test_mmd2_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="width"):
        mmd2_unbiased(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_unbiased(np.zeros((1, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mmd2_unbiased(np.full((3, 2), np.nan), np.zeros((5, 2)))


def test_prevalence_known_values() -> None:
    t = random_cohort(2, windows=2, features=2)
    events = np.array([[[1, 0], [1, 0]],      # patient 0: feature 0 in both windows
                       [[0, 0], [0, 1]]], np.float32)  # patient 1: feature 1 in window 1
    p = prevalence(replace(t, events=events))
    np.testing.assert_array_equal(p, [[0.5, 0.5],    # any window
                                      [0.5, 0.0],    # window 0
                                      [0.5, 0.5]])   # window 1


def test_prevalence_identity_r2_is_one_for_identical_cohorts() -> None:
    t = random_cohort(100, seed=4)
    agreement = prevalence_r2(t, t)
    assert agreement.r2_identity == 1.0
    assert agreement.corr == pytest.approx(1.0)
    assert agreement.n_points == (1 + t.windows) * len(t.binary_codes)
    assert prevalence_r2(t, random_cohort(100, seed=5)).r2_identity < 1.0


def test_identity_r2_differs_from_squared_correlation() -> None:
    # y = 2x: perfectly correlated, but far from y = x: 1 − Σx² / Σ(x − x̄)² = 1 − 0.30/0.05 = −5
    x = np.array([0.1, 0.2, 0.3, 0.4])
    a = _agreement(x, 2 * x)
    assert (a.corr, a.r2_corr) == (pytest.approx(1.0), pytest.approx(1.0))
    assert a.r2_identity == pytest.approx(-5.0)
    assert math.isnan(_agreement(np.ones(3), x[:3]).r2_identity)  # constant real: undefined


def _shuffle_features(t, seed: int):
    """Permute each feature column over patient-windows: same rates, no co-occurrence."""
    rng = np.random.default_rng(seed)
    flat = t.events.reshape(-1, t.events.shape[2]).copy()
    for j in range(flat.shape[1]):
        flat[:, j] = rng.permutation(flat[:, j])
    return replace(t, events=flat.reshape(t.events.shape))


def test_cooccurrence_r2_high_for_copy_lower_for_shuffled_features() -> None:
    real = random_cohort(300, seed=1, correlated=True)
    copy = cooccurrence_r2(real, real)
    resampled = cooccurrence_r2(real, random_cohort(300, seed=2, correlated=True))
    shuffled = cooccurrence_r2(real, _shuffle_features(real, seed=0))
    assert copy.r2_identity == 1.0
    assert resampled.r2_identity > 0.95
    assert shuffled.r2_identity < 0.7
    assert shuffled.corr < resampled.corr


def test_cooccurrence_r2_keeps_only_features_seen_in_real() -> None:
    real = random_cohort(50, seed=1, features=5)
    events = real.events.copy()
    events[..., 2] = 0.0
    real = replace(real, events=events)
    assert cooccurrence_r2(real, random_cohort(50, seed=2, features=5)).n_points == 4 * 3 // 2


def test_lab_w1_zero_for_identical_and_equal_to_a_shift() -> None:
    real = random_cohort(100, seed=1)
    same = lab_wasserstein(real, real)
    assert all(w == 0.0 for w in same.per_lab.values())
    shifted = replace(real, labs=(real.labs + 0.3 * real.lab_mask).astype(np.float32))
    result = lab_wasserstein(real, shifted)
    assert set(result.per_lab) == set(real.lab_codes)
    for w in result.per_lab.values():
        assert w == pytest.approx(0.3, abs=1e-6)
    assert result.mean == pytest.approx(0.3, abs=1e-6)
    assert result.observed_real == result.observed_synth


def test_lab_w1_unobserved_lab_is_nan_and_left_out_of_the_mean() -> None:
    real = random_cohort(60, seed=1)
    mask = real.lab_mask.copy()
    mask[..., 0] = 0.0
    synth = replace(real, lab_mask=mask, labs=(real.labs * mask + 0.2 * mask).astype(np.float32))
    result = lab_wasserstein(real, synth)
    assert math.isnan(result.per_lab[real.lab_codes[0]])
    assert result.observed_synth[real.lab_codes[0]] == 0
    assert result.mean == pytest.approx(0.2, abs=1e-6)


def test_cohorts_with_different_columns_are_rejected() -> None:
    a = random_cohort(10, features=4)
    b = random_cohort(10, features=5)
    with pytest.raises(ValueError, match="binary_codes"):
        prevalence_r2(a, b)
    with pytest.raises(ValueError, match="windows"):
        lab_wasserstein(a, random_cohort(10, features=4, windows=3))
