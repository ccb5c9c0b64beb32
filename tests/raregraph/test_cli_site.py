"""One site through the real CLI: simulate, validate, train, generate, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from shared.ehr.cohort import SYNTHETIC_ID_BASE
from tests.raregraph.test_cli import one_line_error, run


@pytest.fixture(scope="module")
def sites(tmp_path_factory, demo_bundle, coordinator_key) -> Path:
    out = tmp_path_factory.mktemp("consortium") / "sites"
    code, stdout, stderr = run("data", "simulate", "--sites", "2", "--out", out, "--seed", "4", "--max-patients", "60",
                               "--bundle", demo_bundle, "--pub", coordinator_key[1], "--json")
    assert code == 0, stderr
    assert [s["site"] for s in json.loads(stdout)["sites"]] == ["site-1", "site-2"]
    return out


def test_simulated_sites_have_both_formats(sites) -> None:
    assert (sites / "site-1" / "person.csv").is_file() and (sites / "site-2" / "person.parquet").is_file()
    assert json.loads((sites / "simulation.json").read_text())["seed"] == 4


def test_validate_reports_vocabulary_and_grid(sites, demo_bundle, coordinator_key) -> None:
    code, stdout, _ = run("data", "validate", sites / "site-2", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                          "--json")
    report = json.loads(stdout)
    assert code == 0 and report["patients"] >= 30
    assert report["vocabulary"]["events_outside_vocabulary"] > 0
    assert report["tensors"]["patients_kept"] == report["patients"]
    code, stdout, stderr = run("data", "validate", sites / "site-1")
    assert code == 0 and "patients" in stdout


def test_validate_bad_row_and_skip(sites, tmp_path) -> None:
    import shutil

    site = tmp_path / "site"
    shutil.copytree(sites / "site-1", site)
    frame = pd.read_csv(site / "measurement.csv", dtype=str, keep_default_na=False)
    frame.loc[4, "measurement_date"] = "31/12/2020"
    frame.to_csv(site / "measurement.csv", index=False)
    code, _, stderr = run("data", "validate", site)
    assert code == 1
    assert "measurement.csv:6: column measurement_date: '31/12/2020' is not a date" in one_line_error(stderr)
    code, stdout, _ = run("data", "validate", site, "--skip-bad-rows", "--json")
    assert code == 0 and json.loads(stdout)["skipped_rows"] == {"bad date": 1}


def test_train_generate_evaluate(sites, demo_bundle, coordinator_key, tmp_path) -> None:
    b = ["--bundle", demo_bundle, "--pub", coordinator_key[1]]
    code, stdout, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "model", "--steps", "40",
                               "--seed", "1", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["steps"] == 40 and (tmp_path / "model" / "weights.pt").is_file()
    code, stdout, stderr = run("generate", tmp_path / "model", *b, "--n", "25", "--out", tmp_path / "syn",
                               "--steps", "10", "--json")
    assert code == 0, stderr
    card = json.loads(stdout)
    assert card["counts"]["patients"] == 25 and (tmp_path / "syn" / "data_card.json").is_file()
    persons = pd.read_csv(tmp_path / "syn" / "person.csv")
    assert SYNTHETIC_ID_BASE <= persons["person_id"].min() and persons["person_id"].max() < 2**31  # CDM integer
    code, stdout, stderr = run("evaluate", "--real", sites / "site-2", "--synthetic", tmp_path / "syn", *b,
                               "--holdout", sites / "site-1", "--out", tmp_path / "report", "--json")
    assert code == 0, stderr
    metrics = json.loads(stdout)
    assert metrics["counts"]["synthetic"] == 25 and 0 <= metrics["privacy"]["dcr_membership_auroc"] <= 1
    assert (tmp_path / "report" / "report.md").is_file()


def test_train_refuses_a_bad_guidance_and_warns_without_a_pinned_key(sites, demo_bundle, coordinator_key,
                                                                      tmp_path) -> None:
    code, _, stderr = run("train", sites / "site-1", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                          "--out", tmp_path / "m", "--guidance", "graph")
    assert code == 1 and "--guidance must be one of kg, none, learned" in one_line_error(stderr)
    assert not (tmp_path / "m").exists()
    code, _, stderr = run("data", "validate", sites / "site-1", "--bundle", demo_bundle)
    assert code == 0 and "was not checked against a pinned coordinator key" in " ".join(stderr.split())


def test_generate_needs_the_training_bundle(sites, demo_bundle, coordinator_key, tmp_path) -> None:
    code, _, stderr = run("generate", tmp_path / "nothing", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                          "--n", "5", "--out", tmp_path / "syn", "-q")
    assert code == 1 and "not a model folder" in one_line_error(stderr)


def test_train_with_epsilon_composes_on_the_site_state(sites, demo_bundle, coordinator_key, tmp_path) -> None:
    b = ["--bundle", demo_bundle, "--pub", coordinator_key[1]]
    common = ["--steps", "4", "--epsilon", "4", "--state", tmp_path / "state", "--json"]
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m1", *common)
    assert code == 0, stderr
    first = json.loads((tmp_path / "m1" / "model.json").read_text())["privacy"]
    assert first["mechanism"] == "DP-SGD" and 0 < first["epsilon"] <= 4.0
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m2", *common)
    assert code == 0, stderr
    second = json.loads((tmp_path / "m2" / "model.json").read_text())["privacy"]
    assert first["epsilon"] < second["epsilon"] <= 4.0  # the budget keeps composing, never resets
    assert second["noise_multiplier"] > first["noise_multiplier"]
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m3", "--steps", "4", "--epsilon", "4")
    assert code == 1 and "--epsilon needs --state" in one_line_error(stderr)
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m4", *common, "--validation-share", "0.2")
    assert code == 1 and "--validation-share is for non-private training" in one_line_error(stderr)
    assert not (tmp_path / "m4").exists()


def test_single_site_dp_keeps_a_signed_ledger_and_refuses_a_reset_or_edited_state(sites, demo_bundle,
                                                                                  coordinator_key, tmp_path) -> None:
    """Deleting privacy_state.json must not reset the budget: the signed ledger beside it is the
    witness; an edited state (a past σ raised, consistently) is refused too."""
    from shared.privacy.ledger import read_ledger

    b = ["--bundle", demo_bundle, "--pub", coordinator_key[1]]
    state = tmp_path / "state"
    common = ["--steps", "4", "--epsilon", "4", "--state", state, "--json"]
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m1", *common)
    assert code == 0, stderr
    entries = read_ledger(state / "ledger.jsonl")
    first = json.loads((tmp_path / "m1" / "model.json").read_text())["privacy"]
    assert [(e.seq, e.round, e.kind) for e in entries] == [(0, 1, "train")]
    assert entries[0].epsilon == first["epsilon"] and first["ledger"]["seq"] == 0
    assert (state / "identity" / "site.key").is_file()
    saved = (state / "privacy_state.json").read_text()

    (state / "privacy_state.json").unlink()  # a lost state file: ε must not start again from 0
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m2", *common)
    assert code == 1 and "the state was reset" in one_line_error(stderr)
    assert not (tmp_path / "m2").exists()

    doc = json.loads(saved)
    doc["rounds"][0]["noise_multiplier"] = 1000.0
    doc["accountant"]["history"] = [[1000.0, *doc["accountant"]["history"][0][1:]]]
    (state / "privacy_state.json").write_text(json.dumps(doc))
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m3", *common)
    assert code == 1 and "the state file was edited" in one_line_error(stderr)

    (state / "privacy_state.json").write_text(saved)  # restored from a backup: training goes on
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m4", *common)
    assert code == 0, stderr
    assert [e.seq for e in read_ledger(state / "ledger.jsonl")] == [0, 1]


def test_a_lost_privacy_folder_is_refused_by_the_key_and_restored_from_a_ledger_copy(sites, demo_bundle,
                                                                                    coordinator_key, tmp_path) -> None:
    """State and ledger both gone (the key kept): the key-use record beside the key refuses a
    fresh start; `raregraph privacy restore` rebuilds the folder from a copy of the ledger, never
    from an older copy, and the budget goes on from where it was."""
    import shutil

    from shared.privacy.ledger import read_ledger

    b = ["--bundle", demo_bundle, "--pub", coordinator_key[1]]
    state = tmp_path / "state"
    key = state / "identity" / "site.key"
    common = ["--steps", "4", "--epsilon", "4", "--state", state, "--json"]
    assert run("train", sites / "site-2", *b, "--out", tmp_path / "m1", *common)[0] == 0
    shutil.copy(state / "ledger.jsonl", tmp_path / "old-copy.jsonl")
    assert run("train", sites / "site-2", *b, "--out", tmp_path / "m2", *common)[0] == 0
    shutil.copy(state / "ledger.jsonl", tmp_path / "copy.jsonl")
    spent = read_ledger(state / "ledger.jsonl")[-1].epsilon
    assert json.loads(key.with_name("site.key-use.json").read_text())["ledgers"]  # the key's record of its ledgers

    (state / "ledger.jsonl").unlink()
    (state / "privacy_state.json").unlink()
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m3", *common)
    line = one_line_error(stderr)
    assert code == 1 and "this site's key has signed its ledger" in line and "up to seq 1" in line
    assert "raregraph privacy restore" in line
    assert not (tmp_path / "m3").exists() and not (state / "privacy_state.json").exists()

    code, _, stderr = run("privacy", "restore", tmp_path / "old-copy.jsonl", "--into", state, "--site-key", key)
    assert code == 1 and "ends at seq 0" in one_line_error(stderr)  # an older copy would forget a charge
    assert not (state / "privacy_state.json").exists() and not (state / "ledger.jsonl").exists()
    code, _, stderr = run("privacy", "restore", tmp_path / "copy.jsonl", "--into", state, "--site-key", tmp_path / "nokey")
    assert code == 1 and "nokey" in one_line_error(stderr)

    code, stdout, stderr = run("privacy", "restore", tmp_path / "copy.jsonl", "--into", state, "--site-key", key,
                               "--json")
    assert code == 0, stderr
    done = json.loads(stdout)
    assert done["entries"] == 2 and done["epsilon"] == spent and done["budget_epsilon"] == 4.0
    code, _, stderr = run("privacy", "restore", tmp_path / "copy.jsonl", "--into", state, "--site-key", key)
    assert code == 1 and "restoring never overwrites" in one_line_error(stderr)

    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m4", *common)
    assert code == 0, stderr
    after = read_ledger(state / "ledger.jsonl")
    assert [e.seq for e in after] == [0, 1, 2] and after[-1].epsilon > spent


def test_a_raised_budget_must_be_made_explicit(sites, demo_bundle, coordinator_key, tmp_path) -> None:
    from shared.privacy.ledger import read_ledger

    b = ["--bundle", demo_bundle, "--pub", coordinator_key[1], "--steps", "4", "--state", tmp_path / "state", "--json"]
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m1", "--epsilon", "4")
    assert code == 0, stderr
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m2", "--epsilon", "50")
    assert code == 1 and "a budget is raised only on purpose" in one_line_error(stderr)
    assert not (tmp_path / "m2").exists()
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m3", "--epsilon", "50", "--raise-budget")
    assert code == 0, stderr
    assert json.loads((tmp_path / "m3" / "model.json").read_text())["privacy"]["budget_epsilon"] == 50.0
    entries = read_ledger(tmp_path / "state" / "ledger.jsonl")  # the raise is a signed entry of its own
    assert [(e.kind, e.budget_epsilon) for e in entries] == [("train", 4.0), ("budget", 50.0), ("train", 50.0)]
    assert entries[1].previous_budget == {"epsilon": 4.0, "delta": 1e-5}


def test_with_no_ledger_copy_left_an_auditor_carries_the_epsilon_forward(sites, demo_bundle, coordinator_key,
                                                                         tmp_path) -> None:
    """The whole flow through the CLI: the coordinator's record holds the lost head, the auditor signs
    the acknowledgement, the site starts a new folder from it and trains on, and the audit passes
    only with the auditor's key."""
    from shared.privacy.ledger import read_ledger
    from shared.privacy.ledger.consortium import ConsortiumRecord

    b = ["--bundle", demo_bundle, "--pub", coordinator_key[1], "--steps", "4", "--state", tmp_path / "state", "--json"]
    state, key = tmp_path / "state", tmp_path / "state" / "identity" / "site.key"
    assert run("train", sites / "site-2", *b, "--out", tmp_path / "m1", "--epsilon", "4")[0] == 0
    spent = read_ledger(state / "ledger.jsonl")[-1].epsilon
    ConsortiumRecord(tmp_path / "consortium.json").advance(read_ledger(state / "ledger.jsonl"), run_id="single")
    (state / "ledger.jsonl").unlink()
    (state / "privacy_state.json").unlink()
    assert run("keys", "new", "--out", tmp_path / "auditor")[0] == 0

    ack = tmp_path / "ack.json"
    args = ["--record", tmp_path / "consortium.json", "--reason", "disk replaced, no backup", "--key",
            tmp_path / "auditor.key", "--out", ack]
    code, _, stderr = run("audit", "carry-forward", "--site", "nobody", *args)
    assert code == 1 and "site nobody: 0 datasets match" in one_line_error(stderr) and not ack.exists()
    code, stdout, stderr = run("audit", "carry-forward", "--site", "site", *args)
    assert code == 0, stderr
    assert f"carries ε = {spent:.4g}" in stdout

    carry = ["privacy", "carry-forward", ack, "--auditor-pub", tmp_path / "auditor.pub", "--into", state,
             "--site-key", key, "--epsilon", "8"]
    code, _, stderr = run(*carry, "--delta", "1e-5")
    assert code == 1 and "leaves nothing after the carried" in one_line_error(stderr)
    assert not (state / "privacy_state.json").exists() and not (state / "ledger.jsonl").exists()
    code, _, stderr = run(*carry, "--delta", "2e-5")
    assert code == 0, stderr
    code, _, stderr = run("train", sites / "site-2", *b, "--out", tmp_path / "m2", "--epsilon", "8", "--delta", "2e-5")
    assert code == 0, stderr
    entries = read_ledger(state / "ledger.jsonl")
    assert [e.kind for e in entries] == ["carry", "train"] and entries[1].epsilon > spent

    ledgers, keys = tmp_path / "ledgers", tmp_path / "site-keys"
    ledgers.mkdir(), keys.mkdir()
    (ledgers / "site.jsonl").write_bytes((state / "ledger.jsonl").read_bytes())
    (keys / "site.pub").write_bytes(key.with_suffix(".pub").read_bytes())
    code, _, _ = run("audit", ledgers, "--keys", keys, "--quiet")
    assert code == 1
    code, stdout, stderr = run("audit", ledgers, "--keys", keys, "--quiet", "--auditor-pub", tmp_path / "auditor.pub")
    assert code == 0, stdout + stderr


def test_train_refuses_a_bad_clip_norm_and_leaves_no_state(sites, demo_bundle, coordinator_key, tmp_path) -> None:
    code, _, stderr = run("train", sites / "site-2", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                          "--out", tmp_path / "m", "--steps", "4", "--epsilon", "4", "--state", tmp_path / "state",
                          "--clip-norm", "0")
    assert code == 1 and "clip norm must be a positive number" in one_line_error(stderr)
    assert not (tmp_path / "state").exists() and not (tmp_path / "m").exists()


def test_train_with_validation_keeps_the_best_checkpoint(sites, demo_bundle, coordinator_key, tmp_path) -> None:
    code, _, stderr = run("train", sites / "site-2", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                          "--out", tmp_path / "m", "--steps", "40", "--validation-share", "0.2", "--json")
    assert code == 0, stderr
    picked = json.loads((tmp_path / "m" / "model.json").read_text())["training"]["validation"]
    assert picked["share"] == 0.2 and picked["patients"] > 0 and picked["best_step"] == 40  # one check at the end
