"""evaluate() gives finite plain numbers; write_report writes both files or nothing."""

from __future__ import annotations

import json
import math

import pytest

import numpy as np

from shared.bundle import StudyBundle
from shared.evaluation.suite import evaluate, write_report
from shared.errors import OutputExistsError
from tests.shared.evaluation.cohorts import random_cohort, replace, study_cohort
from tests.shared.evaluation.test_plausibility import bundle_cohort


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
    fidelity = metrics["fidelity"]
    assert fidelity["mmd2_window_p_value"] > 0.05 and fidelity["mmd_window_n_real"] == 120 * 4
    assert fidelity["transition_r2_identity"] > 0.5
    assert abs(fidelity["discriminator_auroc"] - 0.5) < 0.15 and len(fidelity["discriminator_fold_aurocs"]) == 5
    assert abs(privacy["domias_auroc"] - 0.5) < 0.15
    # DOMIAS scores the 120 members against the half of the 90 holdout patients it does not use as reference
    assert privacy["domias_auroc_null_sd"] == pytest.approx(np.sqrt((120 + 45 + 1) / (12 * 120 * 45)))
    assert abs(privacy["attribute_disclosure_gap"]) < 0.1 and abs(privacy["nnaa_privacy_loss"]) < 0.15
    assert "disease" in metrics["utility"]["tasks"] and "disease_auroc_ratio" in metrics["utility"]
    assert "plausibility" not in metrics


def test_evaluate_on_structured_cohorts_reports_every_utility_task() -> None:
    m = evaluate(study_cohort(150, seed=1), study_cohort(150, seed=2), holdout=study_cohort(150, seed=3),
                 permutations=10)
    u = m["utility"]
    assert u["disease_auroc_trtr"] > 0.9 and u["disease_auroc_ratio"] > 0.9
    assert u["drug_adverse_event_auroc_tstr"] > 0.6
    assert u["onset_phenotypes"] and u["onset_auroc_ratio"] > 0.85
    assert set(u["tasks"]) == {"disease", "drug_adverse_event"} | {f"onset:{c}" for c in u["onset_phenotypes"]}


def test_evaluate_without_holdout_skips_the_holdout_metrics() -> None:
    m = evaluate(random_cohort(40, seed=1), random_cohort(40, seed=2), permutations=10)
    assert m["counts"]["holdout"] is None
    assert "dcr_membership_auroc" not in m["privacy"]
    assert "mmd2_baseline_holdout" not in m["fidelity"]
    assert set(m["privacy"]) == {"exact_copy_share", "nnaa_members", "dcr_synth_to_members_p5",
                                 "dcr_synth_to_members_p50"}
    assert "utility" not in m and "plausibility" not in m


def test_evaluate_flags_copies() -> None:
    real = random_cohort(60, seed=1)
    m = evaluate(real, real, holdout=random_cohort(60, seed=2), permutations=10)
    assert m["privacy"]["exact_copy_share"] == 1.0
    assert m["privacy"]["dcr_membership_auroc"] == 1.0
    assert m["fidelity"]["prevalence_r2_identity"] == 1.0
    assert m["fidelity"]["transition_r2_identity"] == 1.0
    assert m["fidelity"]["discriminator_auroc"] < 0.4
    assert m["privacy"]["domias_auroc"] > 0.9
    assert m["privacy"]["attribute_disclosure_gap"] > 0.0
    assert m["privacy"]["nnaa_members"] == 0.0 and m["privacy"]["nnaa_privacy_loss"] > 0.3
    assert all(t["tstr"] == t["trtr"] for t in m["utility"]["tasks"].values())


