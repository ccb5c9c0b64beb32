"""The sampler keeps the knowledge graph's hard facts by construction (issue 21): with every
constraint on, a generated cohort has no wrong-sex term, no adverse event without a linked
drug before it, no lab value beyond its limits and no NOT pair, as the release gate measures
them (:mod:`shared.evaluation.plausibility`); with one off, its check fails on the same model;
and a patient who already keeps the facts is not changed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from shared.bundle import StudyBundle
from shared.evaluation import plausibility as plaus
from shared.model.constraints import (
    CONSTRAINTS,
    HardFacts,
    Projection,
    check_constraints,
)
from shared.model.fit import train_local
from shared.model.generation import DiffusionGenerator, data_card, generate, generate_tensors
from shared.model.sampling import sample, sample_plain
from shared.model.schedule import KnowledgeVPSchedule, ScheduleConfig
from shared.model.settings import TrainConfig
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium
from shared.trajectories.tensorize import TensorLayout, tensorize

SMALL = {"hidden": 32, "mix_hidden": 32, "blocks": 1}
#: each constraint → the plausibility share it drives to 0
CHECK = {"sex": "wrong_sex_patients", "adverse-events": "adverse_events_before_any_drug",
         "labs": "lab_values_outside_limits", "negated": "phenotype_pairs_negated"}


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def site(bundle):
    (_, cohort), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=5, min_patients=120,
                                       max_patients=120)
    return tensorize(cohort, bundle)[0]


@pytest.fixture(scope="module")
def trained(site, bundle):
    model, _ = train_local(site, bundle, guidance="kg", config=TrainConfig(steps=300, batch_size=32, seed=0),
                           denoiser=SMALL)
    return model


@pytest.fixture(scope="module")
def facts(bundle) -> HardFacts:
    """The bundle's facts plus NOT pairs for a third of the (disease, phenotype) pairs: the
    demo study's vocabulary holds no phenotype that HPO negates for its diseases."""
    f = HardFacts.from_bundle(bundle, TensorLayout.from_bundle(bundle))
    assert not f.negative.any()
    pheno = np.asarray(TensorLayout.from_bundle(bundle).binary_domains) == "phenotype"
    negative = (np.random.default_rng(0).random(f.negative.shape) < 1 / 3) & pheno[None, :]
    return replace(f, negative=negative)


def _checks(t, bundle, facts: HardFacts) -> dict[str, float]:
    knowledge = replace(plaus.GraphKnowledge.from_bundle(bundle, t), negative=facts.negative)
    return plaus.plausibility(t, knowledge)


def _sample(trained, bundle, facts, enabled, *, n=400, seed=1, **kw):
    """``n`` patients as tensors, the projection built from ``facts`` (with the made-up NOT pairs)."""
    conditions = np.random.default_rng(seed).integers(0, trained.layout.n_diseases, n)
    project = Projection(facts, enabled)
    x = sample(trained.model, trained.schedule, trained.tables, disease=conditions, seed=seed,
               constraints=project, **({"steps": 8, "guidance_scale": 1.0} | kw))
    return trained.layout.from_vectors(x, disease=conditions, person_id=np.arange(n), index_date=np.zeros(n, "M8[D]"),
                                       like=TensorLayout.from_bundle(bundle))


def test_constraints_on_keep_every_fact_and_off_break_them(trained, bundle, facts) -> None:
    on = _checks(_sample(trained, bundle, facts, CONSTRAINTS), bundle, facts)
    off = _checks(_sample(trained, bundle, facts, ()), bundle, facts)
    for name, share in CHECK.items():
        assert on[share] == 0.0, name
        assert off[share] > 0.0, name  # the model alone breaks each fact: the check can fail
    assert on["adverse_events_with_drug_signal"] == 1.0 and on["adverse_events"] > 0
    assert on["lab_values"] > 0 and on["phenotype_pairs"] > 0


@pytest.mark.parametrize("left_out", CONSTRAINTS)
def test_each_constraint_alone_decides_its_check(trained, bundle, facts, left_out: str) -> None:
    enabled = tuple(c for c in CONSTRAINTS if c != left_out)
    got = _checks(_sample(trained, bundle, facts, enabled, guidance_scale=1.5), bundle, facts)
    assert got[CHECK[left_out]] > 0.0
    assert all(got[CHECK[c]] == 0.0 for c in enabled)


