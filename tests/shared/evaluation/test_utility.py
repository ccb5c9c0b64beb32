"""TSTR vs TRTR: the task definitions on hand-built patients, and the comparison on cohorts."""

from __future__ import annotations

import numpy as np
import pytest

from shared.evaluation.utility import (
    disease_task,
    drug_adverse_event_task,
    onset_columns,
    onset_task,
    summary_features,
    tstr_trtr,
)
from tests.shared.evaluation.cohorts import random_cohort, replace, study_cohort


def _tiny():
    """3 patients, 4 windows (index window 1); columns: phenotype, drug, adverse event."""
    t = study_cohort(3, windows=4, phenotypes=1, drugs=1, labs=1)
    events = np.zeros((3, 4, 3), np.float32)
    events[0, 2, 1] = events[0, 3, 1] = 1   # patient 0: drug from window 2, AE in window 3
    events[0, 3, 2] = 1
    events[0, 0, 0] = 1                     # ... and the phenotype before the index window
    events[1, 1, 1] = 1                     # patient 1: drug in window 1, AE only in window 0 (before)
    events[1, 0, 2] = 1
    events[1, 3, 0] = 1                     # ... phenotype first in window 3 (later onset)
    # patient 2: nothing
    return replace(t, events=events, disease=np.array([0, 1, 2]), sex=np.array([1, 0, 1], np.float32))


def test_drug_adverse_event_task_known_values() -> None:
    x, y = drug_adverse_event_task(_tiny(), 3)
    assert y.tolist() == [1, 0]  # patient 2 takes no drug; patient 1's AE precedes the drug
    b, l_ = 3, 1
    history = x[:, : b + 2 * l_ + 2]
    assert history[0, :b].tolist() == [1, 0, 0]  # phenotype in window 0, before the drug
    assert history[1, :b].tolist() == [0, 0, 0]  # the AE before the drug is left out of the history
    assert x[:, b + 2 * l_ + 2].tolist() == [1, 1]  # the drug started in k₀
    assert x[:, -3:].tolist() == [[1, 0, 0], [0, 1, 0]]  # disease one-hot


def test_onset_task_known_values() -> None:
    x, y = onset_task(_tiny(), 3, 0)
    # patient 0 had the phenotype in window 0 (≤ index window): not eligible
    assert y.tolist() == [1, 0] and x.shape[0] == 2
    assert onset_task(random_cohort(5, windows=2), 3, 0) is None  # no window after the index window


def test_disease_task_and_summary_features() -> None:
    t = _tiny()
    x, y = disease_task(t, 3)
    assert y.tolist() == [0, 1, 2]
    keep = np.zeros((3, 4), bool)
    keep[:, :2] = True
    s = summary_features(t, keep, drop=np.array([False, True, False]))
    assert s[1, :3].tolist() == [0, 0, 1]  # drug dropped, the AE in window 0 kept
    assert s[:, -2].tolist() == [1, 0, 1] and s[:, -1] == pytest.approx(t.age / 100)
    assert drug_adverse_event_task(random_cohort(5), 3) is None  # no drug columns


def test_onset_columns_pick_balanced_phenotypes_from_real_only() -> None:
    real = study_cohort(300, seed=1)
    cols = onset_columns(real, max_phenotypes=3)
    assert len(cols) == 3
    assert all(real.binary_domains[j] == "phenotype" for j in cols)
    assert onset_columns(real, min_cases=10**6) == []


@pytest.fixture(scope="module")
def cohorts():
    return study_cohort(300, seed=1), study_cohort(300, seed=2), study_cohort(300, seed=3)


def test_copy_of_the_training_data_gives_tstr_equal_to_trtr(cohorts) -> None:
    real, _, holdout = cohorts
    results = tstr_trtr(real, real, holdout)
    names = [r.name for r in results]
    assert names[:2] == ["disease", "drug_adverse_event"] and any(n.startswith("onset:HP:") for n in names)
    for r in results:
        assert r.tstr == r.trtr and r.ratio == 1.0
        assert r.n_train_real == r.n_train_synth


def test_same_generator_reaches_trtr(cohorts) -> None:
    real, synth, holdout = cohorts
    results = {r.name: r for r in tstr_trtr(real, synth, holdout)}
    assert results["disease"].trtr > 0.95
    assert results["drug_adverse_event"].trtr > 0.7
    for r in results.values():
        assert r.ratio > 0.9


def test_broken_synthetic_data_loses_utility(cohorts) -> None:
    real, synth, holdout = cohorts
    shuffled = replace(synth, disease=np.random.default_rng(0).permutation(synth.disease))
    disease = tstr_trtr(real, shuffled, holdout)[0]
    assert disease.name == "disease" and disease.tstr < 0.65 < 0.95 < disease.trtr
    no_ae = synth.events.copy()
    no_ae[:, :, np.asarray(synth.binary_domains) == "adverse_event"] = 0
    drug = {r.name: r for r in tstr_trtr(real, replace(synth, events=no_ae), holdout)}["drug_adverse_event"]
    assert drug.tstr == 0.5  # one class in the synthetic training set: no ranking


def test_rejects_mismatched_columns() -> None:
    with pytest.raises(ValueError, match="holdout"):
        tstr_trtr(study_cohort(20), study_cohort(20), study_cohort(20, labs=3))


def test_auroc_ratio_needs_a_trtr_above_chance() -> None:
    from shared.evaluation.utility import CHANCE_AUROC, auroc_ratio

    assert auroc_ratio(0.8, 0.9) == pytest.approx(0.8 / 0.9)
    assert np.isnan(auroc_ratio(0.77, 0.45)) and np.isnan(auroc_ratio(0.77, CHANCE_AUROC))
    assert np.isnan(auroc_ratio(0.77, float("nan")))
