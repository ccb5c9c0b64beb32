"""evaluate() gives finite plain numbers; write_report writes both files or nothing."""

from __future__ import annotations

import json
import math

import pytest

from shared.evaluation.report import evaluate, write_report
from shared.errors import OutputExistsError
from tests.shared.evaluation.cohorts import random_cohort


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    else:
        yield obj


@pytest.fixture(scope="module")
def metrics() -> dict:
    return evaluate(random_cohort(120, seed=1), random_cohort(100, seed=2),
                    holdout=random_cohort(90, seed=3), seed=0, permutations=50)


def test_evaluate_returns_finite_plain_numbers(metrics) -> None:
    assert metrics["counts"] == {"real": 120, "synthetic": 100, "holdout": 90, "vector_dimensions": 50,
                                       "windows": 4, "binary_features": 6, "labs": 3}
    values = list(_numbers({k: metrics[k] for k in ("fidelity", "privacy")}))
    assert values and all(type(v) in (int, float) and math.isfinite(v) for v in values)
    json.dumps(metrics, allow_nan=False)
    assert metrics["privacy"]["exact_copy_share"] == 0.0
    privacy = metrics["privacy"]
    assert abs(privacy["dcr_membership_auroc"] - 0.5) < 3 * privacy["dcr_membership_auroc_null_sd"]
    assert privacy["dcr_synth_to_members_p5"] <= privacy["dcr_synth_to_members_p50"]
    assert metrics["fidelity"]["mmd2_p_value"] > 0.05
    assert set(metrics["fidelity"]["lab_w1"]) == {"LOINC:1000-0", "LOINC:1001-1", "LOINC:1002-2"}


def test_evaluate_without_holdout_skips_the_holdout_metrics() -> None:
    m = evaluate(random_cohort(40, seed=1), random_cohort(40, seed=2), permutations=10)
    assert m["counts"]["holdout"] is None
    assert "dcr_membership_auroc" not in m["privacy"]
    assert "mmd2_baseline_holdout" not in m["fidelity"]
    assert set(m["privacy"]) == {"exact_copy_share", "dcr_synth_to_members_p5", "dcr_synth_to_members_p50"}


def test_evaluate_flags_copies() -> None:
    real = random_cohort(60, seed=1)
    m = evaluate(real, real, holdout=random_cohort(60, seed=2), permutations=10)
    assert m["privacy"]["exact_copy_share"] == 1.0
    assert m["privacy"]["dcr_membership_auroc"] == 1.0
    assert m["fidelity"]["prevalence_r2_identity"] == 1.0


def test_evaluate_rejects_mismatched_columns() -> None:
    with pytest.raises(ValueError, match="holdout"):
        evaluate(random_cohort(20), random_cohort(20), holdout=random_cohort(20, labs=2))


def test_write_report_writes_both_files(metrics, tmp_path) -> None:
    out = write_report(metrics, tmp_path / "eval", title="Demo evaluation")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "report.md"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    md = (out / "report.md").read_text()
    assert md.startswith("# Demo evaluation\n")
    assert "| MMD² (unbiased) |" in md and "| DCR membership-inference AUROC |" in md
    assert "| DCR holdout → training, 5th pct. (baseline) |" in md
    assert "| LOINC:1001-1 |" in md
    with pytest.raises(OutputExistsError):
        write_report(metrics, out, title="again")
    write_report(metrics, out, title="again", overwrite=True)
    assert (out / "report.md").read_text().startswith("# again\n")


def test_write_report_failure_leaves_nothing(tmp_path) -> None:
    with pytest.raises(ValueError):
        write_report({"fidelity": {"mmd2": float("nan")}}, tmp_path / "eval", title="bad")
    with pytest.raises(TypeError):
        write_report({"fidelity": {"mmd2": object()}}, tmp_path / "eval", title="bad")
    assert list(tmp_path.iterdir()) == []
