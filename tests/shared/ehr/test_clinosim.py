"""The real-world check: a FHIR R4 Bulk export made by an independent synthetic-EHR generator
(``clinosim`` from PyPI, a test extra) goes through ``raregraph data validate`` end to end.

clinosim simulates a general hospital's inpatients (pneumonia, heart failure, COPD, ...) in
ICD-10-CM, SNOMED CT, RxNorm and LOINC, offline and seeded. None has a study disease, so the
right outcome is a report with code coverage per system and a clear "no study patients" — an
error (exit 1) whose one line says how many persons were read and which codes came closest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raregraph.cli import app

pytestmark = pytest.mark.slow  # the generator takes about 7 s for this export
runner = CliRunner()


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clinosim")
    # a 300-person catchment over one month: about 70 patients, a few thousand resources
    subprocess.run([sys.executable, "-m", "clinosim.simulator.cli", "simulate", "--output", str(out),
                    "--population", "300", "--seed", "7", "--country", "US", "--start", "2024-01-01",
                    "--end", "2024-01-31", "--format", "fhir-r4"],
                   check=True, capture_output=True, timeout=300, env={**os.environ, "CLINOSIM_LOG_LEVEL": "WARNING"})
    return out / "fhir_r4"


def test_an_independent_fhir_export_gets_a_report_and_no_study_patients(export, demo_bundle, coordinator_key,
                                                                       tmp_path) -> None:
    result = runner.invoke(app, ["data", "validate", str(export), "--bundle", str(demo_bundle),
                                 "--pub", str(coordinator_key[1]), "--out", str(tmp_path / "report")])
    assert result.exit_code == 1, result.output
    assert "no study patients: " in result.stderr and "persons read" in result.stderr
    assert "closest codes: " in result.stderr and "What to do" in result.stderr
    assert result.stdout.lstrip().startswith("verdict: no study patients")  # the verdict comes first
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["format"] == "fhir" and data["patients"] > 20 and data["events"] > 100
    assert {"Patient.ndjson", "Condition.ndjson", "Observation.ndjson"} <= {
        t["file"] for t in data["tables"].values()}
    assert "Encounter.ndjson" in data["ignored_files"]  # read by no reader, and said so

    systems = data["code_mapping"]["systems"]
    assert {"ICD10CM", "SNOMEDCT", "RXNORM"} <= set(systems)
    for name in ("ICD10CM", "SNOMEDCT", "RXNORM"):
        s = systems[name]
        assert s["rows"] > 0 and s["coverage"] is not None and 0 <= s["coverage"] <= 1
        assert s["top_unmapped"] and s["top_unmapped"][0]["rows"] >= s["top_unmapped"][-1]["rows"]
    assert data["code_mapping"]["native"].get("LOINC", 0) > 0  # labs are LOINC-coded: read as they are

    assert all(d["patients"] == 0 for d in data["study_diseases"].values())
    assert data["study_cohort"] == {"patients": 0, "min_patients": 20, "meets": False}
    assert data["verdict"]["status"] == "no study patients" and data["verdict"]["closest_codes"]
    assert "no patient has a diagnosis of a study disease" in data["tensors"]["error"]
    page = (tmp_path / "report" / "report.html").read_text()
    for text in ("No study patients", "Code coverage", "ICD10CM", "is below the study's minimum"):
        assert text in page, text
