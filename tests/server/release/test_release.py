"""``raregraph release`` through the real CLI: a passing release, a refused one, bad inputs."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import pytest

from server.release.gate import GateConfig, SitePrivacy, apply_gate, load_gate
from shared.bundle import StudyBundle
from shared.ehr.cohort import SYNTHETIC_ID_BASE
from tests.raregraph.test_cli import one_line_error, run

# the 4-step test model is untrained, so its release gate is permissive: the point is the plumbing
LENIENT = """[plausibility]
min-phenotype-pairs-supported = 0.0
max-phenotype-pairs-negated = 1.0
max-wrong-sex-patients = 1.0
max-lab-values-outside-limits = 1.0
max-adverse-events-before-any-drug = 1.0
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_bundle, coordinator_key) -> Path:
    """A one-site run folder: RUN/model trained with DP-SGD, RUN/privacy.json as a federation writes it."""
    root = tmp_path_factory.mktemp("release")
    code, _, stderr = run("data", "simulate", "--sites", "1", "--out", root / "sites", "--seed", "2",
                          "--max-patients", "40", "--bundle", demo_bundle, "--pub", coordinator_key[1], "--json")
    assert code == 0, stderr
    code, _, stderr = run("train", root / "sites" / "site-1", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                          "--out", root / "run" / "model", "--steps", "4", "--epsilon", "4", "--state",
                          root / "state", "--json")
    assert code == 0, stderr
    spent = json.loads((root / "run" / "model" / "model.json").read_text())["privacy"]
    (root / "run" / "privacy.json").write_text(json.dumps({"run_id": "r1", "sites": {"site-1": [
        {"round": 1, "run_id": "r1", "kind": "train", "epsilon": spent["epsilon"], "delta": 1e-5}]}}))
    return root / "run"


def args(run_dir: Path, bundle: Path, pub: Path, out: Path, *extra) -> list:
    return ["release", run_dir, "--bundle", bundle, "--pub", pub, "--n", "20", "--out", out, "--steps", "4", "-q", *extra]


def test_release_passes_and_writes_tables_card_and_report(run_dir, demo_bundle, coordinator_key, tmp_path) -> None:
    (tmp_path / "gate.toml").write_text(LENIENT)
    out = tmp_path / "rel"
    code, stdout, stderr = run(*args(run_dir, demo_bundle, coordinator_key[1], out, "--gate", tmp_path / "gate.toml",
                                     "--json"))
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["released"] is True
    status = {c["gate"]: c["status"] for c in summary["checks"]}
    assert status["phenotype_pairs_supported"] == "pass"
    # no site reported privacy numbers: said so, never passed silently
    assert status["exact_copy_share"] == status["membership_auroc"] == "not evaluated"
    card = json.loads((out / "data_card.json").read_text())
    assert card["release"]["epsilon_per_site"]["site-1"]["epsilon"] > 0 and card["bundle_sha256"]
    assert card["method"] and card["counts"]["patients"] == 20
    person = pd.read_csv(out / "person.csv")
    assert person["person_id"].min() >= SYNTHETIC_ID_BASE and person["person_id"].max() < 2**31  # 32-bit CDM ids
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<script" not in page and "not evaluated" in page
    # diseases, phenotypes and labs by name, beside their codes; the sites' fidelity where measured
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    contents = card["release"]["contents"]
    assert sum(d["patients"] for d in contents["diseases"]) == 20
    assert all(html.escape(name) in page for name in bundle.diseases["name"])
    top = contents["phenotype"][0]
    assert top["name"] and f"<td class=l>{html.escape(top['name'])}</td><td class=l><code>{top['code']}</code>" in page
    assert contents["lab"] and all(f["name"] for f in contents["lab"])
    assert "Not measured: the run had no federated evaluation" in page and card["release"]["site_evaluation"] is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # the lenient gate is flagged wherever the release is read
    loosened = ["min-phenotype-pairs-supported", "max-phenotype-pairs-negated", "max-wrong-sex-patients",
                "max-lab-values-outside-limits", "max-adverse-events-before-any-drug"]
    assert summary["gate_loosened"] == card["release"]["gate_loosened"] == loosened
    assert "LOOSER than the built-in one: " + ", ".join(loosened) in page


def test_a_gate_is_loosened_only_where_a_threshold_is_looser_than_the_default() -> None:
    assert GateConfig().loosened() == []
    assert GateConfig(max_membership_auroc=0.5, min_phenotype_pairs_supported=0.9,
                      require_site_reports=True).loosened() == []  # stricter is not looser
    assert GateConfig(max_membership_auroc=0.6, min_phenotype_pairs_supported=0.7).loosened() == [
        "min-phenotype-pairs-supported", "max-membership-auroc"]