def test_generation_keeps_the_bundles_facts_by_default(trained, bundle) -> None:
    knowledge = plaus.GraphKnowledge.from_bundle(bundle, TensorLayout.from_bundle(bundle))
    for eta in (0.0, 1.0):
        t = generate_tensors(trained, bundle, n=300, disease=None, seed=2, steps=8, guidance_scale=1.0, eta=eta)
        got = plaus.plausibility(t, knowledge)
        assert all(got[share] == 0.0 for share in CHECK.values())
    loose = plaus.plausibility(generate_tensors(trained, bundle, n=300, disease=None, seed=2, steps=8,
                                                guidance_scale=1.0, eta=0.0, constraints=()), knowledge)
    assert loose["wrong_sex_patients"] > 0 and loose["lab_values_outside_limits"] > 0
    assert loose["adverse_events_before_any_drug"] > 0
    generator = DiffusionGenerator(trained, bundle, steps=8)
    assert generator.constraints == CONSTRAINTS
    np.testing.assert_array_equal(generator.sample(t.disease, seed=2).events,
                                  generate_tensors(trained, bundle, n=300, disease=None, seed=2, steps=8,
                                                   guidance_scale=1.0, eta=0.0).events)


def test_sampling_with_constraints_is_seeded(trained, bundle) -> None:
    kw = {"n": 80, "disease": None, "steps": 6, "guidance_scale": 1.0, "eta": 0.0}
    a, b = (generate_tensors(trained, bundle, seed=3, **kw) for _ in range(2))
    c = generate_tensors(trained, bundle, seed=4, **kw)
    for field in ("events", "labs", "lab_mask", "sex", "age"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.events, c.events)


def test_a_cohort_that_keeps_the_facts_is_not_changed(trained, bundle, site, facts) -> None:
    real = replace(facts, negative=np.zeros_like(facts.negative))  # the simulated site has none
    assert all(_checks(site, bundle, real)[share] == 0.0 for share in CHECK.values())
    x = trained.layout.to_vectors(site)
    projected = x.clone()
    Projection(real).flat(projected, torch.tensor(site.disease), windows=site.windows)
    assert torch.equal(projected, x)
    # a projected sample is a fixed point: projecting it again changes nothing
    conditions = np.random.default_rng(0).integers(0, trained.layout.n_diseases, 200)
    y = sample(trained.model, trained.schedule, trained.tables, disease=conditions, steps=6, guidance_scale=1.0,
               seed=0, constraints=Projection(facts))
    again = y.clone()
    Projection(facts).flat(again, torch.from_numpy(conditions), windows=site.windows)
    assert torch.equal(again, y)


def test_the_projection_changes_only_what_breaks_a_fact(bundle, facts) -> None:
    layout = TensorLayout.from_bundle(bundle)
    b, l_, t_len = len(layout.binary_codes), len(layout.lab_codes), layout.windows
    facts = replace(facts, negative=np.zeros_like(facts.negative))  # the sex check alone decides the female term
    project = Projection(facts)
    drugs, events = project.drugs.numpy(), project.events.numpy()
    g, a = map(int, np.argwhere(facts.drug_effect[np.ix_(drugs, events)])[0])
    drug, event = int(drugs[g]), int(events[a])
    female = int(np.flatnonzero(facts.female_only)[0])
    win = -torch.ones(2, t_len, b + 2 * l_)
    win[:, 2, drug] = 1.0  # the drug from window 2
    win[:, 1:, event] = 0.5  # its adverse event in windows 1..T-1: window 1 is before the drug
    win[:, :, female] = 1.0
    lab = int(np.flatnonzero(np.isfinite(facts.lab_bounds()[0]))[0])
    win[:, :, b + lab] = -50.0
    static = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # a male, a female
    project(win, static, 0)
    assert win[:, 1, event].tolist() == [-1.0, -1.0] and (win[:, 2:, event] == 0.5).all()
    assert (win[0, :, female] == -1.0).all() and (win[1, :, female] == 1.0).all()
    low = float(facts.lab_bounds()[0][lab])
    assert (win[:, :, b + lab] == low).all()
    assert facts.lab_mid[lab] + facts.lab_half[lab] * np.float64(low) >= facts.lab_low_limit[lab]


