"""DCR, the DCR membership-inference AUROC, exact copies and DCR percentiles."""

from __future__ import annotations

import numpy as np
import pytest

from shared.evaluation.dcr import dcr, dcr_membership_auroc, dcr_percentiles, exact_copy_share
from tests.shared.evaluation.cohorts import random_cohort


def test_dcr_known_values_and_blocking() -> None:
    reference = np.array([[0.0, 0.0], [3.0, 4.0]])
    queries = np.array([[0.0, 0.0], [3.0, 0.0], [6.0, 8.0]])
    np.testing.assert_allclose(dcr(queries, reference), [0.0, 3.0, 5.0])
    np.testing.assert_allclose(dcr(queries, reference, block_bytes=16), [0.0, 3.0, 5.0])


def test_dcr_rejects_width_mismatch() -> None:
    with pytest.raises(ValueError, match="width"):
        dcr(np.zeros((2, 3)), np.zeros((2, 4)))


def _population(seed: int, n: int = 300) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 10))


def test_membership_auroc_is_one_for_copies_of_members() -> None:
    members, holdout = _population(1), _population(2)
    assert dcr_membership_auroc(members.copy(), members, holdout) == 1.0


def test_membership_auroc_is_half_for_independent_synthetic_data() -> None:
    members, holdout, synth = _population(1), _population(2), _population(3)
    assert dcr_membership_auroc(synth, members, holdout) == pytest.approx(0.5, abs=0.07)


def test_membership_auroc_accepts_cohorts() -> None:
    members, holdout = random_cohort(80, seed=1), random_cohort(80, seed=2)
    assert dcr_membership_auroc(members, members, holdout) == 1.0
    assert dcr_membership_auroc(random_cohort(80, seed=3), members, holdout) == pytest.approx(0.5, abs=0.15)


def test_exact_copy_share() -> None:
    members = _population(1, n=50)
    noise = _population(2, n=40)
    assert exact_copy_share(members[::-1].copy(), members) == 1.0
    assert exact_copy_share(noise, members) == 0.0
    half = np.concatenate([members[:20], noise[:20]])
    assert exact_copy_share(half, members) == 0.5
    # round-off that stays within a 1e-6 rounding cell still counts as a copy, and −0.0 equals 0.0
    coarse = np.round(members, 3)
    assert exact_copy_share(coarse + 1e-9, coarse) == 1.0
    assert exact_copy_share(-np.zeros((1, 10)), np.zeros((1, 10))) == 1.0


def test_dcr_percentiles_compare_against_the_holdout_baseline() -> None:
    members, holdout = _population(1), _population(2)
    copies = dcr_percentiles(members.copy(), members, holdout)
    assert set(copies) == {"synth_to_members_p5", "synth_to_members_p50",
                           "holdout_to_members_p5", "holdout_to_members_p50"}
    assert copies["synth_to_members_p5"] == copies["synth_to_members_p50"] == 0.0
    assert copies["holdout_to_members_p5"] > 0.0
    fresh = dcr_percentiles(_population(3), members, holdout)
    assert fresh["synth_to_members_p50"] == pytest.approx(fresh["holdout_to_members_p50"], rel=0.1)
    assert set(dcr_percentiles(members, members, percentiles=(2.5,))) == {"synth_to_members_p2.5"}
    with pytest.raises(ValueError, match="percentiles"):
        dcr_percentiles(members, members, percentiles=(101,))