def test_an_impossible_gate_refuses_and_writes_nothing(run_dir, demo_bundle, coordinator_key, tmp_path) -> None:
    (tmp_path / "gate.toml").write_text(LENIENT.replace("max-lab-values-outside-limits = 1.0",
                                                        "max-lab-values-outside-limits = 1.0\n"
                                                        "max-phenotype-pairs-negated = 0.0")
                                        .replace("min-phenotype-pairs-supported = 0.0",
                                                 "min-phenotype-pairs-supported = 1.0")
                                        .replace("max-phenotype-pairs-negated = 1.0\n", ""))
    out = tmp_path / "rel"
    code, stdout, stderr = run(*args(run_dir, demo_bundle, coordinator_key[1], out, "--gate", tmp_path / "gate.toml"))
    assert code == 1
    message = one_line_error(stderr)
    assert "release refused" in message and "phenotype_pairs_supported" in message and "needs ≥ 1" in message
    assert "FAIL" in stdout.upper() and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate.toml"]


def test_site_reported_privacy_gates(tmp_path) -> None:
    plaus = {"phenotype_pairs_supported": 0.9, "phenotype_pairs_negated": 0.0, "wrong_sex_patients": 0.05,
             "lab_values_outside_limits": float("nan"), "adverse_events_before_any_drug": 0.0}
    sites = [SitePrivacy("a", 0.0, 0.51, "x"), SitePrivacy("b", 0.01, 0.58, "y")]
    checks = {c.gate: c for c in apply_gate(plaus, sites, GateConfig())}
    assert checks["lab_values_outside_limits"].status == "pass"  # nothing to count: nothing wrong
    assert checks["exact_copy_share"].status == "fail" and checks["exact_copy_share"].measured == 0.01
    assert checks["membership_auroc"].status == "fail" and "b" in checks["membership_auroc"].note
    required = {c.gate: c.status for c in apply_gate(plaus, [], GateConfig(require_site_reports=True))}
    assert required["membership_auroc"] == "fail"


def test_the_membership_gate_pools_the_sites_and_still_catches_one_sites_own_leak() -> None:
    plaus = {"phenotype_pairs_supported": 0.9, "phenotype_pairs_negated": 0.0, "wrong_sex_patients": 0.0,
             "lab_values_outside_limits": 0.0, "adverse_events_before_any_drug": 0.0}

    def site(name: str, dcr: float, dcr_sd: float, domias: float, domias_sd: float) -> SitePrivacy:
        return SitePrivacy(name, 0.0, max(dcr, domias), "x", attacks={"dcr_membership_auroc": (dcr, dcr_sd),
                                                                      "domias_auroc": (domias, domias_sd)})

    def check(sites: list[SitePrivacy]):
        return next(c for c in apply_gate(plaus, sites, GateConfig()) if c.gate == "membership_auroc")

    # the demo's run of 4 December: a site of 14 held-out patients reads 0.603 with a no-leak SD of 0.117
    demo = [site("site-1", 0.463, 0.060, 0.443, 0.082), site("site-2", 0.558, 0.050, 0.479, 0.069),
            site("site-3", 0.404, 0.087, 0.603, 0.117)]
    pooled = check(demo)
    w = [1 / 0.060 ** 2, 1 / 0.050 ** 2, 1 / 0.087 ** 2]
    assert pooled.measured == pytest.approx((0.463 * w[0] + 0.558 * w[1] + 0.404 * w[2]) / sum(w))
    assert pooled.status == "pass" and f"SD {1 / sum(w) ** 0.5:.3f}" in pooled.note
    # a leak in the pool fails it
    assert check([site("a", 0.58, 0.03, 0.5, 0.05), site("b", 0.57, 0.03, 0.5, 0.05)]).status == "fail"
    # one site whose own measurement shows a leak fails the gate, however quiet the others are
    quiet = [site(f"s{i}", 0.50, 0.02, 0.50, 0.02) for i in range(6)]
    leaky = check([*quiet, site("leak", 0.70, 0.06, 0.5, 0.08)])
    assert leaky.measured < 0.55 and leaky.status == "fail" and "leak dcr_membership_auroc 0.700" in leaky.note


