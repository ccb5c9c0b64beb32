"""``raregraph audit empirical``: canaries, scores, guesses, the CLI, and two real trainings
(DP off: the membership test must find the canaries; DP on: the bound must stay below ε)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import shared.evaluation.canary_audit as canary_audit
from shared.evaluation.canary_audit import (
    JSON_NAME, EmpiricalAudit, EmpiricalAuditConfig, denoising_losses, draw_inclusion, make_canaries,
    make_guesses, membership_scores,
)
from shared.privacy.audit.one_run import epsilon_lower_bound
from shared.bundle import StudyBundle
from shared.trajectories.tensors import TrajectoryTensors
from shared.ehr.omop import read_omop
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium, write_consortium
from shared.errors import ConfigError
from shared.model.checkpoint import TrainedModel, build
from shared.model.layout import ModelLayout
from shared.trajectories.tensorize import tensorize
from tests.raregraph.test_cli import one_line_error, run

# the tiny configuration of both real runs: 100 patients, 64 canaries, 10 + 10 guesses
TINY = ["--canaries", "64", "--guesses", "10", "--draws", "64", "--seed", "0"]




@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def sites(bundle, tmp_path_factory) -> Path:
    result = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=3, min_patients=100, max_patients=100)
    out = tmp_path_factory.mktemp("empirical") / "sites"
    write_consortium(result, out)
    return out


@pytest.fixture(scope="module")
def site_tensors(bundle, sites):
    return tensorize(read_omop(sites / "site-1")[0], bundle)[0]


# --- canaries, inclusion, scores, guesses -----------------------------------------------------

def test_canaries_are_out_of_distribution_and_seeded(bundle, site_tensors) -> None:
    canaries = make_canaries(bundle, site_tensors, m=40, events=12, rng=np.random.default_rng(7))
    assert canaries.n == 40 and canaries.events.shape[1:] == site_tensors.events.shape[1:]
    assert (canaries.events.sum(axis=(1, 2)) == 12).all()
    assert canaries.lab_mask.sum() == 0 and canaries.labs.sum() == 0
    assert (canaries.person_id < 0).all() and len(set(canaries.person_id)) == 40
    prior = ModelLayout.from_bundle(bundle, guidance="kg").prior
    b = canaries.events.shape[2]
    for i in range(canaries.n):  # only features the graph supports least for the canary's disease
        z = prior[canaries.disease[i], :b]
        present = np.flatnonzero(canaries.events[i].any(axis=0))
        assert (z[present] <= np.median(z)).all()
    again = make_canaries(bundle, site_tensors, m=40, events=12, rng=np.random.default_rng(7))
    assert np.array_equal(again.events, canaries.events) and np.array_equal(again.age, canaries.age)
    # no real patient has a canary's combination of events
    real = site_tensors.events.reshape(site_tensors.n, -1)
    fake = canaries.events.reshape(canaries.n, -1)
    assert (fake @ real.T < fake.sum(axis=1, keepdims=True)).all()
    both = TrajectoryTensors.concat([site_tensors, canaries])
    assert both.n == site_tensors.n + 40 and np.array_equal(both.events[site_tensors.n:], canaries.events)


def test_canaries_need_the_bundles_layout(bundle, site_tensors) -> None:
    narrow = site_tensors.subset(np.arange(3))
    narrow = type(narrow)(**{**narrow.__dict__, "events": narrow.events[:, :, :5],
                             "binary_codes": narrow.binary_codes[:5]})
    with pytest.raises(ValueError, match="do not match the bundle"):
        make_canaries(bundle, narrow, m=4, events=2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="exceeds"):
        make_canaries(bundle, site_tensors, m=4, events=10**6, rng=np.random.default_rng(0))


def test_inclusion_is_secure_by_default_and_seedable() -> None:
    first, source = draw_inclusion(512)
    second, _ = draw_inclusion(512)
    assert source.startswith("os-entropy") and first.dtype == bool and len(first) == 512
    assert not np.array_equal(first, second)  # equal with probability 2⁻⁵¹²
    assert 0.35 < first.mean() < 0.65
    a, source = draw_inclusion(64, seed=5)
    assert source == "seeded (5)" and np.array_equal(a, draw_inclusion(64, seed=5)[0])


def test_scores_use_the_same_draws_for_every_canary(bundle, site_tensors) -> None:
    canaries = make_canaries(bundle, site_tensors, m=6, events=8, rng=np.random.default_rng(1))
    twins = TrajectoryTensors.concat([canaries, canaries.subset(np.array([0]))])  # canary 6 is a copy of canary 0
    model, schedule, tables, layout = build(bundle, guidance="kg",
                                            denoiser={"hidden": 16, "mix_hidden": 16, "blocks": 1})
    trained = TrainedModel(model=model.eval(), schedule=schedule, tables=tables, layout=layout, meta={})
    scores = membership_scores(trained, twins, draws=16, seed=3)
    assert scores.shape == (7,) and np.isfinite(scores).all() and (scores < 0).all()
    assert scores[6] == scores[0] and len(set(scores[:6])) == 6
    assert np.array_equal(scores, membership_scores(trained, twins, draws=16, seed=3))
    assert (membership_scores(trained, twins, draws=16, seed=3, reference=trained) == 0).all()


def test_the_untrained_reference_does_not_depend_on_its_initialisation(bundle, site_tensors) -> None:
    """Its output heads start at zero, so its loss measures a canary's difficulty, not a random draw."""
    canaries = make_canaries(bundle, site_tensors, m=5, events=8, rng=np.random.default_rng(2))
    losses = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model, schedule, tables, layout = build(bundle, guidance="kg")
        untrained = TrainedModel(model=model.eval(), schedule=schedule, tables=tables, layout=layout, meta={})
        losses.append(denoising_losses(untrained, canaries, draws=8, seed=0))
    assert np.allclose(losses[0], losses[1], rtol=1e-5) and len(set(losses[0])) == 5


