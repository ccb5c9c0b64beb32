"""The DP independent-marginals baseline: its contract, its sensitivity bound, its noise, and
that it reproduces marginals (and nothing more)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shared.baselines.marginals import (
    AGE_EDGES,
    BLOCKS,
    LAB_CLIP,
    LAB_SD,
    _scales,
    contributions,
    fit,
    release_site,
)
from shared.ehr.cohort import SYNTHETIC_ID_BASE
from shared.privacy.budget import calibrate_noise
from tests.shared.evaluation.cohorts import random_cohort, study_cohort

D = 3  # diseases of study_cohort / random_cohort


def _scaled(r) -> np.ndarray:
    """A release back in the mechanism's units (Σ v_i + noise), [D, K]."""
    parts = [r.patients[:, None], r.events.reshape(D, -1), r.measured.reshape(D, -1), r.lab_sum.reshape(D, -1),
             r.males[:, None], r.age]
    scale = _scales(r.events.shape[1], r.events.shape[2], len(r.lab_codes))
    return np.concatenate([p / s for p, s in zip(parts, scale)], axis=1) / np.sqrt(BLOCKS)


def _worst_and_empty(like) -> object:
    """Patient 0: male, every event, every lab measured beyond ±LAB_CLIP, age past the bins; patient 1: nothing."""
    n, t_len, b = 2, like.windows, len(like.binary_codes)
    n_labs = len(like.lab_codes)
    labs = np.where(np.arange(t_len * n_labs).reshape(1, t_len, n_labs) % 2, 50.0, -50.0) * np.array([1, 0])[:, None,
                                                                                                         None]
    return dataclasses.replace(
        like.subset(np.arange(n)), events=np.stack([np.ones((t_len, b)), np.zeros((t_len, b))]).astype(np.float32),
        labs=labs.astype(np.float32), lab_mask=np.stack([np.ones((t_len, n_labs)), np.zeros((t_len, n_labs))])
        .astype(np.float32), sex=np.array([1, 0], np.float32), age=np.array([150, 0], np.float32),
        disease=np.array([0, 2]))


def test_release_fit_and_sample_contract() -> None:
    sites = [study_cohort(150, seed=s) for s in (0, 1)]
    releases = [release_site(t, D, epsilon=2.0, delta=1e-5, generator=np.random.default_rng(s))
                for s, t in enumerate(sites)]
    r = releases[0]
    assert r.events.shape == (D, 5, 13) and r.measured.shape == r.lab_sum.shape == (D, 5, 2)
    assert r.patients.shape == r.males.shape == (D,) and r.age.shape == (D, len(AGE_EDGES) - 1)
    for f in dataclasses.fields(r):  # numbers per disease only, never per patient
        value = getattr(r, f.name)
        if isinstance(value, np.ndarray):
            assert value.shape[0] == D, f.name
    model = fit(releases)
    synth = model.sample(np.array([0, 1, 2, 2, 1] * 40), seed=3)
    assert synth.events.shape == (200, 5, 13) and synth.labs.shape == synth.lab_mask.shape == (200, 5, 2)
    assert all(x.dtype == np.float32 for x in (synth.events, synth.labs, synth.lab_mask, synth.sex, synth.age))
    assert set(np.unique(synth.events)) <= {0.0, 1.0} and not synth.labs[synth.lab_mask == 0].any()
    assert (synth.age >= 0).all() and (synth.age <= 100).all()
    assert list(synth.disease[:5]) == [0, 1, 2, 2, 1] and synth.person_id.min() >= SYNTHETIC_ID_BASE
    assert (synth.binary_codes, synth.lab_codes, synth.window_days) == (sites[0].binary_codes, sites[0].lab_codes, 30)
    again = model.sample(np.array([0, 1, 2, 2, 1] * 40), seed=3)
    assert np.array_equal(again.events, synth.events) and np.array_equal(again.age, synth.age)
    with pytest.raises(ValueError, match="disease indices"):
        release_site(sites[0], 2, epsilon=None, delta=1e-5)
    with pytest.raises(ValueError, match="conditions"):
        model.sample(np.array([3]), seed=0)
    with pytest.raises(ValueError, match="no releases"):
        fit([])
    other = release_site(random_cohort(50), D, epsilon=None, delta=1e-5)
    with pytest.raises(ValueError, match="same study"):
        fit([r, other])


