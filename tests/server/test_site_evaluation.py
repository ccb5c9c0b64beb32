"""The coordinator keeps only numbers from a site's evaluation reply, and pools them by patients."""

from __future__ import annotations

import numpy as np
import pytest

from client.sample_evaluation import match_disease_mix
from server.site_evaluation import pooled
from shared.evaluation.numbers import drop_text, flatten, numbers_only
from shared.baselines.prior import PriorSampler
from shared.bundle import StudyBundle


def _prior(bundle: StudyBundle, n: int, *, seed: int):
    """``n`` graph-prior patients of uniformly drawn diseases."""
    sampler = PriorSampler(bundle)
    return sampler.sample(sampler.uniform_conditions(n, seed=seed), seed=seed)

def test_numbers_only_finds_the_first_leaf_that_is_not_a_number() -> None:
    assert numbers_only({"a": 1, "b": {"c": 0.5, "d": None, "e": True, "f": [1, 2.0]}}) is None
    assert numbers_only({"a": 1, "b": {"c": "Smith, John"}}) == "b.c"
    assert numbers_only({"a": [1, {"x": "row"}]}) == "a[1].x"
    assert numbers_only("text") == "(top)"


def test_pooled_is_the_patient_weighted_mean_of_numbers_every_site_gives() -> None:
    reports = {"a": {"counts": {"real": 100}, "fidelity": {"mmd2": 0.1, "only_a": 3.0}, "flag": True},
               "b": {"counts": {"real": 300}, "fidelity": {"mmd2": 0.3, "lab": None}}}
    assert flatten(reports["a"]) == {"counts.real": 100.0, "fidelity.mmd2": 0.1, "fidelity.only_a": 3.0}
    out = pooled(reports)
    assert set(out) == {"counts.real", "fidelity.mmd2"}
    assert out["fidelity.mmd2"] == pytest.approx((0.1 * 100 + 0.3 * 300) / 400)


def test_the_sample_is_cut_to_the_site_disease_mix(demo_bundle, coordinator_key) -> None:
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    synthetic = _prior(bundle, 400, seed=0)
    real = np.array([0] * 5 + [2] * 3 + [7] * 1000)  # more of disease 7 than the sample has
    matched = match_disease_mix(synthetic, real, seed=1)
    counts = np.bincount(matched.disease, minlength=8)
    assert counts[0] == 5 and counts[2] == 3 and counts[7] == np.sum(synthetic.disease == 7)
    assert counts[[1, 3, 4, 5, 6]].sum() == 0
    assert len(np.unique(matched.person_id)) == matched.n  # drawn without replacement


def test_a_larger_sample_is_scaled_to_the_site_mix_not_cut_to_its_size(demo_bundle, coordinator_key) -> None:
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    synthetic = _prior(bundle, 400, seed=0)
    have = np.bincount(synthetic.disease, minlength=8)
    real = np.array([0] * 10 + [2] * 4 + [7] * 20)
    counts = np.bincount(match_disease_mix(synthetic, real, seed=1).disease, minlength=8)
    scale = min(have[0] / 10, have[2] / 4, have[7] / 20)  # the scarcest disease for its share limits it
    assert scale > 1
    assert list(counts[[0, 2, 7]]) == [int(scale * 10 + 1e-9), int(scale * 4 + 1e-9), int(scale * 20 + 1e-9)]
    assert counts[[1, 3, 4, 5, 6]].sum() == 0


def test_what_a_site_sends_passes_the_coordinator_check(demo_bundle, coordinator_key) -> None:
    """The suite names the phenotypes of its onset task in a text list: the site drops text
    before sending, and the rest is numbers the coordinator accepts."""
    from shared.evaluation.suite import evaluate

    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    real, synth, held = (_prior(bundle, n, seed=s) for n, s in ((160, 0), (160, 1), (80, 2)))
    metrics = evaluate(real, synth, holdout=held, seed=0, bundle=bundle)
    assert numbers_only(metrics) is not None  # the raw suite holds text
    sent = drop_text(metrics)
    assert numbers_only(sent) is None
    assert flatten(sent) == flatten(metrics)  # no number is lost