def test_lab_bounds_are_rounded_inward() -> None:
    # ranges whose limits are not exact in float32 after standardizing
    mid, half = np.array([2.6, 14.5, 0.35]), np.array([2.4, 14.3, 0.3])
    facts = HardFacts(negative=np.zeros((1, 1), bool), drug_effect=np.zeros((1, 1), bool),
                      adverse_event=np.zeros(1, bool), female_only=np.zeros(1, bool), male_only=np.zeros(1, bool),
                      lab_mid=mid, lab_half=half, lab_low_limit=np.array([0.0, 0.0, -np.inf]),
                      lab_high_limit=np.array([np.inf, 160.0, np.inf]))
    low, high = facts.lab_bounds()
    assert low.dtype == high.dtype == np.float32
    assert (mid[:2] + half[:2] * low[:2].astype(np.float64) >= 0).all()
    assert mid[1] + half[1] * np.float64(high[1]) <= 160.0
    assert low[2] == -np.inf and np.isinf(high[[0, 2]]).all()
    assert low[0] == pytest.approx(-2.6 / 2.4, rel=1e-6) and high[1] == pytest.approx(145.5 / 14.3, rel=1e-6)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_fast_path_projects_like_the_plain_loop(trained, bundle, facts, prediction: str) -> None:
    schedule = KnowledgeVPSchedule(ScheduleConfig(gamma=1.0, prediction=prediction))
    disease = np.random.default_rng(1).integers(0, trained.layout.n_diseases, 40)
    kw = {"disease": disease, "steps": 4, "guidance_scale": 1.5, "seed": 5, "batch_size": 16, "eta": 0.5,
          "constraints": Projection(facts)}
    expected = sample_plain(trained.model, schedule, trained.tables, **kw)
    got = sample(trained.model, schedule, trained.tables, precision="fp32", chunk=3, **kw)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)
    assert (got - expected).abs().mean() < 1e-5
    free = sample(trained.model, schedule, trained.tables, precision="fp32", **(kw | {"constraints": None}))
    assert not torch.equal(free, got)


def test_names_are_checked(trained, bundle, facts) -> None:
    assert check_constraints(["labs", "sex", "labs"]) == ("sex", "labs")
    with pytest.raises(ValueError, match="unknown constraint 'ages'; known: sex, adverse-events"):
        check_constraints(("sex", "ages"))
    with pytest.raises(ValueError, match="collection of names"):
        generate_tensors(trained, bundle, n=4, disease=None, seed=0, steps=2, guidance_scale=1.0, eta=0.0,
                         constraints="sex")
    with pytest.raises(ValueError, match="unknown constraint"):
        DiffusionGenerator(trained, bundle, constraints=("sex", "age"))
    labs = facts.lab_mid.size
    with pytest.raises(ValueError, match=rf"lab_half has shape \({labs},\), expected \({labs - 1},\)"):
        replace(facts, lab_mid=facts.lab_mid[:-1])
    short = replace(facts, **{name: getattr(facts, name)[:-1] for name in
                              ("lab_mid", "lab_half", "lab_low_limit", "lab_high_limit")})
    with pytest.raises(ValueError, match="labs, the model has"):
        sample(trained.model, trained.schedule, trained.tables, disease=np.zeros(2, np.int64), steps=2,
               guidance_scale=1.0, seed=0, constraints=Projection(short))


def test_data_card_names_the_constraints_kept(trained, bundle) -> None:
    cohort, _ = generate(trained, bundle, n=10, disease=None, seed=0, steps=2, guidance_scale=1.0, eta=0.0,
                         constraints=("labs",))
    card = data_card(trained, bundle, cohort, seed=0, steps=2, guidance_scale=1.0, eta=0.0, disease=None,
                     constraints=("labs",))
    assert card["sampling"]["constraints"] == ["labs"]
    default = data_card(trained, bundle, cohort, seed=0, steps=2, guidance_scale=1.0, eta=0.0, disease=None)
    assert default["sampling"]["constraints"] == list(CONSTRAINTS)


def test_the_gate_checks_exactly_the_facts_the_sampler_keeps(bundle, site) -> None:
    """plausibility.GraphKnowledge carries the sampler's facts (one definition, here)."""
    mine, theirs = HardFacts.from_bundle(bundle, site), plaus.GraphKnowledge.from_bundle(bundle, site)
    for name in ("negative", "drug_effect", "female_only", "male_only", "lab_mid", "lab_half", "lab_low_limit",
                 "lab_high_limit"):
        np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name), err_msg=name)
    assert mine.female_only.sum() == mine.male_only.sum() == 1 and mine.drug_effect.any()