def test_without_noise_the_fit_is_the_pooled_empirical_marginals() -> None:
    sites = [study_cohort(120, seed=0), study_cohort(90, seed=1)]
    model = fit([release_site(t, D, epsilon=None, delta=1e-5) for t in sites], prior=0.0)
    events = np.concatenate([t.events for t in sites]).astype(np.float64)
    mask = np.concatenate([t.lab_mask for t in sites]).astype(np.float64)
    labs = np.clip(np.concatenate([t.labs for t in sites]).astype(np.float64), -LAB_CLIP, LAB_CLIP)
    disease = np.concatenate([t.disease for t in sites])
    sex, age = (np.concatenate([getattr(t, k) for t in sites]).astype(np.float64) for k in ("sex", "age"))
    for d in range(D):
        rows = disease == d
        assert model.patients[d] == pytest.approx(rows.sum(), abs=1e-9)
        np.testing.assert_allclose(model.event_p[d], events[rows].mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(model.measured_p[d], mask[rows].mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(model.lab_mean[d], (labs * mask)[rows].sum(axis=0) / mask[rows].sum(axis=0),
                                   rtol=0, atol=1e-9)
        assert model.male_p[d] == pytest.approx(sex[rows].mean(), abs=1e-12)
        hist = np.histogram(age[rows], bins=AGE_EDGES)[0]
        np.testing.assert_allclose(model.age_p[d], hist / hist.sum(), rtol=0, atol=1e-12)
    # a disease without patients falls back to the marginals over all diseases
    two = [t.subset(t.disease != 2) for t in sites]
    fallback = fit([release_site(t, D, epsilon=None, delta=1e-5) for t in two])
    kept = disease != 2
    np.testing.assert_allclose(fallback.event_p[2], events[kept].mean(axis=0), atol=1e-9)
    assert fallback.male_p[2] == pytest.approx(sex[kept].mean(), abs=1e-9)


def test_worst_case_patient_has_l2_norm_one() -> None:
    like = study_cohort(10, seed=0)
    extreme = _worst_and_empty(like)
    norms = np.linalg.norm(contributions(extreme), axis=1)
    assert norms[0] == pytest.approx(1.0, abs=1e-12) and norms[0] <= 1.0 + 1e-12  # the bound is tight
    assert norms[1] == pytest.approx(np.sqrt(2 / BLOCKS))  # count and age bin only
    assert (np.linalg.norm(contributions(random_cohort(500, seed=4)), axis=1) <= 1.0 + 1e-12).all()
    # neighbouring datasets (add the worst patient): the released sums move by ≤ 1 in L2
    base = study_cohort(60, seed=2)
    plus = dataclasses.replace(base, **{k: np.concatenate([getattr(base, k), getattr(extreme.subset([0]), k)])
                                        for k in ("events", "labs", "lab_mask", "sex", "age", "disease",
                                                  "person_id", "index_date")})
    move = _scaled(release_site(plus, D, epsilon=None, delta=1e-5)) - _scaled(
        release_site(base, D, epsilon=None, delta=1e-5))
    assert np.linalg.norm(move) == pytest.approx(1.0, abs=1e-9)


def test_noise_at_epsilon_one_is_the_calibrated_gaussian() -> None:
    t = study_cohort(300, seed=5)
    sigma = calibrate_noise(epsilon=1.0, delta=1e-5, sample_rate=1.0, steps=1)
    assert 3.0 < sigma < 6.0  # one Gaussian release at ε = 1, δ = 1e-5
    noisy = release_site(t, D, epsilon=1.0, delta=1e-5, generator=np.random.default_rng(0))
    exact = release_site(t, D, epsilon=None, delta=1e-5)
    assert noisy.noise_multiplier == sigma and exact.noise_multiplier == 0.0
    z = (_scaled(noisy) - _scaled(exact)).ravel()  # the noise, in the mechanism's units
    assert abs(z.std() / sigma - 1) < 0.15 and abs(z.mean()) < 0.5
    scale = _scales(5, 13, 2)
    np.testing.assert_allclose(noisy.noise_std(), np.sqrt(BLOCKS) * sigma * scale)
    events = (noisy.events - exact.events).ravel() / noisy.noise_std()[1]
    assert abs(events.std() - 1) < 0.2
    model = fit([noisy])
    for p in (model.event_p, model.measured_p, model.male_p):
        assert (p >= 0).all() and (p <= 1).all()
    assert (np.abs(model.lab_mean) <= LAB_CLIP).all() and np.allclose(model.age_p.sum(axis=1), 1.0)


def test_samples_follow_the_fitted_marginals_and_nothing_else() -> None:
    data = random_cohort(3000, seed=1, correlated=True)
    model = fit([release_site(data, D, epsilon=None, delta=1e-5)])
    conditions = np.repeat(np.arange(D), 6000)
    synth = model.sample(conditions, seed=2)
    for d in range(D):
        rows = synth.disease == d
        n = rows.sum()
        for got, want in ((synth.events[rows].mean(axis=0), model.event_p[d]),
                          (synth.lab_mask[rows].mean(axis=0), model.measured_p[d])):
            assert (np.abs(got - want) <= 4.5 * np.sqrt(want * (1 - want) / n) + 1e-9).all()
        assert abs(synth.sex[rows].mean() - model.male_p[d]) < 4.5 * np.sqrt(0.25 / n)
        hist = np.histogram(synth.age[rows], bins=AGE_EDGES)[0] / n
        assert np.abs(hist - model.age_p[d]).max() < 0.02
        m = synth.lab_mask[rows] > 0
        mean = (synth.labs[rows] * m).sum(axis=0) / m.sum(axis=0)
        assert (np.abs(mean - model.lab_mean[d]) < 4.5 * LAB_SD / np.sqrt(m.sum(axis=0))).all()
    # features 0 and 1 co-occur in the data (a shared latent); the baseline keeps no correlation
    def lift(t) -> float:
        a, b = t.events[..., 0].ravel(), t.events[..., 1].ravel()
        return float((a * b).mean() / (a.mean() * b.mean()))

    assert lift(data) > 3.0 and abs(lift(synth) - 1.0) < 0.3
