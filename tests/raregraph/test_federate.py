"""Federated DP training on Flower's real simulation engine (Ray) with real Opacus: no mocks."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import tomllib
import urllib.request
import warnings
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp

from client.app import make_app as make_client_app
from kg.bundle import make_bundle
from kg.study import parse_study
from deploy.processes import free_port
from deploy.simulation import publish_site_keys, run_simulated, site_nodes
from shared.privacy.audit.audit import audit_run
from server.config import RunConfig
from shared import protocol as P
from shared.bundle import StudyBundle
from shared.ehr.omop import read_omop
from shared.runs import RunFolder
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium, write_consortium
from shared.errors import RareGraphError
from shared.privacy.ledger import export_entries, ledger_path, parse_entries, read_ledger
from shared.privacy.budget import epsilon_for
from shared.privacy.state import PrivacyState
from shared.signing.keys import load_private_key, new_keypair
from tests.raregraph.test_cli import run as cli

pytestmark = pytest.mark.slow
FAST = {"local_steps": 2, "lr": 1e-3, "pretrain_steps": 10, "pretrain_patients": 64}


@pytest.fixture(scope="module")
def sites(tmp_path_factory, demo_bundle, coordinator_key) -> list[Path]:
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    out = tmp_path_factory.mktemp("fed") / "sites"
    write_consortium(simulate_consortium(knowledge_from_bundle(bundle), sites=3, seed=11, min_patients=30,
                                         max_patients=45), out)
    return [out / f"site-{i}" for i in (1, 2, 3)]


def nodes(sites, state_root, pub, epsilon=20.0):
    return site_nodes(sites, state_root=state_root, pub=pub, epsilon=epsilon, delta=1e-5, clip_norm=1.0,
                      batch_size=8, noise_multiplicity=1)


def run_config(tmp: Path, bundle: Path, pub: Path, rounds: int, **kw) -> RunConfig:
    return RunConfig(run_dir=tmp, bundle_path=bundle, bundle_pub=pub, rounds=rounds, min_sites=1, **{**FAST, **kw})


def faulty_app(honest: ClientApp) -> ClientApp:
    """A ClientApp that answers the bundle and suite queries as ``honest`` does; the test adds
    its own ``train`` handler to play a faulty site."""
    faulty = ClientApp()
    for action in (P.BUNDLE_ACTION, P.SUITE_ACTION):
        faulty.query(action)(lambda msg, context: honest(msg, context))
    return faulty


def test_three_sites_train_with_dp_and_the_model_generates_omop(sites, demo_bundle, coordinator_key, tmp_path):
    """Two sites also release a DP evaluation each round (charged); the third declines. Every
    charge is in the site's signed ledger, the server's copy verifies, and ε recomputed with
    an independent accountant agrees with the one that trained within 1 %."""
    site_cfgs = [dataclasses.replace(n, eval_noise_multiplier=5.0 if i < 2 else 0.0)
                 for i, n in enumerate(nodes(sites, tmp_path / "state", coordinator_key[1], epsilon=6.0))]
    keys = publish_site_keys(site_cfgs, RunFolder(tmp_path / "run").site_keys)
    run = run_config(tmp_path / "run", demo_bundle, coordinator_key[1], rounds=2, evaluate_fraction=1.0,
                     site_keys=keys)
    pythonpath = os.environ.get("PYTHONPATH")
    privacy = run_simulated(run, site_cfgs, show_progress=False)
    # flwr's Ray backend sets PYTHONPATH to this interpreter's sys.path; left set, it broke the
    # system Python of every later child process (Debian's docker-compose in the container tests)
    assert os.environ.get("PYTHONPATH") == pythonpath
    assert set(privacy["sites"]) == {"site-1", "site-2", "site-3"}
    for site, rows in privacy["sites"].items():
        eps = [r["epsilon"] for r in rows]
        assert all(a < b for a, b in zip(eps, eps[1:])) and 0 < eps[0] and eps[-1] <= 6.0  # every charge adds
        train = [r for r in rows if r["kind"] == "train"]
        assert len(train) == 2 and all(r["refused"] == 0 and r["steps"] == 2 for r in train)
        assert [r["round"] for r in rows if r["kind"] == "evaluate"] == ([1, 2] if site != "site-3" else [])
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["round"] == 2 and all(r["aggregated"] == 3 for r in state["rounds"])
    for r in state["rounds"]:
        assert r["evaluate"]["eval-sites"] == 2 and r["evaluate"]["eval-count-std"] > 0
    recorded = PrivacyState.read(tmp_path / "state" / "site-1" / "privacy")
    assert recorded.epsilon() == pytest.approx(privacy["sites"]["site-1"][-1]["epsilon"])
    for site, rows in privacy["sites"].items():
        held = read_ledger(ledger_path(tmp_path / "run", site))
        assert [(e.round, e.kind, e.epsilon) for e in held] == [(r["round"], r["kind"], r["epsilon"]) for r in rows]
        assert all(r["ledger"] for r in rows if r["kind"] == "train")
    audit = audit_run(tmp_path / "run")
    assert audit.ok, audit.all_problems
    checks = [c for site in audit.sites for c in site.entries]
    assert len(checks) == 10 and all(abs(c.independent_epsilon - c.epsilon) <= 0.01 * c.epsilon for c in checks)
    code, _, stderr = cli("generate", tmp_path / "run" / "model", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                          "--n", "12", "--steps", "8", "--out", tmp_path / "syn")
    assert code == 0, stderr
    cohort, report = read_omop(tmp_path / "syn", synthetic=True)
    assert report.patients == 12
    card = json.loads((tmp_path / "syn" / "data_card.json").read_text())
    assert "DP-SGD" in card["privacy"]["statement"] and set(card["privacy"]["epsilon_per_site"]) == {"site-1", "site-2", "site-3"}


def test_a_restart_keeps_composing(sites, demo_bundle, coordinator_key, tmp_path):
    state = tmp_path / "state"
    for part in ("a", "b"):
        # a 4-round participation, stopped after 2 and continued by a new run over the same state
        privacy = run_simulated(run_config(tmp_path / part, demo_bundle, coordinator_key[1], rounds=2,
                                           planned_rounds=4),
                                nodes(sites[:2], state, coordinator_key[1], epsilon=5.0), show_progress=False)
    for site, rows in privacy["sites"].items():
        first = json.loads((tmp_path / "a" / "privacy.json").read_text())["sites"][site]
        assert rows[0]["epsilon"] > first[-1]["epsilon"]  # run b starts where run a stopped
        sigma, q = rows[-1]["noise-multiplier"], rows[-1]["sample-rate"]
        assert first[-1]["noise-multiplier"] == sigma  # calibrated once, kept across runs
        four_rounds = epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=4 * FAST["local_steps"], delta=1e-5)
        assert rows[-1]["epsilon"] == pytest.approx(four_rounds, rel=1e-9)
        # the site's ledger spans both runs; run b's server copy holds all of it
        held = read_ledger(ledger_path(tmp_path / "b", site))
        assert [e.seq for e in held] == [0, 1, 2, 3] and held[-1].epsilon == rows[-1]["epsilon"]
        assert len({e.run_id for e in held}) == 2


def test_a_site_out_of_budget_sits_out_and_the_others_go_on(sites, demo_bundle, coordinator_key, tmp_path):
    state = tmp_path / "state"
    # site-3 plans a one-round participation and spends its whole budget on it
    run_simulated(run_config(tmp_path / "first", demo_bundle, coordinator_key[1], rounds=1),
                  nodes(sites[2:], state, coordinator_key[1], epsilon=3.0), show_progress=False)
    privacy = run_simulated(run_config(tmp_path / "second", demo_bundle, coordinator_key[1], rounds=2),
                            nodes(sites, state, coordinator_key[1], epsilon=3.0), show_progress=False)
    rows = privacy["sites"]
    assert [r["refused"] for r in rows["site-3"]] == [1, 1]
    assert all(r["refused"] == 0 for site in ("site-1", "site-2") for r in rows[site])
    spent = json.loads((tmp_path / "first" / "privacy.json").read_text())["sites"]["site-3"][0]["epsilon"]
    assert all(r["epsilon"] == spent <= 3.0 for r in rows["site-3"])
    assert (tmp_path / "second" / "model" / "weights.pt").is_file()


def test_every_site_refuses_a_bundle_signed_by_another_key(sites, real_graph, coordinator_key, tmp_path):
    key, pub = new_keypair(tmp_path / "impostor")
    make_bundle(real_graph, parse_study({"study": {"name": "x", "diseases": ["ORPHA:558"]}}),
                sign_key=load_private_key(key), out=tmp_path / "impostor-bundle")
    run = run_config(tmp_path / "run", tmp_path / "impostor-bundle", pub, rounds=1)
    with pytest.raises(RareGraphError, match="only 0 sites verified the bundle"):
        run_simulated(run, nodes(sites, tmp_path / "state", coordinator_key[1]), show_progress=False)
    assert not (tmp_path / "run" / "model").exists()


def test_a_nan_update_and_a_hidden_charge_are_rejected_and_the_run_completes(sites, demo_bundle, coordinator_key,
                                                                              tmp_path):
    """site-3 sends NaN weights; in round 2, site-2 leaves that round's charge out of its ledger."""
    site_cfgs = nodes(sites, tmp_path / "state", coordinator_key[1])
    honest = make_client_app(lambda context: site_cfgs[int(context.node_config["partition-id"])])
    faulty = faulty_app(honest)

    @faulty.train()
    def train(msg, context):
        reply = honest(msg, context)
        if int(context.node_config["partition-id"]) == 2 and not reply.has_error():
            weights = reply.content[P.ARRAYS].to_torch_state_dict()
            first = next(iter(weights))
            weights[first] = torch.full_like(weights[first], float("nan"))
            reply.content[P.ARRAYS] = ArrayRecord(weights)
        if int(context.node_config["partition-id"]) == 1 and msg.content[P.CONFIG][P.SERVER_ROUND] == 2:
            entries = parse_entries(reply.content[P.LEDGER][P.LEDGER_ENTRIES])
            reply.content[P.LEDGER][P.LEDGER_ENTRIES] = export_entries(entries[:-1])
        return reply

    run = run_config(tmp_path / "run", demo_bundle, coordinator_key[1], rounds=2)
    run_simulated(run, site_cfgs, show_progress=False, client_app=faulty)
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    rejected = sorted((r["round"], r["site"], r["reason"].split(":")[0]) for r in state["rejected"])
    assert rejected == [(1, "site-3", "non-finite values"), (2, "site-2", "privacy ledger"),
                        (2, "site-3", "non-finite values")]
    assert [r["aggregated"] for r in state["rounds"]] == [2, 1]
    weights = torch.load(tmp_path / "run" / "model" / "weights.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_with_two_sites_a_poisoned_update_is_clipped_and_bad_replies_are_rejected(sites, demo_bundle,
                                                                                   coordinator_key, tmp_path):
    """Round 1: site-2 sends its weights × 1000 (the median rule cannot fire with two sites: the
    norm bound clips it). Round 2: site-2 claims 10⁹ patients and a tensor of the wrong shape."""
    site_cfgs = nodes(sites[:2], tmp_path / "state", coordinator_key[1])
    honest = make_client_app(lambda context: site_cfgs[int(context.node_config["partition-id"])])
    faulty = faulty_app(honest)

    @faulty.train()
    def train(msg, context):
        reply = honest(msg, context)
        if int(context.node_config["partition-id"]) == 1 and not reply.has_error():
            weights = reply.content[P.ARRAYS].to_torch_state_dict()
            if msg.content[P.CONFIG][P.SERVER_ROUND] == 1:
                weights = {k: v * 1000 if v.dtype.is_floating_point else v for k, v in weights.items()}
            else:
                first = next(iter(weights))
                weights[first] = weights[first][:1]
                reply.content[P.METRICS][P.NUM_EXAMPLES] = 1e9
            reply.content[P.ARRAYS] = ArrayRecord(weights)
        return reply

    run = run_config(tmp_path / "run", demo_bundle, coordinator_key[1], rounds=2, eval_per_disease=0)
    run_simulated(run, site_cfgs, show_progress=False, client_app=faulty)
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    first, second = state["rounds"]
    assert first["aggregated"] == 2 and first["updates"]["site-1"]["clip_factor"] == 1.0
    assert first["updates"]["site-2"]["clip_factor"] < 0.01  # cut to the bound, not averaged in at × 1000
    assert second["aggregated"] == 1 and list(second["updates"]) == ["site-1"]
    (reason,) = [r["reason"] for r in state["rejected"] if r["round"] == 2]
    assert "has shape" in reason
    weights = torch.load(tmp_path / "run" / "model" / "weights.pt", weights_only=True)
    assert all(torch.isfinite(v).all() and v.abs().max() < 100 for v in weights.values() if v.dtype.is_floating_point)


