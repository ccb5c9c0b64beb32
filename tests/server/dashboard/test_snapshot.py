"""The run folder as the live view reads it: a real finished run (`raregraph federate`), and copies
of it edited to hold what a run records when a site sits out, is rejected or does not reply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from server.dashboard.audit_view import AuditCache, audit_summary, project_epsilon
from server.dashboard.snapshot import NOTICE, check_run_folder, read_snapshot
from shared.errors import InputError
from shared.privacy.audit.audit import audit_run
from shared.runs import RunFolder
from tests.server.dashboard.conftest import EPSILON


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime: what a reader must leave unchanged."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def snapshot(run_dir: Path) -> dict:
    return read_snapshot(run_dir, audit=AuditCache(run_dir).get)


# folders

def test_a_missing_file_or_model_folder_is_refused_and_an_empty_folder_waits(tmp_path) -> None:
    with pytest.raises(InputError, match="no such run folder"):
        check_run_folder(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        check_run_folder(tmp_path / "file")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    with pytest.raises(InputError, match="model folder, not a run folder: give its parent"):
        check_run_folder(tmp_path / "model")
    (tmp_path / "sites" / "site-1").mkdir(parents=True)
    with pytest.raises(InputError, match="not a run folder: it holds none of run.json"):
        check_run_folder(tmp_path / "sites")
    (tmp_path / "run").mkdir()
    snap = snapshot(tmp_path / "run")
    assert snap["phase"] == "waiting" and snap["sites"] == {} and snap["audit"]["state"] == "none"
    assert snap["notice"] == NOTICE and "row-level" in NOTICE


def test_a_run_json_that_is_not_json_names_the_file(tmp_path) -> None:
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(InputError, match=r"run\.json: cannot read it as JSON"):
        snapshot(tmp_path)


# a real finished run

@pytest.mark.slow
def test_a_finished_run_shows_every_round_site_budget_audit_and_evaluation(finished_run) -> None:
    before = tree(finished_run)
    snap = snapshot(finished_run)
    assert tree(finished_run) == before  # read only
    assert snap["phase"] == "finished" and snap["status"] == "finished: round 2 of 2; model written"
    assert snap["round"] == snap["rounds_planned"] == 2 and snap["checkpoint"]["resumable"] is False
    privacy = json.loads(RunFolder(finished_run).privacy.read_text())["sites"]
    state = json.loads(RunFolder(finished_run).checkpoint_state.read_text())
    assert [r["loss"] for r in snap["rounds"]] == [r["metrics"]["loss"] for r in state["rounds"]]
    assert set(snap["sites"]) == {"site-1", "site-2"}
    for name, site in snap["sites"].items():
        assert site["status"] == "averaged" and site["rounds"] == {"1": {"status": "averaged", "why": ""},
                                                                   "2": {"status": "averaged", "why": ""}}
        assert site["series"] == [{"round": r["round"], "epsilon": r["epsilon"]} for r in privacy[name]]
        assert site["budget_epsilon"] == EPSILON and site["epsilon"] <= EPSILON and site["ledger_ok"] is True
        assert site["projection"]["round"] == 2 and not site["projection"]["exceeds_budget"]
    audit = audit_run(finished_run)
    assert snap["audit"]["state"] == "verified" and audit.ok
    for s in audit.sites:
        assert snap["audit"]["sites"][s.site_id]["independent_epsilon"] == s.independent_epsilon
    evaluation = snap["evaluation"]
    assert [r["site"] for r in evaluation["rows"]] == ["site-1", "site-2", "pooled"]
    summary = json.loads(RunFolder(finished_run).evaluation_summary.read_text())
    assert evaluation["rows"][0]["cells"][evaluation["columns"].index("MMD²_u")] == summary["sites"]["site-1"]["fidelity.mmd2"]
    assert [e["kind"] for e in snap["events"]] == ["checkpoint", "checkpoint", "model", "evaluation"]
    assert snapshot(finished_run)["version"] == snap["version"]  # nothing changed, same version


@pytest.mark.slow
def test_the_projection_from_round_1_is_the_epsilon_the_run_reached(finished_run, tmp_path) -> None:
    """Cut every ledger back to round 1 (the disease-mix release before it, round 0, stays):
    repeating round 1's mechanism for round 2 must give what the real round 2 charged (the sites
    calibrate one mechanism for the whole run)."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    final = {s.site_id: s.independent_epsilon for s in audit_run(run).sites}
    for ledger in RunFolder(run).ledger.glob("*.jsonl"):
        lines = ledger.read_text().splitlines(keepends=True)
        first = next(i for i, line in enumerate(lines) if json.loads(line)["round"] == 1)
        ledger.write_text("".join(lines[:first + 1]))
    cut = audit_run(run)
    assert cut.ok  # a ledger cut back to an earlier entry is still a valid chain
    run_id = json.loads(RunFolder(run).settings.read_text())["run_id"]
    for site in cut.sites:
        projection = project_epsilon(site, run_id=run_id, last_round=2)
        assert projection["from_round"] == 1 and projection["round"] == 2
        assert projection["epsilon"] == pytest.approx(final[site.site_id], rel=1e-12)
        assert project_epsilon(site, run_id="another-run", last_round=2) is None


