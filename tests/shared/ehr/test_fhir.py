"""FHIR Bulk reader: the OMOP ↔ FHIR round trip to the same tensors, every kind of bad
line, gzip and split files, codes outside the graph's systems, units, and the CLI."""

from __future__ import annotations

import hashlib
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from raregraph.cli import app
from shared.bundle import StudyBundle
from shared.ehr.cohort import Cohort
from shared.ehr.fhir import read_fhir
from shared.ehr.omop_tables import write_omop
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium
from shared.ehr.site import data_fingerprint, detect_format, read_site
from shared.ehr.units import conversion_factor
from shared.errors import InputError
from shared.trajectories.tensorize import tensorize

SYSTEMS = {"ORPHA": "http://www.orpha.net", "HP": "http://purl.obolibrary.org/obo/hp.owl",
           "DRUGBANK": "http://www.drugbank.ca", "LOINC": "http://loinc.org"}
ICD10 = "http://hl7.org/fhir/sid/icd-10"
UCUM = "http://unitsofmeasure.org"
#: labs the export writes in another unit than the bundle's: code → (unit, factor from the bundle's unit)
OTHER_UNITS = {"LOINC:2160-0": ("umol/L", 10_000 / 113.12), "LOINC:718-7": ("g/L", 10.0), "LOINC:2532-0": ("ukat/L", 1 / 60)}


# --- a cohort written as a FHIR R4 Bulk export ------------------------------------------
def _concept(code: str, *, icd_first: bool = False) -> dict:
    namespace, local = code.split(":", 1)
    coding = [{"system": SYSTEMS[namespace], "code": code if namespace == "HP" else local}]
    if icd_first:  # a local coding before the graph's: the first coding in a graph system wins
        coding.insert(0, {"system": ICD10, "code": "E75.2", "display": "Other sphingolipidosis"})
    return {"coding": coding, "text": code}


def _ref(person: int) -> dict:
    return {"reference": f"Patient/{person}"}