def test_federate_command_ends_with_ledgers_an_auditor_verifies(sites, demo_bundle, coordinator_key, tmp_path):
    """Also: a site named with ID=PATH (its folder is `train`), the coordinator's pretraining
    shown step by step, tables not cut in captured output, no deprecation notice from our
    use of Flower (flwr logs its `run_simulation` notice; Python warnings are caught too), and
    the live view served beside the run (--serve-port) while it goes, and closed after."""
    out = tmp_path / "run"
    second = shutil.copytree(sites[1], tmp_path / "hospital-b" / "train")
    flwr_records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = flwr_records.append
    logging.getLogger("flwr").addHandler(handler)
    port = free_port()
    seen: list[dict] = []  # the view's /api/status answers while the command runs
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as answer:
                    seen.append(json.loads(answer.read()))
            except OSError:
                pass
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code, stdout, stderr = cli("federate", "--bundle", demo_bundle, "--pub", coordinator_key[1], "--sites",
                                       sites[0], "--sites", f"site-2={second}", "--rounds", "1", "--epsilon", "5",
                                       "--local-steps", "2", "--batch-size", "8", "--pretrain-steps", "5",
                                       "--out", out, "--serve-port", str(port))
    finally:
        done.set()
        watcher.join()
        logging.getLogger("flwr").removeHandler(handler)
    assert code == 0, stderr
    assert f"live view: http://127.0.0.1:{port}/" in stderr
    assert seen and all(s["run_dir"] == str(out.resolve()) for s in seen), seen[-1:]
    with pytest.raises(OSError):  # stopped with the command
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2)
    assert [r.getMessage() for r in flwr_records if "deprecat" in r.getMessage().lower()] == []
    ours = ("/flwr/", "/deploy/", "/server/", "/client/", "/raregraph/")
    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)
            and any(part in w.filename for part in ours)] == []
    assert "coordinator pretraining: 5/5 steps, loss " in stderr and "coordinator pretraining: done in" in stderr
    assert "…" not in stdout and "phenotype pairs supported" in stdout
    assert "chains and signatures verify" in " ".join(stdout.split())
    assert sorted(p.name for p in RunFolder(out).site_keys.iterdir()) == ["site-1.pub", "site-2.pub"]
    code, stdout, stderr = cli("audit", RunFolder(out).ledger, "--keys", RunFolder(out).site_keys, "--out", tmp_path / "audit",
                               "--json")
    assert code == 0, stderr
    audit = json.loads(stdout)
    assert audit["ok"] and sorted(audit["sites"]) == ["site-1", "site-2"]
    # a key swapped after the fact no longer matches the ledger's signatures: the audit fails
    new_keypair(tmp_path / "other")
    (RunFolder(out).site_keys / "site-2.pub").write_bytes((tmp_path / "other.pub").read_bytes())
    code, _, _ = cli("audit", RunFolder(out).ledger, "--keys", RunFolder(out).site_keys, "--json")
    assert code == 1


