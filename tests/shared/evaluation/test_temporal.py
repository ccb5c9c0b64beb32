"""Consecutive-window transition probabilities and their agreement; per-window vectors."""

from __future__ import annotations

import numpy as np
import pytest

from shared.evaluation.fidelity import mmd2_unbiased, prevalence, window_vectors
from shared.evaluation.temporal import transition_probabilities, transition_r2
from tests.shared.evaluation.cohorts import random_cohort, replace


def test_transition_probabilities_known_values() -> None:
    t = random_cohort(2, windows=3, features=2)
    events = np.array([[[1, 0], [1, 1], [0, 1]],     # patient 0
                       [[1, 0], [0, 0], [1, 0]]], np.float32)  # patient 1
    p, n = transition_probabilities(replace(t, events=events))
    # windows with a successor: feature 0 occurs 3 times (p0 w0, p0 w1, p1 w0), feature 1 once (p0 w1)
    np.testing.assert_array_equal(n, [3, 1])
    # after feature 0: next window has 0 in 1 of 3 (p0 w0→w1), 1 in 2 of 3 (p0 w0→w1, p0 w1→w2)
    np.testing.assert_allclose(p, [[1 / 3, 2 / 3], [0.0, 1.0]])


def _persistent(n: int, seed: int):
    """Features that start at a random window and then stay: strong persistence."""
    t = random_cohort(n, seed=seed, windows=6, features=8)
    rng = np.random.default_rng(seed)
    start = rng.integers(0, 8, size=(n, 8))  # ≥ 6 means never
    events = np.arange(6)[None, :, None] >= start[:, None, :]
    return replace(t, events=events.astype(np.float32))


def test_transition_r2_sees_what_prevalence_cannot() -> None:
    real = _persistent(400, seed=1)
    # shuffle patients independently within each window: every per-window prevalence is kept
    rng = np.random.default_rng(0)
    shuffled = np.stack([real.events[rng.permutation(real.n), k] for k in range(real.windows)], axis=1)
    synth = replace(real, events=shuffled)
    np.testing.assert_allclose(prevalence(real)[1:], prevalence(synth)[1:])  # per-window rows
    assert transition_r2(real, real).r2_identity == 1.0
    assert transition_r2(real, _persistent(400, seed=2)).r2_identity > 0.9
    assert transition_r2(real, synth).r2_identity < 0.5


def test_transition_r2_rows_need_min_count() -> None:
    real = _persistent(100, seed=1)
    few = transition_r2(real, real, min_count=10**6)
    assert few.n_points == 0
    assert transition_r2(real, real).n_points == 8 * 8


def test_transition_r2_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="min_count"):
        transition_r2(random_cohort(10), random_cohort(10), min_count=0)
    with pytest.raises(ValueError, match="2 windows"):
        transition_probabilities(random_cohort(10, windows=1))
    with pytest.raises(ValueError, match="binary_codes"):
        transition_r2(random_cohort(10, features=4), random_cohort(10, features=5))


def test_window_vectors_layout() -> None:
    t = random_cohort(3, windows=2, features=2, labs=1)
    v = window_vectors(t)
    assert v.shape == (6, 4) and v.dtype == np.float32
    np.testing.assert_array_equal(v[3], np.r_[t.events[1, 1], t.labs[1, 1], t.lab_mask[1, 1]])


def test_window_mmd_detects_a_lab_shift_but_not_resampling() -> None:
    real = window_vectors(random_cohort(150, seed=1))
    same = mmd2_unbiased(real, window_vectors(random_cohort(150, seed=2)), max_n=400, permutations=100)
    shifted = mmd2_unbiased(real, window_vectors(random_cohort(150, seed=3, lab_shift=0.4)), max_n=400,
                            permutations=100)
    assert same.p_value > 0.05 and shifted.p_value < 0.05
    assert (same.n_x, same.n_y) == (400, 400)
