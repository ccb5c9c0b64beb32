"""AUROC by mid-ranks, pairwise and nearest distances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.evaluation.stats import auroc, auroc_null_sd, nearest_distances, squared_distances


def brute_force_auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize(("pos", "neg", "expected"), [
    ([2.0, 3.0], [0.0, 1.0], 1.0),            # perfect separation
    ([0.0, 1.0], [2.0, 3.0], 0.0),            # reversed
    ([1.0, 1.0, 1.0], [1.0, 1.0], 0.5),       # all tied
    ([1.0, 2.0], [1.0, 0.0], 0.875),          # (1,1) tie ½ + three wins, over 4 pairs
])
def test_auroc_known_values(pos, neg, expected) -> None:
    assert auroc(np.array(pos), np.array(neg)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_brute_force_with_ties(seed) -> None:
    rng = np.random.default_rng(seed)
    pos, neg = rng.integers(0, 6, size=17).astype(float), rng.integers(0, 6, size=23).astype(float)
    assert auroc(pos, neg) == pytest.approx(brute_force_auroc(pos, neg), abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=12), st.lists(st.integers(-5, 5), min_size=1, max_size=12))
def test_auroc_property_brute_force_and_symmetry(pos, neg) -> None:
    p, n = np.array(pos, float), np.array(neg, float)
    assert auroc(p, n) == pytest.approx(brute_force_auroc(p, n), abs=1e-12)
    assert auroc(p, n) + auroc(n, p) == pytest.approx(1.0, abs=1e-12)


def test_auroc_null_sd_matches_the_spread_of_auroc_between_samples_of_one_distribution() -> None:
    rng = np.random.default_rng(0)
    draws = [auroc(rng.normal(size=30), rng.normal(size=10)) for _ in range(4000)]
    assert float(np.std(draws)) == pytest.approx(auroc_null_sd(30, 10), rel=0.05)
    assert auroc_null_sd(30, 10) == pytest.approx(np.sqrt(41 / 3600))
    with pytest.raises(ValueError, match="both classes"):
        auroc_null_sd(0, 10)


def test_auroc_rejects_empty_and_nan() -> None:
    with pytest.raises(ValueError, match="positive_scores"):
        auroc(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([1.0]), np.array([np.nan]))


def test_squared_distances_match_direct() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    direct = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(squared_distances(a, b), direct, rtol=1e-10, atol=1e-12)


def test_nearest_distances_blocked_equals_unblocked_and_copies_read_zero() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(40, 6)).astype(np.float32)
    queries = np.concatenate([ref[:5], rng.normal(size=(30, 6)).astype(np.float32)])
    full = nearest_distances(queries, ref)
    tiny_blocks = nearest_distances(queries, ref, block_bytes=8 * 40 * 3)  # 3 query rows per block
    np.testing.assert_array_equal(full, tiny_blocks)
    assert (full[:5] == 0.0).all()
    direct = np.sqrt(((queries[:, None, :].astype(float) - ref[None].astype(float)) ** 2).sum(2)).min(1)
    np.testing.assert_allclose(full, direct, rtol=1e-12)
