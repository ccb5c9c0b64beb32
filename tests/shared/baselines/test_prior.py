"""Patients from public knowledge alone follow the bundle's frequencies, indications and
drug effects, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from shared.bundle import StudyBundle
from shared.baselines.prior import PriorSampler
from shared.ehr.omop_columns import SYNTHETIC_ID_BASE


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def sample(bundle):
    sampler = PriorSampler(bundle)
    return sampler.sample(sampler.uniform_conditions(4000, seed=1), seed=1)


def _columns(bundle, tensors, domain):
    v = bundle.vocabulary.set_index(["domain", "code"])["index"]
    return {v[(d, c)]: i for i, (d, c) in enumerate(zip(tensors.binary_domains, tensors.binary_codes)) if d == domain}


def test_phenotype_prevalence_is_the_annotated_frequency(bundle, sample) -> None:
    cols = _columns(bundle, sample, "phenotype")
    ever = sample.events.max(axis=1)
    for d in range(len(bundle.diseases)):
        rows = sample.disease == d
        for vocab, col in cols.items():
            f = bundle.frequency[d, vocab]
            observed = ever[rows, col].mean()
            if np.isfinite(f):
                assert abs(observed - f) < 4 * np.sqrt(f * (1 - f) / rows.sum()) + 1e-9
            else:
                assert observed == 0  # no annotation, no phenotype


def test_drugs_are_indicated_and_adverse_events_follow_them(bundle, sample) -> None:
    drugs = _columns(bundle, sample, "drug")
    for d in range(len(bundle.diseases)):
        rows = sample.disease == d
        for vocab, col in drugs.items():
            if bundle.combined[d, vocab] <= 0:
                assert not sample.events[rows, :, col].any()
    pg = bundle.prior_graph
    effects = pg[pg["kind"] == "drug_effect"]
    adverse = _columns(bundle, sample, "adverse_event")
    first = lambda x: np.where(x.any(axis=1), x.argmax(axis=1), 99)  # noqa: E731
    for col in adverse.values():
        has = sample.events[:, :, col].any(axis=1)
        if not has.any():
            continue
        sources = [drugs[s] for s, t in zip(effects["source"], effects["target"]) if adverse.get(t) == col and s in drugs]
        start = np.min([first(sample.events[:, :, c]) for c in sources], axis=0)
        assert (first(sample.events[:, :, col])[has] > start[has]).all()


def test_labs_only_where_measured_and_reproducible(bundle, sample) -> None:
    assert not sample.labs[sample.lab_mask == 0].any()
    assert 0.25 < sample.lab_mask.mean() < 0.35
    again = PriorSampler(bundle).sample(sample.disease, seed=1)
    assert np.array_equal(again.events, sample.events) and np.array_equal(again.labs, sample.labs)
    with pytest.raises(ValueError, match="n must be"):
        PriorSampler(bundle).uniform_conditions(0, seed=1)


def test_uniform_conditions_cover_the_study_evenly(bundle, sample) -> None:
    counts = np.bincount(sample.disease, minlength=len(bundle.diseases))
    assert len(counts) == len(bundle.diseases)
    expected = sample.n / len(bundle.diseases)
    assert (np.abs(counts - expected) < 4 * np.sqrt(expected)).all()


def test_a_seed_still_draws_the_patients_it_drew_before_conditions_were_passed_in(bundle) -> None:
    """Known values from the sampler that drew its own diseases, ``sample(bundle, 400, seed=0)``:
    pretraining and the benchmarks' prior rows stay comparable across the interface change."""
    sampler = PriorSampler(bundle)
    t = sampler.sample(sampler.uniform_conditions(400, seed=0), seed=0)
    assert t.disease[:12].tolist() == [6, 5, 4, 2, 2, 0, 0, 0, 1, 6, 5, 7]
    assert np.bincount(t.disease, minlength=8).tolist() == [54, 36, 42, 47, 54, 51, 56, 60]
    assert int(t.events.sum()) == 6297 and int(t.lab_mask.sum()) == 18095


def test_patients_carry_synthetic_ids_as_every_generator_does(sample) -> None:
    """`raregraph evaluate` refuses a synthetic cohort whose ids could be real ones (issue 21)."""
    assert sample.person_id.min() == SYNTHETIC_ID_BASE and len(set(sample.person_id)) == sample.n
