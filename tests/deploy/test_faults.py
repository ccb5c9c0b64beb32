"""Faults on a real deployment: flower-superlink and flower-supernode processes on loopback
with TLS and SuperNode authentication, real kills (SIGKILL), real restarts.

1. A SuperNode killed mid-round: the round ends without it once the SuperLink declares its
   node unavailable (two missed heartbeats, ≤ 60 s in flwr 1.41), the run goes on with the
   other site; restarted on the same state folder, the site rejoins and its ε continues.
2. The SuperLink killed after round 2 (its ServerApp goes with it): restarted on the same
   database, the run submitted again (a new Flower run id, the same run folder) resumes from
   the round-2 checkpoint; no site is charged twice, none is reset.
   (1 and 2 share one run: each alone costs a full deployment and ≥ 3 rounds.)
3. A site whose data is malformed refuses every round with a clear message in its own log;
   the other finishes the run.

Every wait is bounded; the fixture stops every process the test started (their own process
groups and the descendants that left them) and checks that none is left.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from deploy.local import LocalDeployment, prepare
from deploy.processes import group_members, tagged_processes
from shared.privacy.audit.audit import audit_run
from shared.privacy.ledger import ledger_path, read_ledger
from shared.privacy.budget import epsilon_for
from shared.privacy.state import PrivacyState
from server.dashboard.audit_view import AuditCache
from server.dashboard.snapshot import read_snapshot
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
RUN_TIMEOUT = 420.0  # seconds a whole run may take on a busy 2-core machine
STEP_TIMEOUT = 180.0  # seconds for one round, or for a process to react
LOCAL_STEPS = 2
DELTA = 1e-5


@pytest.fixture
def deploy(tmp_path, demo_bundle, coordinator_key):
    """Make a deployment of tiny simulated sites; stop everything it started afterwards."""
    made: list[LocalDeployment] = []

    def make(*, sites: int, rounds: int, min_sites: int) -> LocalDeployment:
        layout = prepare(tmp_path / "out", sites=sites, bundle=demo_bundle, pub=coordinator_key[1], epsilon=8.0,
                         delta=DELTA, rounds=rounds, local_steps=LOCAL_STEPS, pretrain_steps=0,
                         pretrain_patients=64, batch_size=8, noise_multiplicity=1, min_patients=30, max_patients=45,
                         seed=11, min_sites=min_sites, round_timeout=STEP_TIMEOUT)
        made.append(LocalDeployment(layout, stop_timeout=10.0))
        return made[-1]

    try:
        yield make
    finally:
        for d in made:
            d.procs.stop_all()
            assert d.procs.leftovers() == [], "processes left running"


def log_text(proc) -> str:
    return proc.log.read_text(errors="replace")


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def finish(d: LocalDeployment, run_id: int) -> str:
    """Follow the run to its end; the ServerApp's log (saved to logs/serverapp.log)."""
    try:
        status = d.wait(run_id, timeout=RUN_TIMEOUT)
    finally:
        log = d.save_run_log(run_id).read_text(errors="replace")
    assert status == "finished:completed", log[-3000:]
    return log


def trained(privacy: dict, site: str) -> list[dict]:
    return [r for r in privacy["sites"][site] if r["kind"] == "train" and not r["refused"]]


def check_charged_once(d: LocalDeployment, site: str, rounds: list[int]) -> list[float]:
    """The site's own ledger, the coordinator's copy, its privacy state and privacy.json agree:
    one charge per trained round, in order, at the σ planned in round 1; the ε of each."""
    run_dir = d.layout.run.run_dir
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    rows = trained(json.loads((run_dir / "privacy.json").read_text()), site)
    held = read_ledger(d.layout.nodes[site].state_path / "privacy" / "ledger.jsonl")
    assert [(e.seq, e.run_id, e.round, e.kind) for e in held] == [(k, run_id, r, "train") for k, r in enumerate(rounds)]
    assert [e.epsilon for e in read_ledger(ledger_path(run_dir, site))] == [e.epsilon for e in held]
    assert [(r["round"], r["epsilon"], r["steps"]) for r in rows] == [(e.round, e.epsilon, LOCAL_STEPS) for e in held]
    sigma, q = rows[0]["noise-multiplier"], rows[0]["sample-rate"]
    assert all((r["noise-multiplier"], r["sample-rate"]) == (sigma, q) for r in rows)  # planned once, kept
    for k, entry in enumerate(held, start=1):  # k rounds charged so far, never reset, never twice
        assert entry.epsilon == pytest.approx(
            epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=k * LOCAL_STEPS, delta=DELTA), rel=1e-9)
    state = PrivacyState.read(d.layout.nodes[site].state_path / "privacy")
    assert len(state.rounds) == len(rounds) and state.epsilon() == pytest.approx(held[-1].epsilon, rel=1e-12)
    return [e.epsilon for e in held]