def test_a_coordinator_stopped_mid_run_resumes_and_no_site_is_charged_twice(sites, demo_bundle, coordinator_key,
                                                                             tmp_path):
    """The coordinator dies after round 2's checkpoint; its checkpoint is then set back to
    round 1 (as if it had died after the sites replied to round 2 but before it checkpointed).
    Restarted on the same folder, it resumes: the sites resend their round-2 replies instead
    of training again, and ε ends where one uninterrupted 3-round run puts it."""
    site_cfgs = nodes(sites[:2], tmp_path / "state", coordinator_key[1], epsilon=5.0)
    run = run_config(tmp_path / "run", demo_bundle, coordinator_key[1], rounds=3)

    def crash(row):
        if row["round"] == 2:
            raise RuntimeError("coordinator killed")

    with pytest.raises(RuntimeError, match="coordinator killed"):
        run_simulated(run, site_cfgs, show_progress=False, after_round=crash)
    assert not (tmp_path / "run" / "model").exists()
    state_file = tmp_path / "run" / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["round"] == 2
    state_file.write_text(json.dumps({**state, "round": 1, "rounds": state["rounds"][:1]}))
    privacy_file = tmp_path / "run" / "privacy.json"
    recorded = json.loads(privacy_file.read_text())
    privacy_file.write_text(json.dumps({**recorded, "sites": {s: rows[:1] for s, rows in recorded["sites"].items()}}))

    privacy = run_simulated(run, site_cfgs, show_progress=False)
    for site, rows in privacy["sites"].items():
        assert [r["round"] for r in rows] == [1, 2, 3] and all(r["refused"] == 0 for r in rows)
        assert len({r["run_id"] for r in rows}) == 1
        sigma, q = rows[-1]["noise-multiplier"], rows[-1]["sample-rate"]
        three = epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=3 * FAST["local_steps"], delta=1e-5)
        assert rows[-1]["epsilon"] == pytest.approx(three, rel=1e-9)  # round 2 charged once
        held = read_ledger(ledger_path(tmp_path / "run", site))
        assert [e.round for e in held] == [1, 2, 3]
    assert (tmp_path / "run" / "model" / "weights.pt").is_file()
    with pytest.raises(RareGraphError, match="this run finished"):  # a finished run is not run again
        run_simulated(run, site_cfgs, show_progress=False)


