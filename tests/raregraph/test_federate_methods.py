"""``raregraph federate --method`` and ``--epsilon inf``: every baseline, and the non-private
reference, from the command line to a run folder that ``generate``, ``evaluate`` and ``audit``
accept. Real simulated sites, real DP releases and ledgers, real Flower for the diffusion model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from shared.privacy.statements import NON_PRIVATE_FEDERATED
from shared.baselines.site_charge import STATEMENTS
from shared.bundle import StudyBundle
from shared.ehr.omop_columns import SYNTHETIC_ID_BASE
from shared.privacy.ledger import read_ledger
from shared.runs import RunFolder
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium, write_consortium
from tests.raregraph.test_cli import one_line_error
from tests.raregraph.test_cli import run as cli

BASELINES = ("marginals", "dpgan", "prior")
EPSILON = 4.0
GAN = ("--rounds", "2", "--local-steps", "3", "--batch-size", "8")  # tiny: the DP-GAN's only settings


@pytest.fixture(scope="module")
def sites(tmp_path_factory, demo_bundle, coordinator_key) -> list[Path]:
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    out = tmp_path_factory.mktemp("methods") / "sites"
    write_consortium(simulate_consortium(knowledge_from_bundle(bundle), sites=2, seed=5, min_patients=30,
                                         max_patients=40), out)
    return [out / "site-1", out / "site-2"]


def federate(demo_bundle, coordinator_key, sites, out: Path, *args: str) -> tuple[int, str, str]:
    site_args = [a for s in sites for a in ("--sites", str(s))]
    return cli("federate", "--bundle", demo_bundle, "--pub", coordinator_key[1], *site_args, "--out", out, *args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sites, demo_bundle, coordinator_key) -> dict[str, tuple[Path, dict]]:
    """Each baseline at ε = 4 per site: (run folder, the command's --json output)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in BASELINES:
        code, stdout, stderr = federate(demo_bundle, coordinator_key, sites, root / method, "--method", method,
                                        "--epsilon", str(EPSILON), *(GAN if method == "dpgan" else ()), "--json")
        assert code == 0, stderr
        out[method] = (root / method, json.loads(stdout))
    return out


def generate_and_evaluate(run: Path, demo_bundle, coordinator_key, sites, tmp: Path) -> tuple[dict, dict]:
    """``raregraph generate`` from RUN/model, then ``raregraph evaluate`` of it against site 1:
    (the data card, metrics.json)."""
    code, _, stderr = cli("generate", RunFolder(run).model, "--bundle", demo_bundle, "--pub", coordinator_key[1],
                          "--n", "60", "--out", tmp / "synthetic", "--seed", "3", "-q")
    assert code == 0, stderr
    person = pd.read_csv(tmp / "synthetic" / "person.csv")
    assert len(person) == 60 and person["person_id"].min() >= SYNTHETIC_ID_BASE
    code, _, stderr = cli("evaluate", "--real", sites[0], "--synthetic", tmp / "synthetic", "--bundle", demo_bundle,
                          "--pub", coordinator_key[1], "--out", tmp / "report", "-q")
    assert code == 0, stderr
    return (json.loads((tmp / "synthetic" / "data_card.json").read_text()),
            json.loads((tmp / "report" / "metrics.json").read_text()))


@pytest.mark.parametrize("method", BASELINES)
def test_a_baseline_runs_from_the_command_and_generate_and_evaluate_accept_it(method, runs, sites, demo_bundle,
                                                                              coordinator_key, tmp_path):
    run, printed = runs[method]
    meta = json.loads((RunFolder(run).model / "model.json").read_text())
    assert (meta["format"], meta["method"]) == ("raregraph-baseline", method)
    assert printed["method"] == method and sorted(printed["sites"]) == ["site-1", "site-2"]
    card, metrics = generate_and_evaluate(run, demo_bundle, coordinator_key, sites, tmp_path)
    assert card["model"]["method"] == method and card["privacy"]["statement"] == STATEMENTS[method]
    assert card["counts"]["patients"] == 60 and card["counts"]["events"] > 0
    assert 0.0 <= metrics["plausibility"]["phenotype_pairs_supported"] <= 1.0
    assert math.isfinite(metrics["fidelity"]["mmd2"])
    rows = {site: rows[0] for site, rows in json.loads(RunFolder(run).privacy.read_text())["sites"].items()}
    if method == "prior":  # reads no patient: nothing spent, no ledger, nothing to audit
        assert printed["audit"] is None and not RunFolder(run).ledger.exists()
        assert all(r["epsilon"] == 0.0 and r["ledger"] is False for r in rows.values())
        return
    # every site's one charge is in its signed ledger; the auditor's independent accountant agrees
    assert printed["audit"]["ok"]
    code, stdout, stderr = cli("audit", RunFolder(run).ledger, "--keys", RunFolder(run).site_keys, "--json")
    assert code == 0, stderr
    audit = json.loads(stdout)
    assert audit["ok"] and sorted(audit["sites"]) == ["site-1", "site-2"]
    for site, row in rows.items():
        charges = [e for e in read_ledger(RunFolder(run).ledger / f"{site}.jsonl") if e.is_charge]
        assert len(charges) == 1 and charges[0].epsilon == row["epsilon"] and charges[0].kind == "train"
        assert 0.9 * EPSILON < row["epsilon"] <= EPSILON and row["ledger"] is True
        mechanism = charges[0].mechanism
        if method == "marginals":  # one Gaussian release: q = 1, one step, sensitivity 1
            assert (mechanism.sample_rate, mechanism.steps, mechanism.clip_norm) == (1.0, 1, 1.0)
        else:  # DP-SGD on the discriminator for 2 rounds × 3 steps at q = 8 / n
            assert mechanism.steps == 6 and mechanism.sample_rate == pytest.approx(8 / row["num-examples"])


def test_a_second_method_on_the_same_state_composes_with_the_first(runs, sites, demo_bundle, coordinator_key,
                                                                   tmp_path):
    """The DP-GAN on the state the marginals charged: each site's ε goes on from what the release
    spent (σ calibrated against what is left), never restarts, never passes the budget."""
    first_run, first = runs["marginals"]
    code, stdout, stderr = federate(demo_bundle, coordinator_key, sites, tmp_path / "run", "--method", "dpgan",
                                    "--epsilon", str(EPSILON), *GAN, "--state-root", RunFolder(first_run).state,
                                    "--json")
    assert code == 0, stderr
    second = json.loads(stdout)
    assert second["audit"]["ok"]
    for site in ("site-1", "site-2"):
        before, after = first["sites"][site][0], second["sites"][site][0]
        assert before["epsilon"] < after["epsilon"] <= EPSILON
        fresh = runs["dpgan"][1]["sites"][site][0]  # the same fit on a fresh state
        assert after["noise-multiplier"] > fresh["noise-multiplier"]
        kinds = [e.kind for e in read_ledger(RunFolder(tmp_path / "run").ledger / f"{site}.jsonl") if e.is_charge]
        assert kinds == ["train", "train"]  # the release, then the GAN: one chain


@pytest.mark.parametrize(("args", "named"), [
    (("--method", "marginals", "--guidance", "none", "--lr", "0.01"), "--guidance, --lr: not a setting of method "
                                                                      "'marginals'"),
    (("--method", "prior", "--rounds", "3"), "--rounds: not a setting of method 'prior'"),
    (("--method", "gan"), "--method: must be one of diffusion, marginals, dpgan, prior, got 'gan'"),
    (("--epsilon", "inf", "--evaluate-fraction", "0.5"), "a DP evaluation has no place in a run without DP"),
])
def test_a_setting_the_method_does_not_read_is_refused_before_anything_is_written(args, named, sites, demo_bundle,
                                                                                 coordinator_key, tmp_path):
    epsilon = () if "--epsilon" in args else ("--epsilon", "4")
    code, _, stderr = federate(demo_bundle, coordinator_key, sites, tmp_path / "run", *epsilon, *args)
    assert code == 1 and named in one_line_error(stderr)
    assert not (tmp_path / "run").exists()


def test_generate_refuses_diffusion_sampler_options_and_a_damaged_baseline_in_one_line(runs, demo_bundle,
                                                                                        coordinator_key, tmp_path):
    model = RunFolder(runs["marginals"][0]).model
    base = ("generate", model, "--bundle", demo_bundle, "--pub", coordinator_key[1], "--n", "5", "-q")
    code, _, stderr = cli(*base, "--out", tmp_path / "a", "--steps", "20")
    assert code == 1 and "--steps, --guidance-scale and --eta set the diffusion model's sampler" in one_line_error(stderr)
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "model.json").write_bytes((model / "model.json").read_bytes())
    code, _, stderr = cli("generate", broken, *base[2:], "--out", tmp_path / "b")
    assert code == 1 and "marginals.npz missing from the model folder" in one_line_error(stderr)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_marginals_without_dp_are_a_labelled_reference(sites, demo_bundle, coordinator_key, tmp_path):
    code, stdout, stderr = federate(demo_bundle, coordinator_key, sites, tmp_path / "run", "--method", "marginals",
                                    "--epsilon", "inf")
    assert code == 0, stderr
    assert "NOT differentially private" in stderr and "nothing for `raregraph audit` to check" in stdout
    privacy = json.loads(RunFolder(tmp_path / "run").privacy.read_text())
    assert all(rows[0]["epsilon"] == math.inf and rows[0]["ledger"] is False for rows in privacy["sites"].values())
    assert not RunFolder(tmp_path / "run").ledger.exists()
    assert not list(RunFolder(tmp_path / "run").state.glob("*/privacy/ledger.jsonl"))  # no budget was touched
    card, _ = generate_and_evaluate(tmp_path / "run", demo_bundle, coordinator_key, sites, tmp_path)
    assert card["privacy"]["statement"] == STATEMENTS[None]
    code, stdout, stderr = cli("release", tmp_path / "run", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                               "--n", "40", "--out", tmp_path / "release", "--json")
    assert code == 1 and not (tmp_path / "release").exists()  # never released, whatever else passes
    dp = next(c for c in json.loads(stdout)["checks"] if c["gate"] == "sites_with_dp")
    assert dp["status"] == "fail" and dp["measured"] == 0.0 and "site-1, site-2" in dp["note"]


