"""The DP independent-marginals baseline: its contract, its contribution bounding, its
sensitivity per block, its calibrated noise, its estimates, and that it reproduces marginals
(and nothing more)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shared.baselines.marginals import (
    AGE_EDGES,
    EVENT_CAP,
    LAB_CAP,
    LAB_CLIP,
    LAB_SD,
    SHARES,
    _shrink,
    bound_patients,
    contributions,
    fit,
    release_site,
)
from shared.bundle import StudyBundle
from shared.ehr.cohort import SYNTHETIC_ID_BASE
from shared.evaluation.fidelity import prevalence, prevalence_r2
from shared.privacy.budget import calibrate_noise, epsilon_for
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium
from shared.trajectories.tensorize import tensorize
from tests.shared.evaluation.cohorts import random_cohort, study_cohort

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")

D = 3  # diseases of study_cohort / random_cohort
LABS = 20  # labs of the cohorts below: 5 windows × 20 = 100 lab cells, more than LAB_CAP
PATIENT = ("events", "labs", "lab_mask", "sex", "age", "disease", "person_id", "index_date")


def _sensitivity(windows: int, features: int, labs: int) -> np.ndarray:
    """Δ_j of the module docstring's table, written out independently of the module."""
    k_e, k_l = min(EVENT_CAP, windows * features), min(LAB_CAP, windows * labs)
    return np.array([1, np.sqrt(k_e), np.sqrt(k_l), LAB_CLIP * np.sqrt(k_l), 1, 1, np.sqrt(k_e)])


def _blocks(r) -> list[np.ndarray]:
    """A release's seven blocks in the mechanism's units (natural units · w_j / Δ_j), each flattened."""
    natural = [r.patients, r.events, r.measured, r.lab_sum, r.males, r.age, r.events_all]
    unit = np.sqrt(SHARES) / _sensitivity(r.events.shape[1], r.events.shape[2], len(r.lab_codes))
    return [np.ravel(x) * u for x, u in zip(natural, unit)]


def _worst_and_empty(like):
    """Patient 0 (disease 0): male, every event, every lab measured beyond ±LAB_CLIP, age past the
    bins; patient 1 (disease 2): nothing, age 0."""
    t_len, b, n_labs = like.windows, len(like.binary_codes), len(like.lab_codes)
    labs = np.where(np.arange(t_len * n_labs).reshape(t_len, n_labs) % 2, 50.0, -50.0)
    return dataclasses.replace(
        like.subset(np.arange(2)), events=np.stack([np.ones((t_len, b)), np.zeros((t_len, b))]).astype(np.float32),
        labs=np.stack([labs, np.zeros_like(labs)]).astype(np.float32),
        lab_mask=np.stack([np.ones((t_len, n_labs)), np.zeros((t_len, n_labs))]).astype(np.float32),
        sex=np.array([1, 0], np.float32), age=np.array([150, 0], np.float32), disease=np.array([0, 2]))


def _plus(base, extra):
    return dataclasses.replace(base, **{k: np.concatenate([getattr(base, k), getattr(extra, k)]) for k in PATIENT})


def test_release_fit_and_sample_contract() -> None:
    sites = [study_cohort(150, seed=s) for s in (0, 1)]
    releases = [release_site(t, D, epsilon=2.0, delta=1e-5, generator=np.random.default_rng(s))
                for s, t in enumerate(sites)]
    r = releases[0]
    assert r.events.shape == (D, 5, 13) and r.events_all.shape == (5, 13)
    assert r.measured.shape == r.lab_sum.shape == (D, 5, 2)
    assert r.patients.shape == r.males.shape == (D,) and r.age.shape == (D, len(AGE_EDGES) - 1)
    assert r.noise_std().shape == (len(SHARES),)
    for f in dataclasses.fields(r):  # numbers per disease or per cell of the grid, never per patient
        value = getattr(r, f.name)
        if isinstance(value, np.ndarray):
            assert value.shape[0] in (D, 5), f.name
    again = release_site(sites[0], D, epsilon=2.0, delta=1e-5, generator=np.random.default_rng(0))
    assert np.array_equal(again.events, r.events) and np.array_equal(again.events_all, r.events_all)
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
    releases = [release_site(t, D, epsilon=None, delta=1e-5) for t in sites]
    assert all(r.noise_multiplier == 0 and not r.noise_std().any() for r in releases)
    model = fit(releases, prior=0.0)
    events = np.concatenate([t.events for t in sites]).astype(np.float64)
    mask = np.concatenate([t.lab_mask for t in sites]).astype(np.float64)
    labs = np.clip(np.concatenate([t.labs for t in sites]).astype(np.float64), -LAB_CLIP, LAB_CLIP)
    disease = np.concatenate([t.disease for t in sites])
    sex, age = (np.concatenate([getattr(t, k) for t in sites]).astype(np.float64) for k in ("sex", "age"))
    np.testing.assert_array_equal(sum(r.events_all for r in releases), events.sum(axis=0))  # nothing dropped
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