def test_a_killed_supernode_rejoins_and_a_killed_superlink_resumes_from_round_2_charging_no_site_twice(deploy):
    """One 3-round run, two faults (one run instead of two keeps the file's runtime down):
    site-2's SuperNode is killed mid-round 2, the SuperLink (and its ServerApp) right after
    round 2's checkpoint. Both come back; the run, submitted again, resumes at round 3."""
    d = deploy(sites=2, rounds=3, min_sites=1)  # a round needs one reply of the two
    d.start_all()
    first = d.submit()
    d.wait_for_round(1, timeout=STEP_TIMEOUT)
    run_dir = d.layout.run.run_dir
    ours = json.loads((run_dir / "run.json").read_text())["run_id"]

    # fault 1: round 2's train message reaches site-2; its SuperNode and the ClientApp it starts die
    victim = d.procs.started["site-2"]
    wait_until(lambda: log_text(victim).count("Receiving: train message") >= 2, timeout=STEP_TIMEOUT,
               what="round 2 reaching site-2")
    d.procs.kill("site-2")
    assert group_members(victim.pid) == []
    # round 2 ends with site-1 alone once the SuperLink declares site-2's node unavailable
    d.wait_for_round(2, timeout=STEP_TIMEOUT)

    # fault 2: the SuperLink dies. flwr 1.41 runs the ServerApp under a SuperExec that the
    # SuperLink starts in a session of its own: not in the killed group, but both watch their
    # parent's pid and end themselves, so no ServerApp of the dead run lingers
    serverapps = [pid for pid in tagged_processes(d.procs.tag) if "flwr-serverapp" in command_line(pid)]
    assert len(serverapps) == 1
    d.procs.kill("superlink")
    wait_until(lambda: not any("flwr-serverapp" in command_line(p) for p in serverapps), timeout=30.0,
               what="the killed SuperLink's ServerApp ending")
    assert d.procs.started["site-1"].alive()  # the hospital waits for the coordinator

    d.start_superlink()  # same port and database: node registrations survive, no site registers again
    restarted = d.start_supernode("site-2")  # same key, node config and state folder
    node_id = d.node_ids["site-2"]
    wait_until(lambda: log_text(restarted).count(f"SuperNode ID: {node_id}") == 2, timeout=STEP_TIMEOUT,
               what="site-2 back with its node id")
    # a round-3 message site-1 pulled before the kill is trained (and charged) by its ClientApp
    # anyway; let that finish, so the resumed round 3 finds it charged and resends, not races it
    wait_until(lambda: not any("flwr-clientapp" in command_line(p) for p in tagged_processes(d.procs.tag)),
               timeout=STEP_TIMEOUT, what="ClientApps of the dead run finishing")
    second = d.submit()  # same run config and run folder; Flower gives it a new run id
    assert second != first
    log = finish(d, second)

    assert f"resuming run {ours} after round 2 of 3" in log
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == ours
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert [(r["round"], r["replies"], r["errors"], r["aggregated"]) for r in state["rounds"]] == [
        (1, 2, 0, 2), (2, 2, 1, 1), (3, 2, 0, 2)]
    assert [r["after_round"] for r in state["resumes"]] == [2]  # the restart, for the live view and auditor
    events = [e["text"] for e in read_snapshot(run_dir, audit=AuditCache(run_dir).get)["events"]]
    restart = next(i for i, text in enumerate(events) if "resumed after round 2" in text)
    assert events[restart - 1].startswith("round 2:") and events[restart + 1].startswith("round 3:")
    privacy = json.loads((run_dir / "privacy.json").read_text())
    assert {r["run_id"] for rows in privacy["sites"].values() for r in rows} == {ours}
    check_charged_once(d, "site-1", [1, 2, 3])
    epsilons = check_charged_once(d, "site-2", [1, 3])  # rejoined round 3; round 2 never charged
    assert epsilons[0] < epsilons[1]  # continues from round 1's spend: not reset
    assert (run_dir / "model" / "model.json").is_file()
    audit = audit_run(run_dir)
    assert audit.ok, audit.all_problems


def test_a_site_with_malformed_data_refuses_with_a_clear_message_and_the_other_finishes(deploy):
    d = deploy(sites=2, rounds=1, min_sites=1)
    # site-2 exports its conditions as CSV, with an impossible date in the first row
    parquet = d.layout.nodes["site-2"].data_path / "condition_occurrence.parquet"
    conditions = pd.read_parquet(parquet)
    conditions["condition_start_date"] = conditions["condition_start_date"].astype(str)
    conditions.loc[0, "condition_start_date"] = "2021-02-30"
    table = parquet.with_suffix(".csv")
    conditions.to_csv(table, index=False)
    parquet.unlink()
    d.start_all()
    log = finish(d, d.submit())

    why = f"site refuses to train: {table}:2: column condition_start_date: '2021-02-30' is not a date (YYYY-MM-DD)"
    assert why in log
    assert why in log_text(d.procs.started["site-2"])  # the hospital reads it in its own log
    state = json.loads((d.layout.run.run_dir / "checkpoint" / "state.json").read_text())
    assert [(r["replies"], r["errors"], r["aggregated"]) for r in state["rounds"]] == [(2, 1, 1)]
    privacy = json.loads((d.layout.run.run_dir / "privacy.json").read_text())
    assert set(privacy["sites"]) == {"site-1"}
    assert PrivacyState.read(d.layout.nodes["site-2"].state_path / "privacy").rounds == ()  # nothing charged
    assert (d.layout.run.run_dir / "model" / "model.json").is_file()