def test_release_reads_site_metrics_from_the_run_folder(run_dir, demo_bundle, coordinator_key, tmp_path) -> None:
    import shutil

    run_copy = tmp_path / "run"
    shutil.copytree(run_dir, run_copy)
    (run_copy / "evaluation" / "site-1").mkdir(parents=True)
    (run_copy / "evaluation" / "site-1" / "metrics.json").write_text(json.dumps(
        {"privacy": {"exact_copy_share": 0.0, "dcr_membership_auroc": 0.61, "dcr_membership_auroc_null_sd": 0.04,
                     "domias_auroc": 0.5, "domias_auroc_null_sd": 0.09}}))
    (tmp_path / "gate.toml").write_text(LENIENT)
    code, stdout, stderr = run(*args(run_copy, demo_bundle, coordinator_key[1], tmp_path / "rel", "--gate",
                                     tmp_path / "gate.toml", "--json"))
    assert code == 1 and "membership_auroc = 0.61, needs ≤ 0.55" in one_line_error(stderr)
    checks = {c["gate"]: c for c in json.loads(stdout)["checks"]}
    assert checks["exact_copy_share"]["status"] == "pass" and not (tmp_path / "rel").exists()
    # one site: the pool is that site's worst attack, with that attack's spread
    assert checks["membership_auroc"]["note"] == ("dcr_membership_auroc pooled over 1 site(s), inverse-variance "
                                                  "weights (spread with no leak: SD 0.040); per site (DCR/DOMIAS): "
                                                  "site-1 0.610/0.500")
    # with the sites' evaluation, the report shows fidelity and utility next to the gates
    (run_copy / "evaluation" / "summary.json").write_text(json.dumps(
        {"sites": {"site-1": {"fidelity.mmd2": 0.0312, "recorded.prevalence_r2_identity": 0.621}},
         "pooled": {"fidelity.mmd2": 0.0312, "recorded.prevalence_r2_identity": 0.621}}))
    (tmp_path / "gate-2.toml").write_text(LENIENT + "[privacy]\nmax-membership-auroc = 0.7\n")
    code, _, stderr = run(*args(run_copy, demo_bundle, coordinator_key[1], tmp_path / "rel2", "--gate",
                                tmp_path / "gate-2.toml"))
    assert code == 0, stderr
    card = json.loads((tmp_path / "rel2" / "data_card.json").read_text())
    assert card["release"]["site_evaluation"]["pooled"]["recorded.prevalence_r2_identity"] == 0.621
    page = (tmp_path / "rel2" / "report.html").read_text()
    assert "prevalence R² over every recorded code</td><td>0.621</td><td>0.621</td>" in page


@pytest.mark.parametrize(("text", "expected"), [
    ("[plausibility]\nmax-wrong-sex = 0.1\n", "gate.toml:2: unknown key 'max-wrong-sex' in table 'plausibility'"),
    ("[privacy]\n\nmax-membership-auroc = 'high'\n", "gate.toml:3: max-membership-auroc must be a number"),
    ("[privacy]\nmax-exact-copy-share = 2\n", "gate.toml:2: max-exact-copy-share must lie between 0 and 1"),
    ("[plausibility\n", "gate.toml:1: not valid TOML"),
    ("[gates]\n", "gate.toml:1: unknown table 'gates'"),
])
def test_bad_gate_file_names_file_and_line(tmp_path, text, expected) -> None:
    (tmp_path / "gate.toml").write_text(text)
    code, _, stderr = run("release", tmp_path / "run", "--bundle", tmp_path / "b", "--n", "5", "--out",
                          tmp_path / "rel", "--gate", tmp_path / "gate.toml")
    assert code == 1 and expected in one_line_error(stderr)
    with pytest.raises(ValueError, match=expected.split(": ", 1)[1].split(";")[0]):
        load_gate(tmp_path / "gate.toml")


def test_missing_model_and_missing_privacy_record(run_dir, demo_bundle, coordinator_key, tmp_path) -> None:
    code, _, stderr = run(*args(tmp_path / "nothing", demo_bundle, coordinator_key[1], tmp_path / "rel"))
    assert code == 1 and "not a model folder" in one_line_error(stderr)
    import shutil

    shutil.copytree(run_dir / "model", tmp_path / "run" / "model")
    code, _, stderr = run(*args(tmp_path / "run", demo_bundle, coordinator_key[1], tmp_path / "rel"))
    assert code == 1 and "privacy.json: not found" in one_line_error(stderr)
    assert not (tmp_path / "rel").exists()


def test_release_has_help_with_an_example() -> None:
    code, out, _ = run("release", "--help")
    assert code == 0 and "Example: raregraph release" in out
