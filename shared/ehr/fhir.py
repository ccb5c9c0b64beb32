"""Read a site's FHIR R4 Bulk Data export (NDJSON) into a :class:`Cohort`, checking every
line, and report what was found — the FHIR twin of :mod:`shared.ehr.omop`.

Files: one resource type per file, named ``<Type>.ndjson`` or ``<Type>.ndjson.gz``; a type
split over several files may be numbered either side (``Patient.000.ndjson``,
``Patient_1.ndjson``, ``1.Patient.ndjson``). Each file is streamed line by line, so memory
holds the cohort being built, never a file. Types read, in this order:

============================  =================================================================
resource                      becomes
============================  =================================================================
Patient                       a person: ``gender`` (female/male) and the year of ``birthDate``
Medication                    nothing by itself: the code behind a ``medicationReference``
MedicationRequest             a drug from ``authoredOn`` to ``dispenseRequest.validityPeriod.end``
                              (else start + ``expectedSupplyDuration``)
MedicationStatement           a drug over ``effectiveDateTime`` / ``effectivePeriod``
                              (start falls back to ``dateAsserted``)
MedicationAdministration      a drug over ``effectiveDateTime`` / ``effectivePeriod``
Condition                     an event at ``onsetDateTime``, else ``onsetPeriod.start``, else
                              ``recordedDate`` (the first present wins; a present but bad one
                              is an error, never silently replaced)
Observation                   ``valueQuantity`` / ``valueInteger``: a lab value with its UCUM
                              unit; ``valueCodeableConcept``, ``valueBoolean`` true or no value: a
                              finding (the value's code, else the observation's); dated by
                              ``effectiveDateTime`` / ``effectivePeriod.start`` /
                              ``effectiveInstant`` / ``issued``
AdverseEvent                  an event (the reaction in ``event``) at ``date`` / ``detected`` /
                              ``recordedDate``; a ``suspectEntity.instance`` medication the
                              patient has no exposure to by then is added as a one-day exposure
============================  =================================================================

Codes: the first coding whose system the graph speaks (:data:`GRAPH_SYSTEMS`) becomes a
CURIE (``http://loinc.org`` ``2160-0`` → ``LOINC:2160-0``). A resource whose codings are all
in other systems (ICD-10, SNOMED CT, RxNorm, ATC) is mapped through the bundle's code map
when a :class:`~shared.ehr.codemap.CodeMapper` is given (rules there; a medication with no
coding in a known system by its ``text`` or a coding's ``display``); what does not map is
counted per system in the report, not read. Dates keep the local calendar day written in the record (no time-zone shift) and need
a day: ``2020-05`` cannot be placed on the time grid. References ``Patient/<id>``,
``<base>/Patient/<id>[/_history/n]`` and ``urn:uuid:<id>`` resolve to persons.

Problems with a line (not JSON, wrong ``resourceType``, a missing field, a bad date, a
non-numeric value, an unknown patient) stop at the first one with file, line and field — or,
with ``skip_bad_rows``, drop that resource and are counted. A missing Patient file, an
unreadable gzip stream or an empty cohort always stop.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from shared.ehr.codemap import NAME, SYSTEM_URLS, CodeMapper, Resolution, normalise_code
from shared.ehr.cohort import SYNTHETIC_ID_BASE, Cohort
from shared.ehr.fhir_fields import (
    UCUM,
    FieldProblem,
    code_system,
    element,
    first_day,
    graph_code,
    is_absent,
    outside_code,
    parse_day,
    parse_number,
    patient_id,
)
from shared.ehr.omop import MIN_YEAR, Problem
from shared.ehr.report import SiteReport
from shared.errors import InputError

MEDICATION_EVENTS = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")
#: reading order: persons, then medication codes, exposures, and what refers to them
RESOURCE_TYPES = ("Patient", "Medication", *MEDICATION_EVENTS, "Condition", "Observation", "AdverseEvent")
SUPPLY_DAYS = {"d": 1, "day": 1, "days": 1, "wk": 7, "mo": 30, "a": 365}  # expectedSupplyDuration units
NOT_TAKEN = {  # statuses that mean the resource did not happen
    "Condition": {"entered-in-error", "refuted"},  # verificationStatus
    "Observation": {"entered-in-error", "cancelled"},
    "MedicationRequest": {"entered-in-error", "cancelled", "draft"},
    "MedicationStatement": {"entered-in-error", "not-taken", "intended"},
    "MedicationAdministration": {"entered-in-error", "not-done"},
}
_FILE = re.compile(r"(?:\d+[._-])?([A-Za-z]+)(?:[._-]\d+)?\.ndjson(\.gz)?")
_PERSON_ID = re.compile(r"0|[1-9]\d{0,11}")


def is_fhir_file(path: Path) -> bool:
    """Whether a file name is NDJSON (``.ndjson`` or ``.ndjson.gz``)."""
    return path.name.endswith((".ndjson", ".ndjson.gz"))


def find_fhir_files(folder: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """The folder's NDJSON files per resource type read here, and the names of the others."""
    types = {t.lower(): t for t in RESOURCE_TYPES}
    found: dict[str, list[Path]] = {}
    ignored = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and is_fhir_file(p)):
        m = _FILE.fullmatch(path.name)
        rtype = types.get(m.group(1).lower()) if m else None
        if rtype is None:
            ignored.append(path.name)
        else:
            found.setdefault(rtype, []).append(path)
    natural = lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]  # noqa: E731
    return {t: sorted(paths, key=natural) for t, paths in found.items()}, ignored


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of a plain or gzip NDJSON file; a broken stream is fatal."""
    number = 0  # lines read so far: the error names the one that could not be
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as fh:
            for raw in fh:
                number += 1
                yield number, raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(f"not a readable gzip file ({type(exc).__name__}: {exc})", file=path,
                         line=number + 1) from None


def _status(resource: dict, rtype: str) -> str | None:
    status = resource.get("status")
    if rtype == "Condition":
        codings = element(resource, "verificationStatus.coding")
        first = codings[0] if isinstance(codings, list) and codings else None
        status = first.get("code") if isinstance(first, dict) else None
    return status if status in NOT_TAKEN.get(rtype, ()) else None


class _FhirReader:
    """One pass over an export: the handlers fill column lists; ``persons_frame`` and
    ``events_frame`` turn them into the cohort's frames."""

    def __init__(self, skip: bool, report: SiteReport, mapper: CodeMapper | None = None) -> None:
        self.skip, self.report, self.mapper = skip, report, mapper
        self.where: tuple[str, int] = ("", 0)  # file and line being read (for the mapping report)
        self.persons: dict[str, int] = {}  # FHIR Patient id → person_id
        self.medications: dict[str, str | None] = {}  # Medication id → CURIE (None: outside the graph)
        self.exposures: dict[str, str] = {}  # "MedicationRequest/<id>" → drug CURIE
        self.suspects: list[tuple[int, str, str]] = []  # (person, day, drug) named by adverse events
        self.patients: list[tuple[str, str, int]] = []  # (FHIR id, sex, year of birth) in reading order
        self.columns: dict[str, list] = {k: [] for k in ("person_id", "date", "code", "value", "unit", "end_date")}

    # --- driving --------------------------------------------------------------------
    def read(self, rtype: str, paths: list[Path]) -> int:
        handler = getattr(self, f"_{rtype.lower()}")
        rows = 0
        for path in paths:
            for line, raw in _lines(path):
                if not raw.strip():
                    continue
                rows += 1
                self.where = (str(path), line)
                try:
                    resource = self._parse(raw, rtype)
                    if (status := _status(resource, rtype)) is not None:
                        self.report.count_not_used(f"{rtype} {status}")
                        continue
                    handler(resource)
                except FieldProblem as bad:
                    problem = Problem(str(path), line, bad.field, bad.message)
                    if not self.skip:
                        raise problem.as_error(False) from None
                    self.report.add_skip(problem, bad.reason, 1)
        return rows

    @staticmethod
    def _parse(raw: bytes, rtype: str) -> dict:
        try:
            resource = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise FieldProblem("", f"not a JSON object ({str(exc).splitlines()[0][:120]})", "not JSON") from None
        if not isinstance(resource, dict):
            raise FieldProblem("", f"not a JSON object (a {type(resource).__name__})", "not JSON")
        found = resource.get("resourceType")
        if found != rtype:
            raise FieldProblem("resourceType", f"{found!r} in a file of {rtype} resources", "wrong resourceType")
        return resource

    def _event(self, person: int, day: str, code: str, *, value: float = np.nan, unit: str = "",
               end: str | None = None) -> None:
        for key, item in (("person_id", person), ("date", day), ("code", code), ("value", value), ("unit", unit),
                          ("end_date", end)):
            self.columns[key].append(item)

    def _person(self, resource: dict) -> int:
        key = patient_id(resource)
        if key not in self.persons:
            raise FieldProblem("subject.reference", f"event for unknown patient {resource['subject']['reference']}",
                               "unknown person")
        return self.persons[key]

    def _lookup(self, concept: object, field: str) -> tuple[str | None, Resolution | None]:
        """Graph CURIE of a concept (its own graph coding first, else mapped), and the mapping
        outcome (None when the concept is graph-coded or no mapper is given). Counts nothing."""
        code = graph_code(concept, field)
        if code is not None or self.mapper is None or not isinstance(concept, dict):
            return code, None
        codings = [(code_system(c), str(c.get("code") or "")) for c in concept.get("coding") or []
                   if isinstance(c, dict)]
        res = self.mapper.resolve_concept(codings)
        return (res.target if res is not None and res.status == "mapped" else None), res

    def _record(self, code: str | None, res: Resolution | None, field: str) -> None:
        """Count one resource's coding outcome in the mapping report."""
        if self.mapper is None:
            return
        if res is not None:
            self.mapper.record(res, file=self.where[0], line=self.where[1], field=field)
        elif code is not None:
            self.mapper.count_native(code)

    def _by_name(self, concept: dict, field: str) -> tuple[str | None, Resolution, str] | None:
        """A medication by its names (rule 6 of :mod:`shared.ehr.codemap`): ``text``, then each
        coding's ``display``; (CURIE or None, outcome, the field the name came from), or None
        when it has no name."""
        codings = [(i, c) for i, c in enumerate(concept.get("coding") or []) if isinstance(c, dict)]
        names = [(f"{field}.text", concept.get("text"))] + \
            [(f"{field}.coding[{i}].display", c.get("display")) for i, c in codings]
        names = [(f, n) for f, n in names if isinstance(n, str) and n.strip()]
        res = self.mapper.resolve_names(n for _, n in names) if self.mapper is not None else None
        if res is None:
            return None
        where = next(f for f, n in names if normalise_code(NAME, n) == res.code)
        return (res.target if res.status == "mapped" else None), res, where

    def _code(self, concept: object, field: str, *, names: bool = False) -> str | None:
        """Graph CURIE of a required concept; None (and counted) when its codings are elsewhere.
        ``names``: a drug with no coding in a known system is looked up by its names."""
        if concept is None:
            raise FieldProblem(field, "missing required field", "missing field")
        code, res = self._lookup(concept, field)
        where = field
        if names and code is None and self.mapper is not None and isinstance(concept, dict) and not any(
                SYSTEM_URLS.get(code_system(c)) for c in concept.get("coding") or [] if isinstance(c, dict)):
            code, res, where = self._by_name(concept, field) or (code, res, where)
        self._record(code, res, where)
        if code is None:
            self.report.count_outside(*outside_code(concept))
        return code

    # --- handlers -------------------------------------------------------------------
    def _patient(self, r: dict) -> None:
        fid = r.get("id")
        if not isinstance(fid, str) or not fid.strip():
            raise FieldProblem("id", "missing: every Patient needs an id", "missing field")
        if fid in self.persons:
            raise FieldProblem("id", f"patient {fid} appears twice", "duplicate person")
        sex = {"female": "F", "male": "M"}.get(r.get("gender"))  # type: ignore[arg-type]
        if sex is None:
            raise FieldProblem("gender", f"{r.get('gender')!r} is not usable: the model needs female or male",
                               "bad sex")
        birth = r.get("birthDate")
        year = int(birth[:4]) if isinstance(birth, str) and re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", birth) else None
        if year is None or not MIN_YEAR <= year <= date.today().year:
            raise FieldProblem("birthDate", f"{birth!r} is not a birth date between {MIN_YEAR} and "
                               f"{date.today().year}", "bad year_of_birth")
        if len(birth) == 10:
            parse_day(birth, "birthDate")
        self.persons[fid] = len(self.persons)
        self.patients.append((fid, sex, year))

    def _medication(self, r: dict) -> None:
        if isinstance(r.get("id"), str):
            self.medications[r["id"]] = self._code(r.get("code"), "code", names=True)

    def _drug(self, r: dict) -> str | None:
        concept = r.get("medicationCodeableConcept")
        if concept is not None:
            return self._code(concept, "medicationCodeableConcept", names=True)
        ref = element(r, "medicationReference.reference")
        if not isinstance(ref, str):
            raise FieldProblem("medicationCodeableConcept",
                               "missing: needs medicationCodeableConcept or medicationReference", "missing field")
        contained = {c.get("id"): c for c in r.get("contained") or [] if isinstance(c, dict)}
        if ref.startswith("#") and ref[1:] in contained:
            return self._code(contained[ref[1:]].get("code"), "contained.code", names=True)
        kind, _, key = ref.rpartition("/")
        if not kind.endswith("Medication") or key not in self.medications:
            raise FieldProblem("medicationReference.reference", f"{ref!r} is not a Medication in the export",
                               "bad reference")
        code = self.medications[key]
        if code is None:
            self.report.count_not_used("medication outside the graph's systems (via medicationReference)")
        return code

    def _exposure(self, r: dict, rtype: str, start: tuple[str, ...], end: str | None) -> None:
        person = self._person(r)
        drug = self._drug(r)
        if drug is None:
            return
        day = first_day(r, start)
        if end is not None and end < day:
            end = day
        if isinstance(r.get("id"), str):
            self.exposures[f"{rtype}/{r['id']}"] = drug
        self._event(person, day, drug, end=end)

    def _medicationrequest(self, r: dict) -> None:
        end = element(r, "dispenseRequest.validityPeriod.end")
        end = parse_day(end, "dispenseRequest.validityPeriod.end") if end is not None else None
        supply = element(r, "dispenseRequest.expectedSupplyDuration")
        if end is None and isinstance(supply, dict) and supply.get("code") in SUPPLY_DAYS:
            days = parse_number(supply.get("value"), "dispenseRequest.expectedSupplyDuration.value",
                                reason="bad supply duration")
            start = first_day(r, ("authoredOn", "dispenseRequest.validityPeriod.start"))
            end = (date.fromisoformat(start) + timedelta(days=round(days * SUPPLY_DAYS[supply["code"]]))).isoformat()
        self._exposure(r, "MedicationRequest", ("authoredOn", "dispenseRequest.validityPeriod.start"), end)

    def _medicationstatement(self, r: dict) -> None:
        end = element(r, "effectivePeriod.end")
        self._exposure(r, "MedicationStatement", ("effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
                       parse_day(end, "effectivePeriod.end") if end is not None else None)

    def _medicationadministration(self, r: dict) -> None:
        end = element(r, "effectivePeriod.end")
        self._exposure(r, "MedicationAdministration", ("effectiveDateTime", "effectivePeriod.start"),
                       parse_day(end, "effectivePeriod.end") if end is not None else None)

    def _condition(self, r: dict) -> None:
        person = self._person(r)
        code = self._code(r.get("code"), "code")
        if code is not None:
            self._event(person, first_day(r, ("onsetDateTime", "onsetPeriod.start", "recordedDate")), code)

    def _observation(self, r: dict) -> None:
        person = self._person(r)
        day = first_day(r, ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"))
        if "valueQuantity" in r or "valueInteger" in r:
            quantity = r.get("valueQuantity") or {}
            if not isinstance(quantity, dict):
                raise FieldProblem("valueQuantity", "is not a Quantity object", "non-numeric lab value")
            field = "valueQuantity.value" if "valueQuantity" in r else "valueInteger"
            value = parse_number(quantity.get("value") if "valueQuantity" in r else r.get("valueInteger"), field)
            unit = quantity.get("code") if code_system(quantity) == UCUM else quantity.get("unit")
            code = self._code(r.get("code"), "code")
            if code is not None:
                self._event(person, day, code, value=value, unit=str(unit or "").strip())
            return
        value = r.get("valueCodeableConcept")
        if is_absent(r):
            self.report.count_not_used("finding recorded as absent")
            return
        others = [k for k in r if k.startswith("value") and k not in ("valueCodeableConcept", "valueBoolean")]
        if others:
            self.report.count_not_used(f"Observation {others[0]} (not read)")
            return
        # the finding is the value's code, else the observation's own (an HP term observed)
        if r.get("code") is None:
            raise FieldProblem("code", "missing required field", "missing field")
        code, res = self._lookup(value, "valueCodeableConcept")
        field = "valueCodeableConcept"
        if code is None:
            own, own_res = self._lookup(r.get("code"), "code")
            if own is not None and not own.startswith("LOINC:"):
                code, res, field = own, own_res, "code"
            elif value is not None or own is None:  # the finding is coded elsewhere
                self._record(None, res if value is not None else own_res, field if value is not None else "code")
                self.report.count_outside(*outside_code(value if value is not None else r.get("code")))
                return
            else:  # a lab test without a numeric result
                self.report.count_not_used("lab Observation without a numeric value")
                return
        self._record(code, res, field)
        self._event(person, day, code)

    def _adverseevent(self, r: dict) -> None:
        if r.get("actuality") == "potential":
            self.report.count_not_used("AdverseEvent potential")
            return
        person = self._person(r)
        code = self._code(r.get("event"), "event")
        if code is None:
            return
        day = first_day(r, ("date", "detected", "recordedDate"))
        for entity in r.get("suspectEntity") or []:
            ref = element(entity, "instance.reference")
            if not isinstance(ref, str):
                continue
            kind, _, key = ref.rstrip("/").rpartition("/")
            kind = kind.rpartition("/")[2]
            drug = self.exposures.get(f"{kind}/{key}") if kind in MEDICATION_EVENTS else \
                self.medications.get(key) if kind == "Medication" else None
            if drug is not None:
                self.suspects.append((person, day, drug))
            elif kind in (*MEDICATION_EVENTS, "Medication"):
                self.report.count_not_used("AdverseEvent suspect medication not in the export or outside the graph")
        self._event(person, day, code)

    # --- result ---------------------------------------------------------------------
    def persons_frame(self, path: Path) -> tuple[pd.DataFrame, str]:
        """Persons with int ids: the FHIR ids when all are integers below the synthetic
        range, else 1..N in reading order."""
        if not self.patients:
            raise InputError("empty cohort: no valid Patient resources", file=path)
        ids = [fid for fid, _, _ in self.patients]
        if all(_PERSON_ID.fullmatch(fid) and int(fid) < SYNTHETIC_ID_BASE for fid in ids):
            numbers, how = [int(fid) for fid in ids], "FHIR Patient.id"
        else:
            numbers, how = list(range(1, len(ids) + 1)), "numbered 1..N in reading order (ids are not integers)"
        self.persons = dict(zip(ids, numbers))
        frame = pd.DataFrame({"person_id": np.array(numbers, dtype=np.int64),
                              "sex": [s for _, s, _ in self.patients],
                              "year_of_birth": np.array([y for _, _, y in self.patients], dtype=np.int64)})
        return frame, how

    def events_frame(self) -> tuple[pd.DataFrame, int]:
        """All events, plus an exposure for each suspect drug not taken by the event's day."""
        c = self.columns
        frame = pd.DataFrame({
            "person_id": np.array(c["person_id"], dtype=np.int64),
            "date": np.array(c["date"], dtype="datetime64[D]"), "code": np.array(c["code"], dtype=object),
            "value": np.array(c["value"], dtype=np.float64), "unit": np.array(c["unit"], dtype=object),
            "end_date": np.array(c["end_date"], dtype="datetime64[D]"),
        })
        if not self.suspects:
            return frame, 0
        s = pd.DataFrame(self.suspects, columns=["person_id", "date", "code"]).drop_duplicates()
        s["date"] = s["date"].to_numpy(dtype="datetime64[D]")
        starts = frame[["person_id", "code", "date"]].rename(columns={"date": "start"})
        taken = s.merge(starts, on=["person_id", "code"])
        taken = taken[taken["start"] <= taken["date"]].drop_duplicates(["person_id", "date", "code"])
        missing = s.merge(taken[["person_id", "date", "code"]], how="left", indicator=True)
        missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge")
        added = missing.assign(value=np.nan, unit="", end_date=missing["date"])
        return pd.concat([frame, added], ignore_index=True), int(len(added))


def read_fhir(folder: str | Path, *, skip_bad_rows: bool = False,
              mapper: CodeMapper | None = None) -> tuple[Cohort, SiteReport]:
    """Read and check one site's FHIR R4 Bulk Data export.

    Parameters
    ----------
    folder
        The export folder: ``Patient.ndjson`` and any of Medication, MedicationRequest,
        MedicationStatement, MedicationAdministration, Condition, Observation, AdverseEvent
        (``.ndjson`` or ``.ndjson.gz``, possibly split into numbered parts).
    skip_bad_rows
        Drop resources with problems and count them instead of stopping at the first.
    mapper
        Maps codings outside the graph's systems (and counts every outcome); None: such
        codings are only counted in ``codes_outside_graph``.

    Returns
    -------
    (Cohort, SiteReport)
        ``report.tables`` per resource type (files, format, lines);
        ``codes_outside_graph`` per code system; ``not_used`` per reason.

    Raises
    ------
    InputError
        A fatal problem, or the first line problem when ``skip_bad_rows`` is false.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("site folder not found", file=folder)
    files, ignored = find_fhir_files(folder)
    report = SiteReport(site=str(folder), format="fhir", ignored_files=ignored)
    if "Patient" not in files:
        raise InputError("no Patient.ndjson (or Patient.ndjson.gz) in the FHIR export", file=folder)
    reader = _FhirReader(skip_bad_rows, report, mapper)
    for rtype in RESOURCE_TYPES:
        if rtype not in files:
            continue
        rows = reader.read(rtype, files[rtype])
        report.tables[rtype] = {"file": ", ".join(p.name for p in files[rtype]),
                                "format": ", ".join(sorted({"ndjson.gz" if p.name.endswith(".gz") else "ndjson"
                                                            for p in files[rtype]})), "rows": rows}
        if rtype == "Patient":
            persons, how = reader.persons_frame(files["Patient"][0])
            report.tables["Patient"]["person_ids"] = how
    events, added = reader.events_frame()
    if added:
        report.tables["AdverseEvent"]["suspect_exposures_added"] = added
    cohort = Cohort.from_frames(persons, events)
    report.patients = cohort.n_persons
    report.events = int(len(cohort.events))
    report.events_per_domain = cohort.domain_counts()
    return cohort, report