def test_a_baseline_run_is_released_behind_the_same_gate(runs, demo_bundle, coordinator_key, tmp_path):
    run, _ = runs["marginals"]
    code, stdout, stderr = cli("release", run, "--bundle", demo_bundle, "--pub", coordinator_key[1], "--n", "60",
                               "--out", tmp_path / "release", "--json")
    result = json.loads(stdout)
    checks = {c["gate"]: c["status"] for c in result["checks"]}
    assert checks["sites_with_dp"] == "pass" and checks["membership_auroc"] == "not evaluated"
    # DP marginals know no graph facts: their patients carry the other sex's terms and adverse events
    # before any drug, so the default gate refuses them, and nothing is written
    assert code == 1 and not (tmp_path / "release").exists(), stderr
    assert "fail" in {checks[g] for g in ("wrong_sex_patients", "adverse_events_before_any_drug",
                                          "phenotype_pairs_supported", "phenotype_pairs_negated",
                                          "lab_values_outside_limits")}
    (tmp_path / "gate.toml").write_text("[plausibility]\nmin-phenotype-pairs-supported = 0.0\n"
                                        "max-phenotype-pairs-negated = 1.0\nmax-wrong-sex-patients = 1.0\n"
                                        "max-lab-values-outside-limits = 1.0\nmax-adverse-events-before-any-drug = 1.0\n")
    code, _, stderr = cli("release", run, "--bundle", demo_bundle, "--pub", coordinator_key[1], "--n", "60",
                          "--out", tmp_path / "release", "--gate", tmp_path / "gate.toml", "-q")
    assert code == 0, stderr
    card = json.loads((tmp_path / "release" / "data_card.json").read_text())
    assert card["method"] == "baseline: marginals" and card["model"]["baseline"] is True
    assert card["release"]["gate_loosened"] and "independent draws" in (tmp_path / "release" / "report.html").read_text()