def test_bounding_keeps_a_uniform_random_subset_of_at_most_the_cap() -> None:
    t = _plus(_worst_and_empty(study_cohort(10, seed=0, labs=LABS)), study_cohort(40, seed=3, labs=LABS))
    out = bound_patients(t, np.random.default_rng(0))
    k_before = (t.events > 0.5).reshape(t.n, -1).sum(axis=1)
    k_after = (out.events > 0.5).reshape(t.n, -1).sum(axis=1)
    np.testing.assert_array_equal(k_after, np.minimum(k_before, EVENT_CAP))
    assert k_before[0] == 65 > EVENT_CAP and (k_before[2:] < 65).all()
    m_after = (out.lab_mask > 0.5).reshape(t.n, -1).sum(axis=1)
    np.testing.assert_array_equal(m_after, np.minimum((t.lab_mask > 0.5).reshape(t.n, -1).sum(axis=1), LAB_CAP))
    assert not (out.events > t.events).any() and not (out.lab_mask > t.lab_mask).any()  # a subset, nothing added
    np.testing.assert_array_equal(out.labs, np.where(out.lab_mask > 0, t.labs, 0))  # a dropped cell loses its value
    # the first patients' choices do not depend on those that follow (neighbouring datasets share them)
    head = bound_patients(t.subset(np.arange(20)), np.random.default_rng(0))
    np.testing.assert_array_equal(head.events, out.events[:20])
    # every event of the worst patient is kept with probability EVENT_CAP / 65
    worst = t.subset([0])
    kept = np.mean([bound_patients(worst, np.random.default_rng(s)).events[0] for s in range(400)], axis=0)
    p = EVENT_CAP / 65
    assert np.abs(kept - p).max() < 5 * np.sqrt(p * (1 - p) / 400)


def test_each_block_moves_by_at_most_its_sensitivity() -> None:
    like = study_cohort(10, seed=0, labs=LABS)
    extreme = _worst_and_empty(like)
    weight = np.sqrt(SHARES)
    v = contributions(extreme, np.random.default_rng(1))
    sizes = [1, 65, 100, 100, 1, len(AGE_EDGES) - 1, 65]
    parts = np.split(v, np.cumsum(sizes)[:-1], axis=1)
    np.testing.assert_allclose([np.linalg.norm(p[0]) for p in parts], weight, rtol=1e-12)  # every bound is tight
    assert np.linalg.norm(v[0]) == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.norm(v[1]) == pytest.approx(np.sqrt(SHARES[0] + SHARES[5]))  # count and age bin only
    assert (np.linalg.norm(contributions(random_cohort(500, seed=4), np.random.default_rng(0)), axis=1)
            <= 1.0 + 1e-12).all()
    # neighbouring datasets (add the worst patient last), same generator: the released blocks move by ≤ w_j
    base = study_cohort(60, seed=2, labs=LABS)
    plus = _plus(base, extreme.subset([0]))
    moved = [a - b for a, b in zip(_blocks(release_site(plus, D, epsilon=4.0, delta=1e-5,
                                                        generator=np.random.default_rng(7))),
                                   _blocks(release_site(base, D, epsilon=4.0, delta=1e-5,
                                                        generator=np.random.default_rng(7))))]
    np.testing.assert_allclose([np.linalg.norm(m) for m in moved], weight, rtol=1e-6)
    assert np.sqrt(sum(np.linalg.norm(m) ** 2 for m in moved)) <= 1.0 + 1e-6
    for m in moved[:6]:  # only the patient's own disease moves
        assert not np.abs(m.reshape(D, -1)[1:]).max() > 1e-9


