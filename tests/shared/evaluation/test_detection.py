"""The cross-validated real-vs-synthetic discriminator."""

from __future__ import annotations

import numpy as np
import pytest

from shared.evaluation.detection import discriminator_auroc
from tests.shared.evaluation.cohorts import random_cohort, study_cohort


def test_same_distribution_is_indistinguishable() -> None:
    result = discriminator_auroc(study_cohort(300, seed=1), study_cohort(300, seed=2))
    assert result.auroc == pytest.approx(0.5, abs=0.1)
    assert len(result.fold_aurocs) == 5 and (result.n_real, result.n_synth) == (300, 300)


def test_shifted_distribution_is_detected() -> None:
    result = discriminator_auroc(random_cohort(200, seed=1), random_cohort(200, seed=2, rate_scale=1.5))
    assert result.auroc > 0.75
    assert min(result.fold_aurocs) > 0.6


def test_copies_push_the_auroc_below_chance() -> None:
    real = random_cohort(200, seed=1)
    assert discriminator_auroc(real, real).auroc < 0.35


def test_deterministic_and_capped() -> None:
    x, y = random_cohort(80, seed=1), random_cohort(60, seed=2)
    a = discriminator_auroc(x, y, seed=3, max_n=50)
    assert a == discriminator_auroc(x, y, seed=3, max_n=50)
    assert (a.n_real, a.n_synth) == (50, 50)


@pytest.mark.parametrize(("kwargs", "match"), [({"folds": 1}, "folds"), ({"max_n": 3}, "max_n")])
def test_rejects_bad_options(kwargs, match) -> None:
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match=match):
        discriminator_auroc(x, x + 1, **kwargs)


def test_rejects_too_small_or_mismatched_sides() -> None:
    with pytest.raises(ValueError, match="patients per side"):
        discriminator_auroc(np.zeros((4, 2)), np.ones((10, 2)))
    with pytest.raises(ValueError, match="width"):
        discriminator_auroc(np.zeros((10, 2)), np.ones((10, 3)))