def test_evaluate_with_a_bundle_adds_plausibility(demo_bundle, tmp_path) -> None:
    bundle = StudyBundle.load(demo_bundle, None)
    real = bundle_cohort(bundle, 30)
    real = replace(real, events=(np.random.default_rng(0).random(real.events.shape) < 0.02).astype(np.float32),
                   sex=(np.arange(30) % 2).astype(np.float32), disease=np.arange(30) % len(bundle.diseases))
    m = evaluate(real, real, permutations=10, bundle=bundle)
    p = m["plausibility"]
    assert p["phenotype_pairs"] == p["phenotype_pairs_real"] > 0
    for key in ("phenotype_pairs_supported", "adverse_events_before_any_drug", "wrong_sex_patients",
                "lab_values_outside_limits"):
        assert key in p and f"{key}_real" in p
    assert p["lab_values"] == 0 and p["lab_values_outside_limits"] is None  # no labs observed: undefined
    assert p["sex_specific_columns"] >= 2
    md = (write_report(m, tmp_path / "r", title="t") / "report.md").read_text()
    assert "## Plausibility against the study bundle" in md
    assert "| Disease–phenotype pairs the graph supports |" in md


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
    for row in ("| MMD² per window (unbiased) |", "| Transition R² (around y = x) |",
                "| Real-vs-synthetic discriminator AUROC (5-fold) |", "| Which disease: TSTR / TRTR |",
                "| DOMIAS membership-inference AUROC |", "| Attribute disclosure gap (training − holdout) |",
                "| NNAA privacy loss (holdout − training) |", "## Utility per task (AUROC on the holdout)"):
        assert row in md
    assert "## Plausibility" not in md
    # every table row has as many cells as its header (no stray "|" inside a cell)
    for section in md.split("\n## ")[1:]:
        rows = [line.replace("\\|", "") for line in section.splitlines() if line.startswith("|")]
        assert all(row.count("|") == rows[0].count("|") for row in rows), section
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


def test_a_ratio_over_a_trtr_at_chance_is_reported_as_meaningless(tmp_path) -> None:
    """TSTR 0.77 over TRTR 0.45 is 1.7, which would read as the ≥ 0.95 target met: the real
    model ranks below chance, so metrics.json holds null and a note, and report.md says n/a."""
    from shared.evaluation.suite import _utility
    from shared.evaluation.utility import RATIO_NOT_MEANINGFUL, TaskResult

    def task(name: str, tstr: float, trtr: float) -> TaskResult:
        return TaskResult(name=name, tstr=tstr, trtr=trtr, ratio=tstr / trtr, n_train_real=40, n_train_synth=40,
                          n_test=20)

    utility = _utility([task("disease", 0.90, 0.95), task("drug_adverse_event", 0.77, 0.45),
                        task("onset:HP:1", 0.60, 0.50), task("onset:HP:2", 0.60, 0.50)])
    assert utility["disease_auroc_ratio"] == pytest.approx(0.90 / 0.95) and "disease_auroc_ratio_note" not in utility
    assert utility["drug_adverse_event_auroc_ratio"] is None
    assert utility["drug_adverse_event_auroc_ratio_note"] == RATIO_NOT_MEANINGFUL
    assert utility["onset_auroc_ratio"] is None and utility["onset_auroc_ratio_note"] == RATIO_NOT_MEANINGFUL  # TRTR = 0.5
    assert utility["tasks"]["drug_adverse_event"]["ratio"] is None
    assert utility["tasks"]["drug_adverse_event"]["ratio_note"] == RATIO_NOT_MEANINGFUL
    out = write_report({"utility": utility}, tmp_path / "r", title="t")
    assert json.loads((out / "metrics.json").read_text())["utility"] == utility
    rows = {line.split(" | ")[0].lstrip("| "): line for line in (out / "report.md").read_text().splitlines()
            if line.startswith("| ")}
    for label in ("Adverse event after the first drug: TSTR / TRTR", "drug_adverse_event",
                  "Later phenotype onset: TSTR / TRTR"):
        assert RATIO_NOT_MEANINGFUL in rows[label] and "1.711" not in rows[label]
    assert rows["Which disease: TSTR / TRTR"].split(" | ")[1] == "0.9474"
    # a site's report carries numbers only (no note): the TRTR alone still marks the ratio n/a
    from shared.evaluation.markdown import render_markdown
    site = {"utility": {"drug_adverse_event_auroc_trtr": 0.45, "drug_adverse_event_auroc_ratio": None}}
    assert RATIO_NOT_MEANINGFUL in render_markdown(site, title="site")