def test_noise_is_the_calibrated_gaussian_and_spends_exactly_the_budget() -> None:
    t = study_cohort(300, seed=5, labs=LABS)
    sigma = calibrate_noise(epsilon=1.0, delta=1e-5, sample_rate=1.0, steps=1)
    assert 0.97 < epsilon_for(noise_multiplier=sigma, sample_rate=1.0, steps=1, delta=1e-5) <= 1.0
    noisy = release_site(t, D, epsilon=1.0, delta=1e-5, generator=np.random.default_rng(0))
    assert noisy.noise_multiplier == sigma
    sens = _sensitivity(5, 13, LABS)
    std = noisy.noise_std()
    np.testing.assert_allclose(std, sigma * sens / np.sqrt(SHARES))
    # seven Gaussian mechanisms whose Rényi curves add up to that of one with sensitivity 1 and noise σ
    assert np.sum((sens / std) ** 2) == pytest.approx(1 / sigma ** 2, rel=1e-12)
    # the noise: the release less the sums of the same bounded patients (the bounding's stream, spawned first)
    bounded = bound_patients(t, np.random.default_rng(0).spawn(2)[0])
    exact = release_site(bounded, D, epsilon=None, delta=1e-5)
    z = [(a - b) / sigma for a, b in zip(_blocks(noisy), _blocks(exact))]  # N(0, 1) in the mechanism's units
    assert abs(np.concatenate(z).std() - 1) < 0.05 and abs(np.concatenate(z).mean()) < 0.1
    for j in (1, 2, 3, 6):  # the blocks with enough entries to check one by one
        assert abs(z[j].std() - 1) < 0.15, j
    model = fit([noisy])
    for p in (model.event_p, model.measured_p, model.male_p):
        assert (p >= 0).all() and (p <= 1).all()
    assert (np.abs(model.lab_mean) <= LAB_CLIP).all() and np.allclose(model.age_p.sum(axis=1), 1.0)
    assert (model.patients >= 0).all()


def test_shrinkage_keeps_exact_values_and_discards_pure_noise() -> None:
    rng = np.random.default_rng(0)
    x, target = rng.random(1000), np.full(1000, 0.3)
    np.testing.assert_allclose(_shrink(x, target, 0.0), x, rtol=0, atol=1e-15)  # no noise: the data as they are
    noise = 0.3 + rng.normal(0, 1.0, 1000)  # no spread around the target, only noise
    np.testing.assert_allclose(_shrink(noise, target, 1.0), target)
    theta = rng.normal(0, 1.0, 20_000)  # spread 1, noise 1: the Bayes weight is ½
    seen = theta + rng.normal(0, 1.0, theta.size)
    est = _shrink(seen, np.zeros_like(seen), 1.0)
    assert 0.45 < np.mean(est / seen) < 0.52
    assert np.mean((est - theta) ** 2) < 0.6 * np.mean((seen - theta) ** 2)
    # one spread per group: a noisy group does not borrow the spread of a precise one
    grouped = _shrink(np.stack([theta[:1000], 5 * rng.normal(size=1000)]), np.zeros((2, 1000)),
                      np.array([[0.0], [25.0]]), group=True)
    np.testing.assert_allclose(grouped[0], theta[:1000], rtol=0, atol=1e-15)
    assert np.abs(grouped[1]).max() == 0.0


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


@pytest.fixture(scope="module")
def simulated_site(demo_bundle, coordinator_key):
    """100 patients of one simulated hospital of the demo study, and the study's disease count."""
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    (_, cohort), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=5, min_patients=100,
                                       max_patients=100)
    return tensorize(cohort, bundle)[0], len(bundle.diseases)


def _site_prevalence_r2(model, site, n_diseases: int, *, seed: int) -> float:
    """prevalence R² of 400 synthetic patients a disease, cut to the site's disease mix, against the site."""
    synth = model.sample(np.repeat(np.arange(n_diseases), 400), seed=seed)
    rows = np.concatenate([np.flatnonzero(synth.disease == d)[:int(k) * 4]
                           for d, k in enumerate(np.bincount(site.disease, minlength=n_diseases))])
    return prevalence_r2(site, synth.subset(np.sort(rows))).r2_identity


def test_exact_release_reproduces_the_prevalence_of_a_simulated_site(simulated_site) -> None:
    site, n_diseases = simulated_site
    model = fit([release_site(site, n_diseases, epsilon=None, delta=1e-5)], prior=0.0)
    assert _site_prevalence_r2(model, site, n_diseases, seed=0) > 0.85
    synth = model.sample(site.disease.repeat(20), seed=1)  # the site's mix, 20 synthetic patients each
    assert np.abs(prevalence(synth)[1:] - prevalence(site)[1:]).max() < 0.05  # each window: a pure marginal


def test_dp_release_at_epsilon_4_keeps_the_prevalence_signal(simulated_site) -> None:
    """At ε = 4 on 100 patients the old release (the event block divided by √(T·B), rates clipped)
    scored a prevalence R² of about −300 to −500 and a mean synthetic prevalence about 33 times
    the real one; bounded, split and shrunk it must beat the real mean and stay near its level
    (the bounding keeps ~81 % of this site's events; the noise moves the level by tens of %)."""
    site, n_diseases = simulated_site
    real_mean = prevalence(site).mean()
    for k in range(3):
        model = fit([release_site(site, n_diseases, epsilon=4.0, delta=1e-5, generator=np.random.default_rng(k))])
        assert _site_prevalence_r2(model, site, n_diseases, seed=k) > 0.0, k
        synth_mean = prevalence(model.sample(site.disease.repeat(20), seed=k)).mean()
        assert 1 / 3 < synth_mean / real_mean < 3, k  # noise does not become prevalence
