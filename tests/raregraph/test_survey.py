"""The vocabulary survey end to end, as a coordinator runs it: `raregraph survey` on Flower's
simulation engine over sites from the independent simulator, `raregraph bundle grow` from its
survey.json, then `raregraph federate` on the grown bundle with the same site states, so that each
site's ledger composes the survey's charge with its training."""

from __future__ import annotations

import json

import pytest

from shared.bundle import StudyBundle
from shared.privacy.ledger import parse_entries
from shared.runs import RunFolder
from tests.raregraph.test_cli import run as cli

pytestmark = pytest.mark.slow


def test_survey_grow_and_train_on_the_grown_bundle(tmp_path, real_graph_dir, demo_bundle, coordinator_key) -> None:
    key, pub = coordinator_key
    code, _, stderr = cli("data", "simulate", "--sites", "2", "--out", tmp_path / "sites", "--seed", "3", "--bundle",
                          demo_bundle, "--pub", pub, "--min-patients", "40", "--max-patients", "60",
                          "--simulator", "independent")
    assert code == 0, stderr
    sites = [x for s in ("site-1", "site-2") for x in ("--sites", tmp_path / "sites" / s)]
    state = tmp_path / "state"
    code, stdout, stderr = cli("survey", "--bundle", demo_bundle, "--pub", pub, *sites, "--epsilon", "6",
                               "--state-root", state, "--out", tmp_path / "survey", "--json")
    assert code == 0, stderr
    header = json.loads(stdout)
    assert header["audit"]["ok"] and sorted(header["sites"]) == ["site-1", "site-2"]
    survey = json.loads(RunFolder(tmp_path / "survey").survey.read_text())
    assert survey["bundle_sha256"] == StudyBundle.load(demo_bundle, pub).bundle_hash
    assert 40 < survey["patients"] < 200  # 80-120 study patients, estimated from the noisy time shares
    for site, row in survey["sites"].items():
        assert 0.9 < row["epsilon_after"] < 1.1  # σ = 4 alone: ε ≈ 1.0

    code, stdout, stderr = cli("bundle", "grow", real_graph_dir, "--bundle", demo_bundle, "--pub", pub, "--survey",
                               RunFolder(tmp_path / "survey").survey, "--sign-key", key, "--out", tmp_path / "grown",
                               "--json")
    assert code == 0, stderr
    growth = json.loads(stdout)["growth"]
    grown = StudyBundle.load(tmp_path / "grown", pub)
    assert grown.growth() == growth and growth["survey_run"] == survey["run_id"]
    assert growth["expected_false_codes"] == pytest.approx(1.0, abs=0.01)
    assert grown.study["time"]["windows"] >= StudyBundle.load(demo_bundle, pub).study["time"]["windows"]

    code, stdout, stderr = cli("federate", "--bundle", tmp_path / "grown", "--pub", pub, *sites, "--epsilon", "6",
                               "--rounds", "1", "--local-steps", "2", "--batch-size", "8", "--pretrain-steps", "5",
                               "--eval-per-disease", "0", "--state-root", state, "--out", tmp_path / "run", "--json")
    assert code == 0, stderr
    for site in ("site-1", "site-2"):
        entries = parse_entries((RunFolder(tmp_path / "run").ledger / f"{site}.jsonl").read_text())
        kinds = [(e.run_id, e.kind) for e in entries]
        assert kinds[0] == (survey["run_id"], "histogram")  # the survey's charge, then this run's
        assert [k for _, k in kinds[1:]] == ["histogram", "train"]
        assert entries[-1].epsilon > survey["sites"][site]["epsilon_after"]  # composed, never reset