def test_guesses_take_the_extremes_and_break_ties_by_index() -> None:
    scores = np.array([0.5, 0.9, 0.1, 0.9, 0.3, 0.1])
    assert make_guesses(scores, guesses_in=2, guesses_out=1).tolist() == [0, 1, 0, 1, 0, -1]
    assert make_guesses(scores, guesses_in=1, guesses_out=2).tolist() == [0, 1, -1, 0, 0, -1]
    assert make_guesses(scores, guesses_in=0, guesses_out=6).tolist() == [-1] * 6
    with pytest.raises(ValueError, match="exceed"):
        make_guesses(scores, guesses_in=4, guesses_out=3)


@pytest.mark.parametrize(("changes", "message"), [
    ({"canaries": 0}, "canaries"), ({"guesses_in": 0, "guesses_out": 0}, "guesses"),
    ({"canaries": 10, "guesses_in": 6, "guesses_out": 5}, "exceed"), ({"beta": 1.0}, "beta"), ({"draws": 0}, "draws"),
])
def test_config_is_checked(changes, message) -> None:
    with pytest.raises(ConfigError, match=message):
        EmpiricalAuditConfig(**changes)


# --- the CLI -------------------------------------------------------------------------------

def test_audit_keeps_the_ledger_command_and_adds_empirical(tmp_path) -> None:
    code, out, _ = run("audit", "--help")
    assert code == 0 and "empirical" in out and "ledger" in out and "Example: raregraph" in out
    code, out, _ = run("audit", "empirical", "--help")
    assert code == 0 and "Example: raregraph audit empirical" in out and "--no-dp" in out
    missing = tmp_path / "no-ledgers"
    for args in (["audit", missing, "--keys", tmp_path], ["audit", "--keys", tmp_path, missing],
                 ["audit", "ledger", missing, "--keys", tmp_path]):
        code, _, stderr = run(*args)  # the ledger audit, reached with or without its name
        assert code == 1 and "not a folder of ledgers" in one_line_error(stderr)


def test_empirical_needs_exactly_one_of_epsilon_and_no_dp(demo_bundle, sites, tmp_path) -> None:
    code, _, stderr = run("audit", "empirical", sites / "site-1", "--bundle", demo_bundle, *TINY)
    assert code == 1 and "pass --epsilon" in one_line_error(stderr)
    code, _, stderr = run("audit", "empirical", sites / "site-1", "--bundle", demo_bundle, "--epsilon", "1",
                          "--no-dp", *TINY)
    assert code == 1 and "not both" in one_line_error(stderr)
    code, _, stderr = run("audit", "empirical", sites / "site-1", "--bundle", demo_bundle, "--no-dp",
                          "--canaries", "10", "--guesses", "6")
    assert code == 1 and "exceed the 10 canaries" in one_line_error(stderr)
    code, _, stderr = run("audit", "empirical", sites / "site-1", "--bundle", demo_bundle, "--no-dp", "--delta", "1")
    assert code == 1 and "--delta must be in (0, 1)" in one_line_error(stderr)
    code, _, stderr = run("audit", "empirical", sites / "site-1", "--bundle", demo_bundle, "--no-dp", "--beta", "1.5")
    assert code == 1 and "beta must be in (0, 1)" in one_line_error(stderr)
    (tmp_path / "taken").mkdir()
    code, _, stderr = run("audit", "empirical", sites / "site-1", "--bundle", demo_bundle, "--no-dp",
                          "--out", tmp_path / "taken")
    assert code == 1 and "already exists" in one_line_error(stderr)