def cohort_to_fhir(cohort: Cohort, *, other_units: dict[str, tuple[str, float]] | None = None) -> dict[str, list[dict]]:
    """Resources per type in the exact R4 JSON shape, varying the fields a reader must accept:
    onsetDateTime / onsetPeriod / recordedDate, findings as code-only and as
    valueCodeableConcept, drugs as statements, requests and administrations, adverse events
    naming their suspect drug, labs in UCUM (some in another unit)."""
    out: dict[str, list[dict]] = {t: [] for t in ("Patient", "Condition", "Observation", "MedicationStatement",
                                                  "MedicationRequest", "MedicationAdministration", "AdverseEvent")}
    for p in cohort.persons.itertuples():
        birth = f"{p.year_of_birth}" if p.person_id % 2 else f"{p.year_of_birth}-07-01"
        out["Patient"].append({"resourceType": "Patient", "id": str(p.person_id), "active": True,
                               "gender": "male" if p.sex == "M" else "female", "birthDate": birth})
    last_drug: dict[int, list[tuple[pd.Timestamp, str]]] = {}
    for i, e in enumerate(cohort.events.itertuples()):
        day = e.date.strftime("%Y-%m-%d")
        base = {"id": f"r{i}", "subject": _ref(e.person_id)}
        if e.domain == "diagnosis":
            when = [{"onsetDateTime": day}, {"onsetPeriod": {"start": f"{day}T08:00:00+02:00"}},
                    {"recordedDate": day}][i % 3]
            out["Condition"].append({"resourceType": "Condition", **base, "code": _concept(e.code, icd_first=i % 2 == 0),
                                     "clinicalStatus": {"coding": [{"code": "active"}]}, **when})
        elif e.domain == "drug":
            end = None if pd.isna(e.end_date) else e.end_date.strftime("%Y-%m-%d")
            kind = ("MedicationStatement", "MedicationRequest", "MedicationAdministration")[i % 3] if end else \
                "MedicationStatement"
            res = {"resourceType": kind, **base, "status": "completed" if kind != "MedicationRequest" else "active",
                   "medicationCodeableConcept": _concept(e.code)}
            if kind == "MedicationRequest":
                res |= {"intent": "order", "authoredOn": f"{day}T09:15:00Z",
                        "dispenseRequest": {"validityPeriod": {"start": day, "end": end}}}
            elif end is None:
                res["effectiveDateTime"] = day
            else:
                res["effectivePeriod"] = {"start": day, "end": end}
            out[kind].append(res)
            last_drug.setdefault(e.person_id, []).append((e.date, f"{kind}/r{i}"))
        elif e.domain == "lab":
            unit, value = e.unit, float(e.value)
            if other_units and e.code in other_units:
                unit, factor = other_units[e.code]
                value *= factor
            out["Observation"].append({
                "resourceType": "Observation", **base, "status": "final", "code": _concept(e.code),
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": "laboratory"}]}],
                "effectiveDateTime": f"{day}T07:45:00+01:00",
                "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}})
        elif e.domain == "adverse_event":
            taken = [ref for start, ref in last_drug.get(e.person_id, []) if start <= e.date]
            res = {"resourceType": "AdverseEvent", **base, "actuality": "actual", "event": _concept(e.code),
                   "date": day}
            if taken:
                res["suspectEntity"] = [{"instance": {"reference": taken[-1]}}]
            out["AdverseEvent"].append(res)
        elif i % 3 == 0:  # a finding as the value of a "phenotypic finding" observation
            out["Observation"].append({"resourceType": "Observation", **base, "status": "final",
                                       "code": {"coding": [{"system": SYSTEMS["LOINC"], "code": "8117-7"}]},
                                       "valueCodeableConcept": _concept(e.code), "effectiveDateTime": day})
        elif i % 3 == 1:  # a finding observed: the observation's own code
            out["Observation"].append({"resourceType": "Observation", **base, "status": "final",
                                       "code": _concept(e.code), "effectivePeriod": {"start": day}})
        else:  # a phenotype on the problem list
            out["Condition"].append({"resourceType": "Condition", **base, "code": _concept(e.code),
                                     "onsetDateTime": day})
    return {t: rs for t, rs in out.items() if rs}


def write_ndjson(resources: dict[str, list[dict]], folder: Path, *, gz: bool = False, parts: int = 1) -> Path:
    """Write ``<Type>.ndjson`` (or numbered parts, or gzip) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for rtype, rows in resources.items():
        chunks = np.array_split(np.arange(len(rows)), parts) if parts > 1 else [np.arange(len(rows))]
        for k, idx in enumerate(chunks):
            name = f"{rtype}.ndjson" if parts == 1 else (f"{rtype}.{k:03d}.ndjson" if k % 2 else f"{k + 1}.{rtype}.ndjson")
            text = "".join(json.dumps(rows[i]) + "\n" for i in idx)
            if gz:
                with gzip.open(folder / f"{name}.gz", "wt", encoding="utf-8") as fh:
                    fh.write(text)
            else:
                (folder / name).write_text(text, encoding="utf-8")
    return folder


# --- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def simulated(bundle) -> Cohort:
    (_, site), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=5, min_patients=60, max_patients=60)
    return site


def small_cohort() -> Cohort:
    persons = pd.DataFrame({"person_id": [1, 2, 3], "sex": ["F", "M", "F"], "year_of_birth": [1980, 1990, 2001]})
    events = pd.DataFrame({
        "person_id": [1, 1, 1, 2, 2, 3],
        "date": pd.to_datetime(["2020-01-01", "2020-02-01", "2020-03-01", "2021-01-01", "2021-03-01", "2022-05-05"]),
        "code": ["ORPHA:558", "HP:0001166", "LOINC:2160-0", "ORPHA:905", "DRUGBANK:DB00859", "ORPHA:355"],
        "value": [np.nan, np.nan, 1.1, np.nan, np.nan, np.nan],
        "unit": ["", "", "mg/dL", "", "", ""],
        "end_date": pd.to_datetime([None, None, None, None, "2021-09-01", None]),
    })
    return Cohort.from_frames(persons, events)


def _site(tmp_path: Path, **kwargs) -> Path:
    return write_ndjson(cohort_to_fhir(small_cohort()), tmp_path / "fhir", **kwargs)


# --- round trips ------------------------------------------------------------------------
def test_small_cohort_round_trip(tmp_path) -> None:
    cohort = small_cohort()
    back, report = read_site(_site(tmp_path))
    pd.testing.assert_frame_equal(back.persons, cohort.persons)
    pd.testing.assert_frame_equal(back.events, cohort.events)
    assert report.format == "fhir" and report.patients == 3 and report.events == 6
    assert report.tables["Patient"] == {"file": "Patient.ndjson", "format": "ndjson", "rows": 3,
                                        "person_ids": "FHIR Patient.id"}
    assert report.codes_outside_graph == {} and report.skipped_rows == {}


def test_simulated_site_gives_the_same_tensors_as_fhir_and_as_omop(bundle, simulated, tmp_path) -> None:
    write_omop(simulated, tmp_path / "omop")
    write_ndjson(cohort_to_fhir(simulated, other_units=OTHER_UNITS), tmp_path / "fhir")
    as_omop, omop_report = read_site(tmp_path / "omop", bundle=bundle)
    as_fhir, fhir_report = read_site(tmp_path / "fhir", bundle=bundle)
    assert (omop_report.format, fhir_report.format) == ("omop", "fhir")
    pd.testing.assert_frame_equal(as_fhir.persons, as_omop.persons)
    pd.testing.assert_frame_equal(as_fhir.events.drop(columns="value"), as_omop.events.drop(columns="value"))
    np.testing.assert_allclose(as_fhir.events["value"], as_omop.events["value"], rtol=1e-9)
    first, s1 = tensorize(as_omop, bundle)
    second, s2 = tensorize(as_fhir, bundle)
    assert first.n == 60 and first.events.sum() > 300 and first.lab_mask.sum() > 100
    np.testing.assert_array_equal(second.events, first.events)
    np.testing.assert_array_equal(second.lab_mask, first.lab_mask)
    np.testing.assert_allclose(second.labs, first.labs, atol=1e-5)
    assert s2.lab_unit_mismatch == s1.lab_unit_mismatch == 0
    converted = fhir_report.lab_units["converted"]
    assert set(converted) <= {"LOINC:2160-0: umol/L → mg/dL", "LOINC:718-7: g/L → g/dL", "LOINC:2532-0: ukat/L → U/L"}
    assert sum(converted.values()) > 0 and fhir_report.lab_units["unconvertible"] == {}
    assert fhir_report.tables["AdverseEvent"]["rows"] > 0  # their suspects were already exposures
    assert "suspect_exposures_added" not in fhir_report.tables["AdverseEvent"]
    assert set(fhir_report.as_dict()) == set(omop_report.as_dict())


def test_gzip_and_split_files_read_like_one_file(tmp_path) -> None:
    plain, _ = read_site(_site(tmp_path))
    folder = write_ndjson(cohort_to_fhir(small_cohort()), tmp_path / "parts", gz=True, parts=2)
    names = sorted(p.name for p in folder.iterdir())
    assert "1.Patient.ndjson.gz" in names and "Patient.001.ndjson.gz" in names
    back, report = read_site(folder)
    pd.testing.assert_frame_equal(back.events, plain.events)
    assert report.tables["Patient"]["file"] == "1.Patient.ndjson.gz, Patient.001.ndjson.gz"
    assert report.tables["Patient"]["format"] == "ndjson.gz" and report.tables["Patient"]["rows"] == 3


# --- what is read from each resource ----------------------------------------------------
def _append(folder: Path, rtype: str, *resources: dict) -> None:
    with open(folder / f"{rtype}.ndjson", "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in resources)


def test_codes_outside_the_graph_are_counted_by_system(tmp_path) -> None:
    site = _site(tmp_path)
    _append(site, "Condition",
            {"resourceType": "Condition", "subject": _ref(1), "onsetDateTime": "2020-04-01",
             "code": {"coding": [{"system": ICD10, "code": "E75.2"}, {"system": "http://snomed.info/sct", "code": "1"}]}},
            {"resourceType": "Condition", "subject": _ref(2), "onsetDateTime": "2020-04-01",
             "code": {"coding": [{"system": ICD10, "code": "E75.2"}]}},
            {"resourceType": "Condition", "subject": _ref(2), "recordedDate": "2020-04-01", "code": {"text": "gout"}})
    _append(site, "MedicationRequest",
            {"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": _ref(1),
             "authoredOn": "2020-05-01", "medicationCodeableConcept": {
                 "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}]}})
    cohort, report = read_site(site)
    assert report.events == 6 and report.skipped_rows == {}
    out = report.as_dict()["codes_outside_graph"]
    assert out[ICD10] == {"resources": 2, "top_codes": [{"code": "E75.2", "resources": 2}]}
    assert out["http://www.nlm.nih.gov/research/umls/rxnorm"]["resources"] == 1
    assert out["(text only)"]["resources"] == 1


def test_statuses_absent_findings_and_other_values_are_not_used(tmp_path) -> None:
    site = _site(tmp_path)
    hp = _concept("HP:0001250")
    _append(site, "Observation",
            {"resourceType": "Observation", "status": "final", "subject": _ref(1), "effectiveDateTime": "2020-02-02",
             "code": hp, "valueBoolean": False},
            {"resourceType": "Observation", "status": "final", "subject": _ref(1), "effectiveDateTime": "2020-02-02",
             "code": hp, "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "2667000"}]}},
            {"resourceType": "Observation", "status": "entered-in-error", "subject": _ref(1), "code": hp,
             "effectiveDateTime": "2020-02-02"},
            {"resourceType": "Observation", "status": "final", "subject": _ref(1), "effectiveDateTime": "2020-02-02",
             "code": _concept("LOINC:2160-0"), "valueString": "pending"},
            {"resourceType": "Observation", "status": "final", "subject": _ref(1), "effectiveDateTime": "2020-02-02",
             "code": hp, "valueBoolean": True})
    _append(site, "Condition", {"resourceType": "Condition", "subject": _ref(2), "onsetDateTime": "2020-04-01",
                                "code": hp, "verificationStatus": {"coding": [{"code": "refuted"}]}})
    cohort, report = read_site(site)
    assert report.not_used == {"finding recorded as absent": 2, "Observation entered-in-error": 1,
                               "Observation valueString (not read)": 1, "Condition refuted": 1}
    assert (cohort.events["code"] == "HP:0001250").sum() == 1  # the valueBoolean true one


def test_medication_references_and_suspects_become_exposures(tmp_path) -> None:
    site = _site(tmp_path)
    _append(site, "Medication", {"resourceType": "Medication", "id": "m1", "code": _concept("DRUGBANK:DB00678")})
    _append(site, "MedicationAdministration",
            {"resourceType": "MedicationAdministration", "id": "a1", "status": "completed", "subject": _ref(3),
             "medicationReference": {"reference": "Medication/m1"}, "effectiveDateTime": "2022-06-01T10:00:00Z"})
    _append(site, "MedicationRequest",
            {"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": _ref(1),
             "authoredOn": "2020-05-01", "contained": [{"resourceType": "Medication", "id": "c",
                                                         "code": _concept("DRUGBANK:DB00001")}],
             "medicationReference": {"reference": "#c"},
             "dispenseRequest": {"expectedSupplyDuration": {"value": 4, "unit": "weeks", "code": "wk"}}})
    _append(site, "AdverseEvent",
            {"resourceType": "AdverseEvent", "actuality": "actual", "subject": _ref(3), "date": "2022-06-03",
             "event": _concept("HP:0002013"), "suspectEntity": [{"instance": {"reference": "MedicationAdministration/a1"}}]},
            {"resourceType": "AdverseEvent", "actuality": "actual", "subject": _ref(1), "date": "2020-03-02",
             "event": _concept("HP:0001945"), "suspectEntity": [{"instance": {"reference": "Medication/m1"}}]},
            {"resourceType": "AdverseEvent", "actuality": "potential", "subject": _ref(1), "date": "2020-03-02",
             "event": _concept("HP:0001945")})
    cohort, report = read_site(site)
    e = cohort.events
    drugs = e[e["domain"] == "drug"].set_index(["person_id", "code"])
    assert drugs.loc[(3, "DRUGBANK:DB00678"), "date"] == pd.Timestamp("2022-06-01")
    assert drugs.loc[(1, "DRUGBANK:DB00001"), "end_date"] == pd.Timestamp("2020-05-29")  # 4 weeks of supply
    # the suspect named only as a Medication: a one-day exposure on the event's day
    assert drugs.loc[(1, "DRUGBANK:DB00678"), ["date", "end_date"]].tolist() == [pd.Timestamp("2020-03-02")] * 2
    assert report.tables["AdverseEvent"]["suspect_exposures_added"] == 1
    assert report.not_used == {"AdverseEvent potential": 1}
    assert set(e.loc[e["person_id"] == 3, "code"]) >= {"HP:0002013", "DRUGBANK:DB00678"}


def test_non_integer_ids_are_numbered_and_references_resolve(tmp_path) -> None:
    folder = tmp_path / "uuid"
    ids = ["6f0b8f1e-0000-4000-8000-000000000001", "pat-b"]
    write_ndjson({
        "Patient": [{"resourceType": "Patient", "id": i, "gender": g, "birthDate": "1970-02-03"}
                    for i, g in zip(ids, ("female", "male"))],
        "Condition": [{"resourceType": "Condition", "subject": {"reference": f"urn:uuid:{ids[0]}"},
                       "code": _concept("ORPHA:558"), "onsetDateTime": "2020-01-01"},
                      {"resourceType": "Condition", "subject": {"reference": "https://ehr.example.org/fhir/Patient/pat-b/_history/3"},
                       "code": _concept("ORPHA:905"), "onsetDateTime": "2020-01-02"}],
    }, folder)
    cohort, report = read_site(folder)
    assert cohort.persons["person_id"].tolist() == [1, 2]
    assert cohort.events[["person_id", "code"]].values.tolist() == [[1, "ORPHA:558"], [2, "ORPHA:905"]]
    assert report.tables["Patient"]["person_ids"].startswith("numbered 1..N")


def test_units_convert_where_known_and_are_listed_where_not(bundle, tmp_path) -> None:
    site = _site(tmp_path)
    _append(site, "Observation", *[
        {"resourceType": "Observation", "status": "final", "subject": _ref(1), "effectiveDateTime": "2020-03-05",
         "code": _concept(code), "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}
        for code, value, unit in (("LOINC:2160-0", 88.4017, "umol/L"), ("LOINC:2160-0", 3.0, "furlongs"),
                                  ("LOINC:2823-3", 4.1, "meq/L"))])
    cohort, report = read_site(site, bundle=bundle)
    labs = cohort.events[cohort.events["domain"] == "lab"]
    assert labs["value"].round(5).tolist() == [1.1, 1.0, 3.0, 4.1]
    assert labs["unit"].tolist() == ["mg/dL", "mg/dL", "furlongs", "mmol/L"]
    assert report.lab_units == {"converted": {"LOINC:2160-0: umol/L → mg/dL": 1, "LOINC:2823-3: meq/L → mmol/L": 1},
                                "unconvertible": {"LOINC:2160-0: furlongs (bundle: mg/dL)": 1}}


@pytest.mark.parametrize(("code", "unit", "target", "factor"), [
    ("LOINC:2345-7", "mg/dL", "mmol/L", 1 / 18.0156), ("LOINC:2160-0", "mg/dL", "umol/L", 88.4017),
    ("LOINC:718-7", "g/dL", "mmol/L", 0.62057), ("LOINC:17861-6", "meq/L", "mmol/L", 0.5),
    ("LOINC:1742-6", "ukat/L", "U/L", 60.0), ("LOINC:777-3", "10*9/L", "10*3/uL", 1.0),
    ("LOINC:2276-4", "ug/L", "ng/mL", 1.0), ("LOINC:1742-6", "mg/dL", "mmol/L", None),
    ("LOINC:2160-0", "U/L", "mg/dL", None)])
def test_conversion_factors(code, unit, target, factor) -> None:
    got = conversion_factor(code, unit, target)
    assert got == pytest.approx(factor, rel=1e-4) if factor is not None else got is None


# --- bad input --------------------------------------------------------------------------
def _edit(folder: Path, rtype: str, line: int, change) -> Path:
    path = folder / f"{rtype}.ndjson"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line - 1] = change(json.loads(lines[line - 1]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _set(**fields):
    return lambda r: json.dumps({**r, **fields})


def _drop(key):
    return lambda r: json.dumps({k: v for k, v in r.items() if k != key})


# small_cohort as FHIR: Patient 1..3; Condition: ORPHA:558 (p1, onsetDateTime), ORPHA:905 (p2, onsetDateTime),
# ORPHA:355 (p3, recordedDate); Observation: HP:0001166 (p1), the creatinine value (p1);
# MedicationRequest: DB00859 (p2)
@pytest.mark.parametrize(("rtype", "line", "change", "field", "message"), [
    ("Condition", 2, lambda r: "{not json", "", "not a JSON object"),
    ("Condition", 1, lambda r: json.dumps([r]), "", "not a JSON object"),
    ("Condition", 1, lambda r: b"\xff\xfe".decode("latin-1"), "", "not a JSON object"),
    ("Condition", 3, _set(resourceType="Observation"), "resourceType", "'Observation' in a file of Condition"),
    ("Condition", 1, _drop("subject"), "subject.reference", "missing"),
    ("Condition", 1, _drop("code"), "code", "missing required field"),
    ("Condition", 1, _set(onsetDateTime="2020-13-45"), "onsetDateTime", "is not a date"),
    ("Condition", 1, _set(onsetDateTime="2020-05"), "onsetDateTime", "has no day"),
    ("Condition", 3, _set(recordedDate="yesterday"), "recordedDate", "is not a date"),
    ("Condition", 3, _set(subject={"reference": "Patient/77"}), "subject.reference", "unknown patient Patient/77"),
    ("Condition", 3, _set(subject={"reference": "Group/1"}), "subject.reference", "is not a Patient reference"),
    ("Condition", 1, _set(code={"coding": [{"system": SYSTEMS["HP"], "code": "HP:12"}]}), "code.coding[0].code",
     "is not a HP code"),
    ("Observation", 2, lambda r: json.dumps({**r, "valueQuantity": {**r["valueQuantity"], "value": "high"}}),
     "valueQuantity.value", "'high' is not a number"),
    ("Observation", 2, _drop("effectiveDateTime"), "effectiveDateTime", "no date"),
    ("MedicationRequest", 1, _set(dispenseRequest={"validityPeriod": {"start": "2021-03-01", "end": "2021-02-30"}}),
     "dispenseRequest.validityPeriod.end", "is not a date"),
    ("MedicationRequest", 1, lambda r: json.dumps({k: v for k, v in r.items() if k not in ("authoredOn", "dispenseRequest")}),
     "authoredOn", "no date"),
    ("MedicationRequest", 1, _drop("medicationCodeableConcept"), "medicationCodeableConcept", "missing"),
    ("MedicationRequest", 1, lambda r: json.dumps({k: v for k, v in r.items() if k != "medicationCodeableConcept"}
                                                    | {"medicationReference": {"reference": "Medication/x"}}),
     "medicationReference.reference", "is not a Medication in the export"),
    ("Patient", 2, _set(gender="unknown"), "gender", "needs female or male"),
    ("Patient", 1, _set(birthDate="1850-01-01"), "birthDate", "is not a birth date"),
    ("Patient", 3, _set(id="1"), "id", "patient 1 appears twice"),
    ("Patient", 3, _drop("id"), "id", "needs an id"),
    # the rules of shared.ehr.rules: no future events, none before birth (p1 born 1980, p2 1990), field length
    ("Condition", 1, _set(onsetDateTime="2999-01-01"), "onsetDateTime", "'2999-01-01' is after today"),
    ("Observation", 2, _set(effectiveDateTime="2999-12-31T08:00:00Z"), "effectiveDateTime", "after today"),
    ("Condition", 1, _set(onsetDateTime="1950-06-01"), "onsetDateTime", "'1950-06-01' is before person 1 was born"),
    ("MedicationRequest", 1, _set(authoredOn="1900-01-01"), "authoredOn",
     r"before person 2 was born \(year of birth 1990"),
    ("Condition", 1, _set(code={"coding": [{"system": ICD10, "code": "E" * 5000}]}), "code.coding[0].code",
     "field is 5,000 characters long; at most 1,024 are read"),
    ("Condition", 1, _set(code={"coding": [{"system": SYSTEMS["ORPHA"], "code": "558"}], "text": "t" * 2000}),
     "code.text", "field is 2,000 characters long"),
    ("Condition", 1, _set(subject={"reference": "Patient/" + "1" * 5000}), "subject.reference",
     "field is 5,008 characters long"),
    ("Observation", 2, lambda r: json.dumps({**r, "valueQuantity": {**r["valueQuantity"], "code": "m" * 2000}}),
     "valueQuantity.code", "field is 2,000 characters long"),
    ("Patient", 1, _set(id="x" * 2000), "id", "field is 2,000 characters long"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, rtype, line, change, field, message) -> None:
    site = _site(tmp_path)
    path = _edit(site, rtype, line, change)
    with pytest.raises(InputError, match=message) as info:
        read_site(site)
    assert (info.value.file, info.value.line, info.value.field or "") == (str(path), line, field)
    assert str(info.value).startswith(f"{path}:{line}: ")
    cohort, report = read_site(site, skip_bad_rows=True)
    assert sum(report.skipped_rows.values()) >= 1 and report.problems[0].row == line
    assert report.problems[0].file == str(path) and report.problems[0].column == field


def test_prenatal_events_and_planned_ends_are_accepted(tmp_path) -> None:
    site = _site(tmp_path)
    _edit(site, "Condition", 1, _set(onsetDateTime="1979-03-01"))  # person 1, born 1980: a prenatal finding
    _edit(site, "MedicationRequest", 1, lambda r: json.dumps(
        {**r, "dispenseRequest": {"validityPeriod": {"start": "2021-03-01", "end": "2999-01-01"}}}))
    cohort, _ = read_site(site)
    assert cohort.events["date"].min() == pd.Timestamp("1979-03-01")
    assert cohort.events["end_date"].max() == pd.Timestamp("2999-01-01")


def test_a_birth_later_today_is_refused_and_a_value_is_quoted_short(tmp_path, monkeypatch) -> None:
    from datetime import date

    import shared.ehr.fhir_resources as resources

    monkeypatch.setattr(resources, "today", lambda: date(2024, 6, 1))
    site = _site(tmp_path)
    path = _edit(site, "Patient", 2, _set(birthDate="2024-07-01"))
    with pytest.raises(InputError, match=r"Patient.ndjson:2: column birthDate: '2024-07-01' is after today "
                                         r"\(2024-06-01\): a birth cannot be in the future"):
        read_site(site)
    path.write_text(path.read_text().replace('"2024-07-01"', '"1990"'))
    _edit(site, "Condition", 1, _set(onsetDateTime="x" * 10_000))
    with pytest.raises(InputError) as info:
        read_site(site)
    assert str(info.value).endswith("'" + "x" * 59 + "… (10,000 characters) is not a date (YYYY-MM-DD or a FHIR dateTime)")


def test_skipping_keeps_the_rest_and_counts_by_reason(tmp_path) -> None:
    site = _site(tmp_path)
    _edit(site, "Patient", 3, _set(gender="other"))  # patient 3 dropped: its condition is now an unknown patient
    _append(site, "Condition", {"resourceType": "Condition", "subject": _ref(555), "code": _concept("ORPHA:558"),
                                "onsetDateTime": "2020-01-01"})
    (site / "Observation.ndjson").write_text("\n{oops\n" + (site / "Observation.ndjson").read_text())
    cohort, report = read_site(site, skip_bad_rows=True)
    assert report.skipped_rows == {"bad sex": 1, "unknown person": 2, "not JSON": 1}
    assert report.as_dict()["skipped_total"] == 4
    assert cohort.n_persons == 2 and report.events == 5
    assert report.tables["Observation"]["rows"] == 3  # the blank line is not a row
    assert [(Path(p.file).name, p.row) for p in report.problems] == [
        ("Patient.ndjson", 3), ("Condition.ndjson", 3), ("Condition.ndjson", 4), ("Observation.ndjson", 2)]


def test_corrupt_gzip_is_fatal_even_when_skipping(tmp_path) -> None:
    site = _site(tmp_path, gz=True)
    data = (site / "Condition.ndjson.gz").read_bytes()
    (site / "Condition.ndjson.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable gzip file") as info:
        read_site(site, skip_bad_rows=True)
    assert info.value.file == str(site / "Condition.ndjson.gz") and info.value.line is not None
    (site / "Patient.ndjson.gz").write_bytes(b"plain text, not gzip\n")
    with pytest.raises(InputError, match="Patient.ndjson.gz:1: not a readable gzip file"):
        read_site(site, skip_bad_rows=True)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda s: (s / "Patient.ndjson").unlink(), "no Patient.ndjson"),
    (lambda s: (s / "Patient.ndjson").write_text(""), "empty cohort"),
    (lambda s: (s / "person.csv").write_text("person_id\n"), "holds both OMOP tables"),
    (lambda s: [p.unlink() for p in s.iterdir()], "no site data"),
], ids=["no-patients", "empty", "both-formats", "neither"])
def test_fatal_problems(tmp_path, mutate, message) -> None:
    site = _site(tmp_path)
    mutate(site)
    with pytest.raises(InputError, match=message):
        read_site(site, skip_bad_rows=True)


def test_format_detection_and_ignored_files(tmp_path) -> None:
    with pytest.raises(InputError, match="site folder not found"):
        read_site(tmp_path / "nope")
    site = _site(tmp_path)
    (site / "Encounter.ndjson").write_text('{"resourceType": "Encounter"}\n')
    (site / "README.txt").write_text("export of 2024-01-01")
    assert detect_format(site) == "fhir"
    _, report = read_site(site)
    assert report.ignored_files == ["Encounter.ndjson"]
    omop = write_omop(small_cohort(), tmp_path / "omop")
    (omop / "notes.txt").write_text("x")
    assert detect_format(omop) == "omop"
    assert read_site(omop)[1].ignored_files == ["notes.txt", "observation_period.csv"]  # a table no reader uses


def whole_file_fingerprint(folder: Path) -> str:
    """The fingerprint as privacy states recorded it before it was computed in chunks."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()


def test_fingerprint_covers_fhir_files_and_keeps_existing_privacy_states_valid(tmp_path) -> None:
    site = _site(tmp_path, gz=True)
    before = data_fingerprint(site)
    assert before == whole_file_fingerprint(site)
    with gzip.open(site / "Observation.ndjson.gz", "at") as fh:
        fh.write("\n")
    assert data_fingerprint(site) != before
    omop = write_omop(small_cohort(), tmp_path / "omop")
    assert data_fingerprint(omop) == whole_file_fingerprint(omop)


def test_read_fhir_directly_needs_a_folder(tmp_path) -> None:
    with pytest.raises(InputError, match="site folder not found"):
        read_fhir(tmp_path / "missing")


# --- the CLI ----------------------------------------------------------------------------
runner = CliRunner()


def test_cli_validate_fhir_json(tmp_path, demo_bundle, coordinator_key) -> None:
    site = _site(tmp_path)
    _append(site, "Condition", {"resourceType": "Condition", "subject": _ref(2), "onsetDateTime": "2020-04-01",
                                "code": {"coding": [{"system": ICD10, "code": "E75.2"}]}})
    result = runner.invoke(app, ["data", "validate", str(site), "--json", "--bundle", str(demo_bundle),
                                 "--pub", str(coordinator_key[1])])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "fhir" and data["patients"] == 3 and data["events"] == 6
    assert data["tables"]["Condition"]["rows"] == 4
    assert data["codes_outside_graph"][ICD10]["resources"] == 1
    assert data["vocabulary"]["patients_with_study_diagnosis"] >= 1
    assert data["tensors"]["patients_kept"] >= 1
    human = runner.invoke(app, ["data", "validate", str(site)])
    assert human.exit_code == 0 and "codes outside the graph's systems" in human.stdout


def test_cli_bad_line_is_one_error_line_and_exit_1(tmp_path) -> None:
    site = _site(tmp_path)
    path = _edit(site, "Observation", 2, lambda r: json.dumps({**r, "valueQuantity": {"value": "n/a"}}))
    result = runner.invoke(app, ["data", "validate", str(site)])
    assert result.exit_code == 1
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert lines == [f"error: {path}:2: column valueQuantity.value: 'n/a' is not a number"]
    skipped = runner.invoke(app, ["data", "validate", str(site), "--skip-bad-rows", "--json"])
    assert skipped.exit_code == 0
    assert json.loads(skipped.stdout)["skipped_rows"] == {"non-numeric lab value": 1}