def test_sites_evaluate_the_synthetic_sample_and_return_numbers_only(demo_bundle, coordinator_key, tmp_path):
    """The coordinator's sample is measured at each site against its training and held-out
    patients; the suite lands in RUN/evaluation (what the release gate reads), pooled by
    patients; a site whose node config says eval-suite = false declines."""
    from shared.ehr.cohort import split_patients
    from shared.ehr.omop_tables import write_omop
    from server.release.gate import read_site_privacy

    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    train, held = [], []
    for profile, cohort in simulate_consortium(knowledge_from_bundle(bundle), sites=3, seed=13, min_patients=40,
                                               max_patients=60):
        t, h = split_patients(cohort, share=0.3, seed=profile.site)
        train.append(tmp_path / "sites" / f"site-{profile.site}")
        held.append(tmp_path / "holdout" / f"site-{profile.site}")
        write_omop(t, train[-1])
        write_omop(h, held[-1])
    site_cfgs = site_nodes(train, state_root=tmp_path / "state", pub=coordinator_key[1], epsilon=20.0, delta=1e-5,
                           clip_norm=1.0, batch_size=8, noise_multiplicity=1, holdouts=held)
    site_cfgs[2] = dataclasses.replace(site_cfgs[2], eval_suite=False)
    run = run_config(tmp_path / "run", demo_bundle, coordinator_key[1], rounds=1, eval_per_disease=30)
    run_simulated(run, site_cfgs, show_progress=False)
    folder = RunFolder(tmp_path / "run").evaluation
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["sites"]) == {"site-1", "site-2"} and set(summary["declined"]) == {"site-3"}
    assert not summary["failed"]
    for site in ("site-1", "site-2"):
        metrics = json.loads((folder / site / "metrics.json").read_text())
        assert metrics["counts"]["holdout"] > 0
        # 30 per disease, more than a site has of any: the largest part in the site's mix, at least its size
        assert metrics["counts"]["real"] <= metrics["counts"]["synthetic"] <= 30 * len(bundle.diseases)
        assert 0.0 <= metrics["privacy"]["dcr_membership_auroc"] <= 1.0
        assert (folder / site / "report.md").is_file()
    n = {s: summary["sites"][s]["counts.real"] for s in ("site-1", "site-2")}
    mmd = {s: summary["sites"][s]["fidelity.mmd2"] for s in n}
    assert summary["pooled"]["fidelity.mmd2"] == pytest.approx(sum(mmd[s] * n[s] for s in n) / sum(n.values()))
    assert {r.site for r in read_site_privacy(tmp_path / "run")} == {"site-1", "site-2"}
    assert not (folder / "site-3").exists()


