"""``raregraph evaluate`` through the real CLI: the bundle it loads feeds the plausibility checks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from shared.bundle import StudyBundle
from shared.ehr.cohort import SYNTHETIC_ID_BASE
from shared.ehr.site import read_site
from shared.model.generation import write_synthetic
from shared.trajectories.tensorize import tensorize, to_cohort
from tests.raregraph.test_cli import run


def test_evaluate_reports_every_group(demo_bundle, coordinator_key, tmp_path) -> None:
    b = ["--bundle", demo_bundle, "--pub", coordinator_key[1]]
    code, _, stderr = run("data", "simulate", "--sites", "2", "--out", tmp_path / "sites", "--seed", "5",
                          "--max-patients", "60", *b, "-q")
    assert code == 0, stderr
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    # the "synthetic" release is site-1 itself, written back as a synthetic OMOP folder: all copies
    real, _ = tensorize(read_site(tmp_path / "sites" / "site-1", bundle=bundle)[0], bundle)
    copy = dataclasses.replace(real, person_id=SYNTHETIC_ID_BASE + np.arange(real.n))
    write_synthetic(to_cohort(copy, bundle, seed=0), tmp_path / "syn", card={})
    code, stdout, stderr = run("evaluate", "--real", tmp_path / "sites" / "site-1", "--synthetic", tmp_path / "syn",
                               *b, "--holdout", tmp_path / "sites" / "site-2", "--out", tmp_path / "report", "--json")
    assert code == 0, stderr
    m = json.loads(stdout)
    assert set(m) == {"counts", "settings", "fidelity", "utility", "plausibility", "privacy", "recorded"}
    # every code the site records: the copy holds only what the tensors hold, so it scores the round trip
    r = m["recorded"]
    assert r["prevalence_r2_identity"] == r["round_trip"]["prevalence_r2_identity"]
    assert r["patients_real"] == real.n and 0 < r["holdout"]["prevalence_r2_identity"] < 1
    assert r["representation_ceiling"]["patients"] == real.n
    assert r["representation_ceiling"]["occurrences"]["lost"] > 0
    assert m["privacy"]["exact_copy_share"] == 1.0 and m["privacy"]["nnaa_members"] == 0.0
    assert m["plausibility"]["phenotype_pairs"] == m["plausibility"]["phenotype_pairs_real"] > 0
    assert m["plausibility"]["phenotype_pairs_supported"] == m["plausibility"]["phenotype_pairs_supported_real"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Plausibility against the study bundle" in md and "## Utility per task" in md
    assert "## Fidelity over every code the site records" in md and "Representation ceiling of the real site" in md
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["recorded"] == r
    code, stdout, stderr = run("evaluate", "--real", tmp_path / "sites" / "site-1", "--synthetic", tmp_path / "syn",
                               *b, "--out", tmp_path / "report2", "-q")
    assert code == 0, stderr
    assert "discriminator AUROC" in stdout and "supported disease–phenotype pairs" in stdout
    assert f"all recorded codes {r['prevalence_r2_identity']:.3f}" in stdout
