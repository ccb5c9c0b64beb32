"""The issue-21 goals harness (benchmarks/bench_goals.py): a tiny grid end to end, and the verdicts.

The end-to-end test runs our model (one round, one local step) and the fresh-patient reference on
two small simulated sites; MST and AIM join when .venv-baselines exists (create it with
`bash scripts/baselines-venv.sh`), and are skipped by ``--skip-missing-baselines`` otherwise.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest

from benchmarks import bench_goals
from benchmarks.bench_goals import (HOLDOUT_SHARE, ahead, auroc_null_sd, dcr_null_sds, goal_lines, no_leak_interval,
                                     report_text, run_grid)


def _args(results, methods: str) -> argparse.Namespace:
    return argparse.Namespace(simulators="graph", sites="2", seeds="0", methods=methods, rounds=1, local_steps=1,
                              pretrain_steps=0, sampler_steps=2, mst_features=2, aim_features=1, aim_rounds=6,
                              release_rows=200, permutations=2, min_patients=30, max_patients=34,
                              skip_missing_baselines=True, results=results, survey_sigma=4.0)


@pytest.mark.slow
def test_a_tiny_grid_measures_resumes_and_reports(tmp_path, monkeypatch):
    # a small pool and attacker keep the suite fast; the protocol is the same
    monkeypatch.setattr(bench_goals, "POOL_PER_DISEASE", 15)
    monkeypatch.setattr(bench_goals, "TRUTH_SCALE", 3)
    monkeypatch.setattr(bench_goals, "ATTACKER_REFERENCE", 40)
    results = tmp_path / "goals.jsonl"
    run_grid(_args(results, "ours,ours-survey,marginals,reference"))
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["simulator"], r["sites"], r["seed"], r["method"]) for r in rows] == [
        ("graph", 2, 0, "ours"), ("graph", 2, 0, "ours-survey"), ("graph", 2, 0, "marginals"),
        ("graph", 2, 0, "reference")]
    # the survey was charged to each site's budget before the training on the grown bundle
    survey = rows[1]["survey"]
    assert set(survey["survey_epsilon"]) == {"site-1", "site-2"}
    assert all(0.9 < e < 1.1 for e in survey["survey_epsilon"].values()) and survey["vocabulary"] >= 213
    for r in rows:
        assert len(r["per_site"]) == 2 and r["settings"]["attacker_reference"] == 40
        for view in (*r["per_site"], r["pooled"]):
            for key in ("recorded.prevalence_r2_identity", "recorded_blind.prevalence_r2_identity", "fidelity.mmd2",
                        "domias_600",
                        "privacy.dcr_membership_auroc", "privacy.exact_copy_share"):
                assert view[key] is not None and math.isfinite(view[key]), (r["method"], key)
            assert 0.0 < view["privacy.dcr_membership_auroc_null_sd"] < 0.5
            assert 0.0 <= view["domias_600"] <= 1.0
    ours, _, _, reference = rows
    # fresh patients of the same hospitals are the ceiling; one DP step of training is far from it
    assert reference["pooled"]["recorded.prevalence_r2_identity"] > 0.5
    assert reference["pooled"]["recorded.prevalence_r2_identity"] > ours["pooled"]["recorded.prevalence_r2_identity"]
    assert reference["pooled"]["privacy.exact_copy_share"] == 0.0
    run_grid(_args(results, "ours,ours-survey,marginals,reference"))  # every cell is there: nothing is refitted
    assert len(results.read_text().splitlines()) == 4
    text = report_text(bench_goals.read_rows(results))
    assert "## graph simulator, 2 sites, seeds 0" in text
    assert "| prevalence R², recorded ≥ 0.8 × reference | pooled |" in text
    assert "**The same goals after the vocabulary survey**" in text and text.count("| no exact copies | pooled |") == 2


def _row(method: str, seed: int, **pooled) -> dict:
    view = {"domias_600_null_sd": 0.02, **pooled}
    return {"simulator": "graph", "sites": 3, "seed": seed, "method": method, "per_site": [view], "pooled": view}


def test_goal_verdicts_follow_the_thresholds():
    rows = [_row("reference", 0, **{"recorded.prevalence_r2_identity": 0.9, "fidelity.mmd2": 0.001}),
            _row("ours", 0, **{"recorded.prevalence_r2_identity": 0.71, "fidelity.mmd2": 0.02, "domias_600": 0.53,
                               "privacy.dcr_membership_auroc": 0.50, "privacy.exact_copy_share": 0.0,
                               "recorded.codes_per_patient_relative_difference": -0.05}),
            _row("mst", 0, **{"recorded.prevalence_r2_identity": 0.8, "fidelity.mmd2": 0.05}),
            _row("aim", 0, **{"recorded.prevalence_r2_identity": 0.6, "fidelity.mmd2": 0.03})]
    lines = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in goal_lines(rows)}
    assert lines[("prevalence R², recorded ≥ 0.8 × reference", "pooled")].endswith("| **not met** |")  # 0.71 < 0.72
    assert "≤ 0.0150" in lines[("MMD²_u ≤ 0.5 × best of MST, AIM", "pooled")]  # 0.5 × min(0.05, 0.03)
    assert lines[("MMD²_u ≤ 0.5 × best of MST, AIM", "pooled")].endswith("| **not met** |")  # 0.02 > 0.015
    assert "prevalence R², recorded vs MST" in lines[("ahead of MST and AIM on every fidelity metric", "pooled")]
    assert lines[("codes per patient within 10 % of real", "pooled")].endswith("| met |")
    assert lines[("DOMIAS AUROC (600-patient attacker reference) ≤ 0.52", "pooled")].endswith("| **not met** |")
    assert lines[("DCR membership AUROC ≤ 0.52", "pooled")].endswith("| met |")
    assert lines[("no exact copies", "pooled")].endswith("| met |")


def test_the_dcr_interval_is_the_no_leak_sd_of_the_mean_shown():
    kept = _row("ours", 0, **{"privacy.dcr_membership_auroc": 0.53, "privacy.dcr_membership_auroc_null_sd": 0.05})
    kept["sites"] = 1
    assert dcr_null_sds([kept], "ours", "pooled") == [0.05]
    assert "(95 % no-leak interval ± 0.098)" in goal_line(goal_lines([kept]), "DCR membership AUROC ≤ 0.52", "pooled")
    # a row from before the SD was kept: from its training sizes, held-out = share / (1 − share) of them
    older = _row("ours", 1, **{"privacy.dcr_membership_auroc": 0.5}) | {"patients": [80, 40]}
    ratio = HOLDOUT_SHARE / (1 - HOLDOUT_SHARE)
    assert dcr_null_sds([older], "ours", "site") == pytest.approx(
        [(auroc_null_sd(80, round(80 * ratio)) + auroc_null_sd(40, round(40 * ratio))) / 2])
    assert dcr_null_sds([older], "ours", "pooled") == pytest.approx([auroc_null_sd(120, round(120 * ratio))])
    # two seeds of a 3-site view: the SD of a mean over 6 independent attacks
    a, b = (_row("ours", seed, **{"privacy.dcr_membership_auroc": 0.5, "privacy.dcr_membership_auroc_null_sd": 0.06})
            for seed in (0, 1))
    assert no_leak_interval([0.06, 0.06], [a, b], "site") == f" (95 % no-leak interval ± {1.96 * 0.06 / 6 ** 0.5:.3f})"


def goal_line(lines: list[str], goal: str, view: str) -> str:
    return next(line for line in lines if [c.strip() for c in line.split("|")[1:3]] == [goal, view])


@pytest.mark.parametrize(("ours", "other", "how", "expected"), [
    (0.3, 0.2, "higher", True), (0.3, 0.2, "lower", False), (0.48, 0.55, "closer to 0.5", True),
    (-0.2, 0.1, "closer to 0", False)])
def test_ahead_reads_each_direction(ours, other, how, expected):
    assert ahead(ours, other, how) is expected


def test_a_cell_run_again_replaces_the_earlier_row_in_the_report():
    old, new, other = _row("ours-survey", 0), _row("ours-survey", 0), _row("ours-survey", 1)
    old["settings"], new["settings"] = {"survey": "before"}, {"survey": "after"}
    assert bench_goals.latest([old, other, new]) == [new, other]
