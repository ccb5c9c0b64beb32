"""DOMIAS, attribute disclosure and NNAA: no leak for fresh data, a leak for copies."""

from __future__ import annotations

import numpy as np
import pytest

from shared.evaluation.attacks import attribute_disclosure, domias_auroc, nnaa
from tests.shared.evaluation.cohorts import random_cohort


def _cohort(seed: int, n: int = 300):
    return random_cohort(n, seed=seed, windows=4, features=20)


def test_domias_flags_copies_of_members() -> None:
    members, holdout = _cohort(1), _cohort(2)
    result = domias_auroc(members, members, holdout)
    assert result.auroc > 0.9
    assert (result.n_members, result.n_reference, result.n_holdout_eval) == (300, 150, 150)
    assert result.components == 10


def test_domias_is_near_chance_for_fresh_data() -> None:
    members, holdout = _cohort(1), _cohort(2)
    assert domias_auroc(_cohort(3), members, holdout).auroc == pytest.approx(0.5, abs=0.1)


def test_domias_with_a_reference_of_its_own_scores_the_whole_holdout() -> None:
    members, holdout, reference = _cohort(1), _cohort(2, 40), _cohort(4, 200)
    leak = domias_auroc(members, members, holdout, reference=reference)
    assert leak.auroc > 0.9 and (leak.n_reference, leak.n_holdout_eval) == (200, 40)
    assert domias_auroc(_cohort(3), members, holdout, reference=reference).auroc == pytest.approx(0.5, abs=0.1)
    # a 3-patient holdout is enough once the reference is separate
    assert domias_auroc(_cohort(3), members, holdout.subset(np.arange(3)), reference=reference).n_holdout_eval == 3
    with pytest.raises(ValueError, match="≥ 2 reference"):
        domias_auroc(_cohort(3), members, holdout, reference=reference.subset(np.arange(1)))


def test_domias_is_deterministic_and_checks_its_input() -> None:
    members, holdout, synth = _cohort(1, 60), _cohort(2, 60), _cohort(3, 60)
    assert domias_auroc(synth, members, holdout, seed=4) == domias_auroc(synth, members, holdout, seed=4)
    assert domias_auroc(synth, members, holdout, max_n=40).n_members == 40
    with pytest.raises(ValueError, match="≥ 4"):
        domias_auroc(synth, members, holdout.subset(np.arange(3)))
    with pytest.raises(ValueError, match="components"):
        domias_auroc(synth, members, holdout, components=0)
    x = np.zeros((10, 3))
    assert domias_auroc(x, x, x).auroc == 0.5  # no variance: nothing to tell apart


def test_attribute_disclosure_gap_for_copies_and_none_for_fresh_data() -> None:
    members, holdout = _cohort(1), _cohort(2)
    leak = attribute_disclosure(members, members, holdout)
    assert leak.auroc_members > leak.auroc_holdout
    assert leak.gap > 0.05
    assert (leak.known_features, leak.hidden_features, leak.k) == (10, 10, 5)
    fresh = attribute_disclosure(_cohort(3), members, holdout)
    assert abs(fresh.gap) < 0.04
    assert fresh.auroc_members > 0.5  # population-level knowledge still helps a little


def test_attribute_disclosure_checks_its_input() -> None:
    members = _cohort(1, 20)
    with pytest.raises(ValueError, match="known_share"):
        attribute_disclosure(members, members, members, known_share=1.0)
    with pytest.raises(ValueError, match="k must"):
        attribute_disclosure(members, members, members, k=21)
    with pytest.raises(ValueError, match="binary_codes"):
        attribute_disclosure(random_cohort(20, features=5), members, members)


def test_nnaa_known_value() -> None:
    # T = {0, 10}, S = {1, 3} on a line: d_TS = (1, 7) vs d_TT = (10, 10) → 0, 0;
    # d_ST = (1, 3) vs d_SS = (2, 2) → 0, 1. AA = ½ (0 + ½) = ¼
    t, s = np.array([[0.0], [10.0]]), np.array([[1.0], [3.0]])
    result = nnaa(s, t)
    assert result.aa_members == pytest.approx(0.25)
    assert np.isnan(result.aa_holdout) and result.n == 2


def test_nnaa_copies_and_fresh_data() -> None:
    members, holdout = _cohort(1), _cohort(2)
    copies = nnaa(members, members, holdout)
    assert copies.aa_members == 0.0
    assert copies.privacy_loss > 0.3
    fresh = nnaa(_cohort(3), members, holdout)
    assert fresh.aa_members == pytest.approx(0.5, abs=0.1)
    assert abs(fresh.privacy_loss) < 0.1
    assert nnaa(_cohort(3), members, holdout.subset(np.arange(50))).n == 50