def test_a_bound_above_the_accountant_fails_the_audit(demo_bundle, coordinator_key, sites, monkeypatch) -> None:
    """The verdict path, with the training replaced by a result a broken DP-SGD would give."""
    def broken(tensors, bundle, *, config, private, **_kwargs) -> EmpiricalAudit:
        return EmpiricalAudit(
            dp=True, canaries=config.canaries, included=(True, False) * (config.canaries // 2),
            inclusion_source="test", scores=(0.0,) * config.canaries, guesses=(1, -1) * 10 + (0,) * 44, correct=20,
            beta=config.beta, delta=private.delta, epsilon_lower_bound=1.82, accountant_epsilon=1.0,
            cumulative_epsilon=1.0, accountant="rdp", mechanism={}, patients=tensors.n, train={}, config={},
            seconds=0.0)

    monkeypatch.setattr(canary_audit, "run_empirical_audit", broken)  # the command imports it when it runs
    args = ["audit", "empirical", sites / "site-1", "--bundle", demo_bundle, "--pub", coordinator_key[1],
            "--epsilon", "1", *TINY]
    code, out, stderr = run(*args, "-q")
    assert code == 1 and "audit failed" in out and "1.820 > accountant ε 1.000" in out
    assert "throw-away privacy state" in stderr  # no --state: warned
    code, out, stderr = run(*args, "--json")
    assert code == 1 and json.loads(out)["passed"] is False and "audit failed" in stderr


@pytest.mark.slow
def test_without_dp_the_canaries_are_found(demo_bundle, coordinator_key, sites, tmp_path) -> None:
    """The control run: non-private training memorises the canaries, so the bound is clearly positive
    (this is what shows the membership test has the power to catch a broken DP-SGD).

    The inclusion draw comes from OS entropy, so ``correct`` varies between runs: measured over 12
    seeded draws, 400 steps gave 18-20 of 20 (and 15 once in CI), 800 steps gave 20 every time."""
    code, out, _ = run("audit", "empirical", sites / "site-1", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                       "--no-dp", "--steps", "800", *TINY, "--out", tmp_path / "report", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["dp"] is False and doc["passed"] is None and doc["accountant_epsilon"] is None
    assert doc["canaries"] == 64 and len(doc["included"]) == 64 and doc["included_count"] == sum(doc["included"])
    assert doc["inclusion_source"].startswith("os-entropy")
    assert doc["guesses_made"] == 20 and sorted(set(doc["guesses"])) == [-1, 0, 1]
    assert doc["correct"] >= 17, doc["correct"]
    assert doc["epsilon_lower_bound"] > 0.5
    assert doc["epsilon_ceiling"] == epsilon_lower_bound(m=64, guesses=20, correct=20, delta=1e-5, beta=0.05)
    assert doc["epsilon_lower_bound"] == epsilon_lower_bound(m=64, guesses=20, correct=doc["correct"],
                                                             delta=doc["delta"], beta=doc["beta"])
    on_disk = json.loads((tmp_path / "report" / JSON_NAME).read_text())
    assert on_disk["epsilon_lower_bound"] == doc["epsilon_lower_bound"] and "generated_at" in on_disk


@pytest.mark.slow
def test_with_dp_the_bound_stays_below_the_accountant(demo_bundle, coordinator_key, sites, tmp_path) -> None:
    state = tmp_path / "state"
    code, out, stderr = run("audit", "empirical", sites / "site-1", "--bundle", demo_bundle, "--pub",
                            coordinator_key[1], "--epsilon", "1", "--state", state, "--steps", "150", *TINY,
                            "--out", tmp_path / "report")
    assert code == 0, stderr
    assert "audit passed" in out and "training with DP-SGD" in stderr
    doc = json.loads((tmp_path / "report" / JSON_NAME).read_text())
    assert doc["dp"] is True and doc["passed"] is True
    assert doc["epsilon_lower_bound"] <= doc["accountant_epsilon"] <= 1.0
    assert doc["accountant_epsilon"] == pytest.approx(doc["cumulative_epsilon"])  # a fresh state: one training
    assert doc["mechanism"]["steps"] == 150 and doc["mechanism"]["noise_multiplier"] > 1
    assert doc["p_value_at_accountant_epsilon"] >= doc["beta"]
    charged = json.loads((state / "privacy_state.json").read_text())
    assert len(charged["rounds"]) == 1 and charged["rounds"][0]["epsilon"] == pytest.approx(doc["cumulative_epsilon"])