def test_sites_in_duckdb_files_train_through_sql(demo_bundle, coordinator_key, tmp_path):
    """The federated path with each site's CDM in a DuckDB file (node config cdm-url +
    cdm-schema, no data-path), as `demo --site-format duckdb` runs it: every site trains and
    signs its ledger, with the patient count the folder of the same site gives."""
    from shared.simulation.consortium import site_data

    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    result = simulate_consortium(knowledge_from_bundle(bundle), sites=2, seed=11, min_patients=30, max_patients=45)
    write_consortium(result, tmp_path / "sites", fmt_cycle=("duckdb",))
    site_cfgs = nodes([site_data(tmp_path / "sites" / f"site-{k}.duckdb") for k in (1, 2)], tmp_path / "state",
                      coordinator_key[1])
    assert all(n.data_path is None and n.cdm_url.startswith("duckdb:////") and n.cdm_schema == "cdm"
               for n in site_cfgs)
    run = run_config(tmp_path / "run", demo_bundle, coordinator_key[1], rounds=1, eval_per_disease=0,
                     site_keys=publish_site_keys(site_cfgs, RunFolder(tmp_path / "run").site_keys))
    privacy = run_simulated(run, site_cfgs, show_progress=False)
    assert set(privacy["sites"]) == {"site-1", "site-2"}
    for (_, cohort), (site, rows) in zip(result, sorted(privacy["sites"].items())):
        assert [(r["round"], r["refused"], r["steps"]) for r in rows] == [(1, 0, 2)]
        assert rows[0]["sample-rate"] == pytest.approx(8 / cohort.n_persons)  # q = batch / the site's patients
        assert [e.epsilon for e in read_ledger(ledger_path(tmp_path / "run", site))] == [rows[0]["epsilon"]]
    assert audit_run(tmp_path / "run").ok