@pytest.mark.slow
def test_the_diffusion_model_without_dp_federates_on_flower_and_says_it_is_not_private(sites, demo_bundle,
                                                                                       coordinator_key, tmp_path):
    """Flower's simulation engine, plain SGD at both sites: ε = ∞ recorded, no ledger, no privacy
    state opened, and the model's (so every data card's) statement says it is not private."""
    code, stdout, stderr = federate(demo_bundle, coordinator_key, sites, tmp_path / "run", "--epsilon", "inf",
                                    "--rounds", "1", "--local-steps", "2", "--batch-size", "8",
                                    "--pretrain-steps", "2", "--eval-per-disease", "0")
    assert code == 0, stderr
    assert "NOT differentially private" in stderr
    folder = RunFolder(tmp_path / "run")
    privacy = json.loads(folder.privacy.read_text())
    assert sorted(privacy["sites"]) == ["site-1", "site-2"]
    assert all(r["epsilon"] == math.inf and not r["refused"] for rows in privacy["sites"].values() for r in rows)
    assert not folder.ledger.exists() and not list(folder.state.glob("*/privacy/*"))
    assert json.loads((folder.model / "model.json").read_text())["privacy"]["statement"] == NON_PRIVATE_FEDERATED
    card, _ = generate_and_evaluate(folder.root, demo_bundle, coordinator_key, sites, tmp_path)
    assert card["privacy"]["statement"] == NON_PRIVATE_FEDERATED
