"""Local codes through the bundle's code map: an OMOP and a FHIR site coded in ICD-10,
SNOMED CT, RxNorm and ATC read the same as a graph-coded site; unmapped, ambiguous and
broader codes are counted, not guessed; the HTML report for hospital IT."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from raregraph.cli import app
from shared.bundle import StudyBundle
from shared.ehr.codemap import CodeMapper
from shared.ehr.site import read_site, study_cohort

ICD10, SNOMED = "http://hl7.org/fhir/sid/icd-10", "http://snomed.info/sct"
RXNORM, ATC = "http://www.nlm.nih.gov/research/umls/rxnorm", "http://www.whocc.no/atc"
runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def snomed(bundle) -> tuple[str, str]:
    """A SNOMED CT code that maps to exactly one phenotype of the vocabulary, and that phenotype."""
    cm, v = bundle.codemap, bundle.vocabulary
    s = cm[cm["system"] == "SNOMEDCT"]
    single = s.groupby("code")["target"].transform("nunique") == 1
    row = s[single & s["target"].isin(v.loc[v["domain"] == "phenotype", "code"])].iloc[0]
    return str(row["code"]), str(row["target"])


# (person, day, graph code, local source value, FHIR (system, code), end day, lab value, unit)
def _events(snomed: tuple[str, str]) -> list[tuple]:
    sct, hp = snomed
    return [
        (1, "2020-01-10", "ORPHA:558", "ICD10:Q87.4", (ICD10, "Q87.4"), None, None, ""),
        (1, "2020-02-01", hp, f"SNOMEDCT:{sct}", (SNOMED, sct), None, None, ""),
        (1, "2020-03-01", "DRUGBANK:DB00678", "RXNORM:52175", (RXNORM, "52175"), "2020-09-01", None, ""),
        (1, "2020-03-05", "DRUGBANK:DB00335", "ATC:C07AB03", (ATC, "C07AB03"), "2020-06-01", None, ""),
        (1, "2020-04-01", "LOINC:2160-0", "LOINC:2160-0", ("http://loinc.org", "2160-0"), None, 1.1, "mg/dL"),
        (2, "2021-05-05", "ORPHA:586", "ICD10:E840", (ICD10, "E84.0"), None, None, ""),  # narrower, dot restored
        (2, "2021-06-01", "DRUGBANK:DB08820", "RXNORM:1243041", (RXNORM, "1243041"), "2021-12-01", None, ""),
    ]


def _write_omop(folder: Path, events: list[tuple], *, local: bool) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame({"person_id": [1, 2, 3], "gender_source_value": ["F", "M", "F"],
                  "year_of_birth": [1980, 1990, 2001]}).to_csv(folder / "person.csv", index=False)
    tables = {"condition_occurrence": [], "observation": [], "drug_exposure": [], "measurement": []}
    for person, day, graph, source, _, end, value, unit in events:
        code = source if local else graph
        if graph.startswith("ORPHA:"):
            tables["condition_occurrence"].append({"person_id": person, "condition_source_value": code,
                                                   "condition_start_date": day})
        elif graph.startswith("DRUGBANK:"):
            tables["drug_exposure"].append({"person_id": person, "drug_source_value": code,
                                            "drug_exposure_start_date": day, "drug_exposure_end_date": end or ""})
        elif graph.startswith("LOINC:"):
            tables["measurement"].append({"person_id": person, "measurement_source_value": code,
                                          "value_as_number": value, "unit_source_value": unit,
                                          "measurement_date": day})
        else:
            tables["observation"].append({"person_id": person, "observation_source_value": code,
                                          "observation_date": day})
    columns = {"condition_occurrence": ["person_id", "condition_source_value", "condition_start_date"],
               "observation": ["person_id", "observation_source_value", "observation_date"],
               "drug_exposure": ["person_id", "drug_source_value", "drug_exposure_start_date",
                                 "drug_exposure_end_date"],
               "measurement": ["person_id", "measurement_source_value", "value_as_number", "unit_source_value",
                               "measurement_date"]}
    for name, rows in tables.items():
        pd.DataFrame(rows, columns=columns[name]).to_csv(folder / f"{name}.csv", index=False)
    return folder


def _write_fhir(folder: Path, events: list[tuple]) -> Path:
    folder.mkdir(parents=True)
    patients = [{"resourceType": "Patient", "id": str(p), "gender": g, "birthDate": f"{y}-01-01"}
                for p, g, y in ((1, "female", 1980), (2, "male", 1990), (3, "female", 2001))]
    out: dict[str, list[dict]] = {"Patient": patients, "Condition": [], "Observation": [], "MedicationStatement": []}
    for i, (person, day, graph, _, (system, code), end, value, unit) in enumerate(events):
        base = {"id": f"r{i}", "subject": {"reference": f"Patient/{person}"}}
        concept = {"coding": [{"system": system, "code": code}]}
        if graph.startswith("ORPHA:"):
            out["Condition"].append({"resourceType": "Condition", **base, "code": concept, "onsetDateTime": day})
        elif graph.startswith("DRUGBANK:"):
            out["MedicationStatement"].append({"resourceType": "MedicationStatement", **base, "status": "completed",
                                               "medicationCodeableConcept": concept,
                                               "effectivePeriod": {"start": day, "end": end}})
        elif graph.startswith("LOINC:"):
            out["Observation"].append({"resourceType": "Observation", **base, "status": "final", "code": concept,
                                       "effectiveDateTime": day, "valueQuantity": {
                                           "value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                                           "code": unit}})
        else:
            out["Observation"].append({"resourceType": "Observation", **base, "status": "final", "code": concept,
                                       "effectiveDateTime": day})
    for rtype, rows in out.items():
        (folder / f"{rtype}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_local_codes_read_the_same_as_graph_codes(bundle, snomed, tmp_path) -> None:
    events = _events(snomed)
    graph, graph_report = read_site(_write_omop(tmp_path / "graph", events, local=False), bundle=bundle)
    omop, omop_report = read_site(_write_omop(tmp_path / "omop", events, local=True), bundle=bundle)
    fhir, fhir_report = read_site(_write_fhir(tmp_path / "fhir", events), bundle=bundle)
    pd.testing.assert_frame_equal(omop.events, graph.events)
    pd.testing.assert_frame_equal(fhir.events, graph.events)
    assert graph_report.code_mapping["systems"] == {}
    assert graph_report.code_mapping["native"] == {"DRUGBANK": 3, "HP": 1, "LOINC": 1, "ORPHA": 2}
    for report in (omop_report, fhir_report):
        m = report.code_mapping
        assert m["native"] == {"LOINC": 1} and m["ambiguous"] == []
        assert {s: c["mapped"] for s, c in m["systems"].items()} == {
            "ATC": {"exact": 1}, "ICD10": {"exact": 1, "narrower": 1}, "RXNORM": {"exact": 2}, "SNOMEDCT": {"exact": 1}}
        assert all(c["coverage"] == 1.0 for c in m["systems"].values())
        assert report.study_diseases["ORPHA:558"]["patients"] == 1 and report.study_diseases["ORPHA:355"]["patients"] == 0
        assert report.date_ranges["diagnosis"] == {"first": "2020-01-10", "last": "2021-05-05"}


def _unclear_site(tmp_path: Path, snomed) -> Path:
    events = _events(snomed) + [
        (3, "2022-01-01", "ORPHA:355", "ICD10:E75.2", (ICD10, "E75.2"), None, None, ""),  # Gaucher or Fabry
        (3, "2022-01-02", "ORPHA:365", "ICD10:E74.0", (ICD10, "E74.0"), None, None, ""),  # broader than Pompe
        (3, "2022-01-03", "ORPHA:1", "ICD10:J45.9", (ICD10, "J45.9"), None, None, ""),  # asthma: not in the map
        (2, "2022-01-03", "ORPHA:1", "ICD10:J45.9", (ICD10, "J45.9"), None, None, ""),
        (3, "2022-02-01", "ORPHA:1", "ICD10CM:Q87.40", (ICD10 + "-cm", "Q87.40"), None, None, ""),  # parent Q87.4
    ]
    return _write_omop(tmp_path / "omop", events, local=True), _write_fhir(tmp_path / "fhir", events)


def test_broader_ambiguous_and_unmapped_codes_are_counted_not_guessed(bundle, snomed, tmp_path) -> None:
    for site in _unclear_site(tmp_path, snomed):
        cohort, report = read_site(site, bundle=bundle)
        icd = report.code_mapping["systems"]["ICD10"]
        assert icd["mapped"] == {"exact": 1, "narrower": 1} and icd["ambiguous"] == 0
        assert icd["unmapped"] == 4  # E75.2 and E74.0 are broader: not used by default
        assert [(u["code"], u["rows"]) for u in icd["top_unmapped"]] == [("J45.9", 2), ("E74.0", 1), ("E75.2", 1)]
        first = icd["top_unmapped"][0]
        assert first["file"] in ("condition_occurrence.csv", "Condition.ndjson") and first["line"] >= 2
        assert first["field"] in ("condition_source_value", "code")
        assert report.code_mapping["systems"]["ICD10CM"]["mapped"] == {"narrower": 1}
        assert report.study_diseases["ORPHA:558"]["patients"] == 2
        assert not cohort.events["code"].isin(["ORPHA:355", "ORPHA:324", "ORPHA:365"]).any()

        cohort, report = read_site(site, bundle=bundle, accept="broader")
        icd = report.code_mapping["systems"]["ICD10"]
        assert icd["mapped"] == {"exact": 1, "narrower": 1, "broader": 1} and icd["ambiguous"] == 1
        amb, = report.code_mapping["ambiguous"]
        assert (amb["system"], amb["code"], amb["candidates"]) == ("ICD10", "E75.2", ["ORPHA:324", "ORPHA:355"])
        assert report.study_diseases["ORPHA:365"]["patients"] == 1  # E74.0 → Pompe, asked for
        assert not cohort.events["code"].isin(["ORPHA:355", "ORPHA:324"]).any()  # still none picked


def test_a_site_table_decides_for_its_codes(bundle, snomed, tmp_path) -> None:
    table = tmp_path / "local.tsv"
    table.write_text("system\tcode\trelation\ttarget\ttarget_name\tcitation\n"
                     "ICD10\tE75.2\texact\tORPHA:355\tGaucher disease\tthis hospital codes only Gaucher as E75.2\n")
    omop, _ = _unclear_site(tmp_path, snomed)
    cohort, report = read_site(omop, bundle=bundle, site_codemap=table)
    assert report.code_mapping["site_table"] == {"file": "local.tsv", "codes": 1, "rows_mapped": 1}
    assert report.study_diseases["ORPHA:355"]["patients"] == 1
    with pytest.raises(ValueError, match="needs the study bundle"):
        read_site(omop, site_codemap=table)


def test_mapper_prefers_exact_and_rejects_unknown_levels() -> None:
    table = pd.DataFrame({"system": ["ICD10"] * 3, "code": ["A00.1"] * 3,
                          "target": ["ORPHA:1", "ORPHA:2", "ORPHA:3"], "relation": ["narrower", "exact", "broader"],
                          "source": "t"})
    mapper = CodeMapper(table, accept="related")
    assert (mapper.resolve("ICD10", "a001").target, mapper.resolve("ICD10", "A00.1").relation) == ("ORPHA:2", "exact")
    assert mapper.resolve("ICD10", "A00.12").relation == "narrower"  # a child of an exact code
    assert mapper.resolve("SNOMEDCT", "1").status == "unmapped"
    with pytest.raises(ValueError, match="accept must be one of"):
        CodeMapper(table, accept="close")  # type: ignore[arg-type]


def test_cli_writes_an_escaped_html_report(tmp_path, demo_bundle, coordinator_key, snomed) -> None:
    omop, _ = _unclear_site(tmp_path, snomed)
    with open(omop / "observation.csv", "a", encoding="utf-8") as fh:
        fh.write("1,LOCAL:<b>x</b>,2020-05-01\n3,HP:0001166,2020-13-01\n")
    args = ["data", "validate", str(omop), "--bundle", str(demo_bundle), "--pub", str(coordinator_key[1])]
    stopped = runner.invoke(app, [*args, "--out", str(tmp_path / "r1")])
    assert stopped.exit_code == 1
    page = (tmp_path / "r1" / "report.html").read_text()
    assert "Reading stopped" in page and "observation.csv:4: column observation_date" in page
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "r2"), "--skip-bad-rows", "--accept", "broader"])
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert data["skipped_rows"] == {"bad date": 1} and data["skipped_per_file"] == {"observation.csv": 1}
    assert data["problems"][0]["reason"] == "bad date"
    assert data["code_mapping"]["systems"]["LOCAL"]["top_unmapped"][0]["code"] == "<b>x</b>"
    assert data["study_diseases"]["ORPHA:586"]["patients"] == 1
    page = (tmp_path / "r2" / "report.html").read_text()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "<script" not in page
    for text in ("Code coverage", "E75.2", "ORPHA:324, ORPHA:355", "Write dates as YYYY-MM-DD", "Study patients",
                 "Date ranges", "Lab units", "<td>observation.csv</td>", "Time grid", "8 windows of 180 days",
                 "events outside the time grid", "is below the study's minimum</span> of 20 per site"):
        assert text in page, text
    assert data["study_cohort"] == {"patients": 3, "min_patients": 20, "meets": False}
    assert data["time_grid"] == {"windows": 8, "windows-before": 1, "window-days": 180}
    assert data["tensors"]["events_outside_grid"] >= 0 and data["tensors"]["patients_kept"] == 3
    assert "report written to" in result.stdout and "codes ICD10:" in result.stdout
    assert "study cohort: 3 patients with a study diagnosis" in result.stdout
    bad = runner.invoke(app, [*args, "--accept", "close"])
    assert bad.exit_code == 1 and "--accept must be one of" in bad.stderr


def _medication(i: int, concept: dict) -> dict:
    return {"resourceType": "MedicationStatement", "id": f"m{i}", "subject": {"reference": "Patient/1"},
            "status": "completed", "medicationCodeableConcept": concept,
            "effectivePeriod": {"start": f"2020-03-{i + 1:02d}", "end": "2020-09-01"}}


def test_drug_names_map_through_the_name_rows(bundle, tmp_path) -> None:
    local = "urn:oid:1.2.3.4"  # a hospital formulary: not a known system, so its display is a name
    concepts = [
        {"text": " Velaglucerase   ALFA"},  # text only
        {"coding": [{"system": local, "code": "F1", "display": "Losartan Potassium"}]},  # a display
        {"text": "Cerezyme 400 U", "coding": [{"system": local, "code": "F2", "display": "imiglucerase"}]},
        {"text": "atenolol", "coding": [{"system": RXNORM, "code": "999999"}]},  # a known system: codes win
        {"text": "Brandol 5 mg"},
    ]
    fhir = tmp_path / "fhir"
    fhir.mkdir()
    (fhir / "Patient.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "1", "gender": "female",
                                                     "birthDate": "1980-01-01"}) + "\n")
    (fhir / "MedicationStatement.ndjson").write_text("".join(json.dumps(_medication(i, c)) + "\n"
                                                             for i, c in enumerate(concepts)))
    cohort, report = read_site(fhir, bundle=bundle)
    assert sorted(cohort.events["code"]) == ["DRUGBANK:DB00053", "DRUGBANK:DB00678", "DRUGBANK:DB06720"]
    name = report.code_mapping["systems"]["NAME"]
    assert (name["mapped"], name["unmapped"]) == ({"exact": 3}, 1)
    assert [(u["code"], u["field"], u["line"]) for u in name["top_unmapped"]] == [
        ("brandol 5 mg", "medicationCodeableConcept.text", 5)]
    assert report.code_mapping["systems"]["RXNORM"]["unmapped"] == 1

    omop = _write_omop(tmp_path / "omop", [], local=True)
    drugs = pd.DataFrame({"person_id": [1, 1, 1, 1], "drug_source_value": [
        "  Velaglucerase   ALFA", "NAME:atenolol", "Cerezyme 400 U", "RXNORM:52175"],
        "drug_exposure_start_date": "2020-03-01", "drug_exposure_end_date": "2020-04-01"})
    drugs.to_csv(omop / "drug_exposure.csv", index=False)
    pd.DataFrame({"person_id": [1], "condition_source_value": ["Marfan syndrome"],
                  "condition_start_date": ["2020-01-01"]}).to_csv(omop / "condition_occurrence.csv", index=False)
    cohort, report = read_site(omop, bundle=bundle)
    assert sorted(cohort.events.loc[cohort.events["domain"] == "drug", "code"]) == [
        "DRUGBANK:DB00335", "DRUGBANK:DB00678", "DRUGBANK:DB06720"]
    systems = report.code_mapping["systems"]
    assert (systems["NAME"]["mapped"], systems["NAME"]["unmapped"]) == ({"exact": 2}, 1)
    assert systems["NAME"]["top_unmapped"] == [
        {"code": "cerezyme 400 u", "rows": 1, "file": "drug_exposure.csv", "line": 4, "field": "drug_source_value"}]
    assert systems["(no prefix)"]["unmapped"] == 1  # only drug_source_value holds names


def test_a_site_table_can_name_its_own_drugs(bundle, tmp_path) -> None:
    table = tmp_path / "local.tsv"
    table.write_text("system\tcode\trelation\ttarget\ttarget_name\tcitation\n"
                     "NAME\tCerezyme 400 U\texact\tDRUGBANK:DB00053\tImiglucerase\tour pharmacy's formulary\n")
    omop = _write_omop(tmp_path / "omop", [], local=True)
    pd.DataFrame({"person_id": [1], "drug_source_value": ["CEREZYME  400 u"],
                  "drug_exposure_start_date": ["2020-03-01"], "drug_exposure_end_date": [""]}).to_csv(omop / "drug_exposure.csv", index=False)
    cohort, report = read_site(omop, bundle=bundle, site_codemap=table)
    assert list(cohort.events["code"]) == ["DRUGBANK:DB00053"]
    assert report.code_mapping["site_table"] == {"file": "local.tsv", "codes": 1, "rows_mapped": 1}


def test_the_report_says_whether_the_site_has_the_minimum_cohort(bundle, snomed, tmp_path) -> None:
    cohort, report = read_site(_write_omop(tmp_path / "omop", _events(snomed), local=True), bundle=bundle)
    assert report.study_cohort == {"patients": 2, "min_patients": 20, "meets": False}
    assert report.as_dict()["study_cohort"] == report.study_cohort
    study = bundle.study["study"]
    small = dataclasses.replace(bundle, study={**bundle.study, "study": {**study, "min-patients": 2}})
    assert study_cohort(cohort, small) == {"patients": 2, "min_patients": 2, "meets": True}
    old = dataclasses.replace(bundle, study={**bundle.study, "study": {k: v for k, v in study.items()
                                                                       if k != "min-patients"}})
    assert study_cohort(cohort, old)["min_patients"] == 20  # a bundle made before the setting
    _, without = read_site(_write_omop(tmp_path / "plain", _events(snomed), local=False))
    assert without.study_cohort is None