@pytest.mark.parametrize("given, message", [
    (["{a}/train", "{b}/train"], "--sites '{a}/train' and '{b}/train' have the same site id 'train'"),
    (["x={a}/train", "x={b}/train"], "have the same site id 'x'"),
    (["a b={a}/train"], "--sites 'a b={a}/train': site id 'a b' is not a safe folder name"),
    (["site-1="], "--sites 'site-1=': no folder after site-1="),
    (["{a}/train", "site-2={b}/missing"], "{b}/missing: site folder not found"),
])
def test_federate_refuses_bad_site_ids_in_one_line(demo_bundle, coordinator_key, tmp_path, given, message):
    from tests.raregraph.test_cli import one_line_error

    a, b = tmp_path / "hospital-a", tmp_path / "hospital-b"
    for folder in (a, b):
        (folder / "train").mkdir(parents=True)
    values = [v.format(a=a, b=b) for v in given]
    code, _, stderr = cli("federate", "--bundle", demo_bundle, "--pub", coordinator_key[1], "--epsilon", "5",
                          "--out", tmp_path / "run", *[x for v in values for x in ("--sites", v)])
    assert code == 1 and message.format(a=a, b=b) in one_line_error(stderr)
    assert not (tmp_path / "run").exists()


def test_parse_sites_keeps_plain_paths_and_reads_ids() -> None:
    from raregraph.federate import parse_sites

    ids, folders = parse_sites(["sites/site-1", "site-2=hospitals/b/train", "b=c=d/e=f"])
    assert ids == ["site-1", "site-2", "b"] and folders == [Path("sites/site-1"), Path("hospitals/b/train"),
                                                           Path("c=d/e=f")]