@pytest.mark.slow
def test_sat_out_rejected_and_silent_sites_say_why(finished_run, tmp_path) -> None:
    """A third round as the strategy records it: site-1 refused (budget), site-2 rejected."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("model", "evaluation"))
    folder = RunFolder(run)
    settings = json.loads(folder.settings.read_text())
    folder.settings.write_text(json.dumps({**settings, "num-server-rounds": 4}))
    state = json.loads(folder.checkpoint_state.read_text())
    privacy = json.loads(folder.privacy.read_text())
    last = privacy["sites"]["site-1"][-1]
    privacy["sites"]["site-1"].append({**last, "round": 3, "refused": 1.0, "steps": 0.0})
    privacy["sites"]["site-3"] = []
    state["rounds"].append({**state["rounds"][-1], "round": 3, "aggregated": 0, "updates": {}})
    state["rejected"].append({"round": 3, "site": "site-2", "reason": "non-finite values in layer.weight"})
    state["round"] = 3
    folder.checkpoint_state.write_text(json.dumps(state))
    folder.privacy.write_text(json.dumps(privacy))
    snap = snapshot(run)
    assert snap["phase"] == "training" and snap["status"] == "round 3 of 4 done; round 4 running"
    assert snap["checkpoint"]["resumable"] is True
    s1, s2, s3 = (snap["sites"][s] for s in ("site-1", "site-2", "site-3"))
    assert s1["status"] == "sat out" and s1["why"].startswith(f"privacy budget: ε spent {last['epsilon']:.3f} of 5.000")
    assert s1["projection"]["epsilon"] == s1["epsilon"] and "sits out" in s1["projection"]["note"]
    assert s2["status"] == "rejected" and s2["why"] == "non-finite values in layer.weight"
    assert s2["projection"]["round"] == 4 and s2["projection"]["epsilon"] > s2["epsilon"]
    assert s3["status"] == "no reply" and s3["rounds"]["1"]["status"] == "no reply" and s3["series"] == []
    kinds = [(e["round"], e["kind"]) for e in snap["events"] if e["round"] == 3]
    assert kinds == [(3, "checkpoint"), (3, "sat out"), (3, "rejected"), (3, "no reply")]
    assert snap["evaluation"] is None
    # every round rejected or sat out up to the last: the coordinator stops without a model
    state["rounds"] = [{**r, "aggregated": 0, "updates": {}} for r in state["rounds"]]
    folder.checkpoint_state.write_text(json.dumps(state))
    folder.settings.write_text(json.dumps({**settings, "num-server-rounds": 3}))
    failed = snapshot(run)
    assert failed["phase"] == "failed" and "no round averaged any site's update" in failed["status"]


@pytest.mark.slow
def test_a_tampered_ledger_is_flagged_and_the_cache_reruns_the_audit_only_on_change(finished_run, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    cache = AuditCache(run)
    first = cache.get(run_id=None, last_round=2)
    assert first["state"] == "verified" and cache.get(run_id=None, last_round=2) is first
    assert (cache.hits, cache.misses) == (1, 1)
    ledger = RunFolder(run).ledger / "site-2.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    entry = json.loads(lines[0])
    entry["epsilon"] = entry["epsilon"] / 2  # under-report the first charge
    ledger.write_text(json.dumps(entry) + "\n" + "".join(lines[1:]))
    flagged = cache.get(run_id=None, last_round=2)
    assert cache.misses == 2 and flagged["state"] == "flagged" and not flagged["sites"]["site-2"]["ok"]
    assert flagged["sites"]["site-1"]["ok"] and flagged["problems"]
    assert flagged == audit_summary(run, run_id=None, last_round=2)