def test_federate_reads_a_config_file_a_flag_overrides_it_and_the_run_records_both(sites, demo_bundle, coordinator_key,
                                                                                   tmp_path):
    """One short real run: paths in the file are relative to its folder, --rounds overrides the
    file, and RUN/run-config.resolved.toml holds every setting with its source."""
    conf = tmp_path / "conf"
    shutil.copytree(sites[0], conf / "hospital-a" / "train")
    (conf / "run.toml").write_text(
        f'[federate]\nbundle = "{demo_bundle}"\npub = "{coordinator_key[1]}"\nsites = ["site-1=hospital-a/train"]\n'
        'epsilon = 5.0\nout = "runs/first"\nrounds = 3\nlocal-steps = 2\nbatch-size = 8\npretrain-steps = 5\n'
        'eval-per-disease = 0\n')
    code, _, stderr = cli("federate", "--config", conf / "run.toml", "--rounds", "1", "-q")
    assert code == 0, stderr
    run = RunFolder(conf / "runs" / "first")
    privacy = json.loads(run.privacy.read_text())
    rows = privacy["sites"]["site-1"]
    assert [(r["round"], r["steps"]) for r in rows if r["kind"] == "train"] == [(1, 2)]
    assert [(r["round"], r["kind"]) for r in rows if r["kind"] != "train"] == [(0, "histogram")]  # the disease mix
    resolved = tomllib.loads(run.resolved_config.read_text())
    settings, source = resolved["federate"], resolved["resolved"]["source"]
    assert settings["rounds"] == 1 and source["rounds"] == "flag"
    assert settings["local-steps"] == 2 and source["local-steps"] == "file" and source["lr"] == "default"
    assert settings["sites"] == [f"site-1={conf / 'hospital-a' / 'train'}"] and settings["out"] == str(run.root)
    assert "state-root" not in settings and "quiet" not in source


@pytest.mark.parametrize("body, message", [
    ("rounds = 'three'", "key 'federate.rounds': must be an integer ≥ 1, got 'three'"),
    ("evaluate-fraction = 2.0", "key 'federate.evaluate-fraction': must be a number from 0 to 1, got 2.0"),
    ("local_steps = 4", "unknown key 'federate.local_steps' (did you mean 'local-steps'?)"),
    ("guidance = 'graph'", "key 'federate.guidance' must be one of kg, none, learned, got 'graph'"),
])
def test_federate_refuses_a_bad_config_key_in_one_line_before_writing(demo_bundle, coordinator_key, tmp_path, body,
                                                                      message):
    from tests.raregraph.test_cli import one_line_error

    (tmp_path / "site-1").mkdir()
    config = tmp_path / "run.toml"
    config.write_text(f'[federate]\nbundle = "{demo_bundle}"\npub = "{coordinator_key[1]}"\nsites = ["site-1"]\n'
                      f'epsilon = 5.0\nout = "run"\n{body}\n')
    code, _, stderr = cli("federate", "--config", config)
    assert code == 1 and one_line_error(stderr) == f"error: {config}: {message}"
    assert not (tmp_path / "run").exists()


def test_federate_without_a_required_setting_says_where_to_give_it(tmp_path):
    from tests.raregraph.test_cli import one_line_error

    config = tmp_path / "run.toml"
    config.write_text('[federate]\nsites = ["site-1"]\nepsilon = 5.0\nout = "run"\npub = "k.pub"\n')
    code, _, stderr = cli("federate", "--config", config)
    assert code == 1 and one_line_error(stderr) == (
        f"error: --bundle is required: give it on the command line or as 'federate.bundle' in {config}")
    assert not (tmp_path / "run").exists()
