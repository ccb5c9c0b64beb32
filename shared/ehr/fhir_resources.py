"""One pass over a FHIR Bulk export's resources (:class:`FhirReader`): each resource type's
fields turned into the cohort's persons and events, as :mod:`shared.ehr.fhir` describes.
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from shared.ehr.codemap import NAME, SYSTEM_URLS, CodeMapper, Resolution, normalise_code
from shared.ehr.cohort import SYNTHETIC_ID_BASE
from shared.ehr.fhir_fields import (
    UCUM,
    FieldProblem,
    code_system,
    element,
    event_day,
    first_day,
    graph_code,
    is_absent,
    outside_code,
    parse_day,
    parse_number,
    patient_id,
    text_field,
)
from shared.ehr.fhir_files import MEDICATION_EVENTS, ndjson_lines
from shared.ehr.omop_checks import Problem
from shared.ehr.report import SiteReport
from shared.ehr.rules import MIN_YEAR, birth_year_range, today
from shared.errors import InputError, quote

SUPPLY_DAYS = {"d": 1, "day": 1, "days": 1, "wk": 7, "mo": 30, "a": 365}  # expectedSupplyDuration units
NOT_TAKEN = {  # statuses that mean the resource did not happen
    "Condition": {"entered-in-error", "refuted"},  # verificationStatus
    "Observation": {"entered-in-error", "cancelled"},
    "MedicationRequest": {"entered-in-error", "cancelled", "draft"},
    "MedicationStatement": {"entered-in-error", "not-taken", "intended"},
    "MedicationAdministration": {"entered-in-error", "not-done"},
}
_PERSON_ID = re.compile(r"0|[1-9]\d{0,11}")


def _status(resource: dict, rtype: str) -> str | None:
    """The resource's status when it means the resource did not happen (:data:`NOT_TAKEN`), else None."""
    status = resource.get("status")
    if rtype == "Condition":
        codings = element(resource, "verificationStatus.coding")
        first = codings[0] if isinstance(codings, list) and codings else None
        status = first.get("code") if isinstance(first, dict) else None
    return status if status in NOT_TAKEN.get(rtype, ()) else None


class FhirReader:
    """One pass over an export: the handlers fill column lists; ``persons_frame`` and
    ``events_frame`` turn them into the cohort's frames."""

    def __init__(self, skip: bool, report: SiteReport, mapper: CodeMapper | None = None) -> None:
        self.skip, self.report, self.mapper = skip, report, mapper
        self.where: tuple[str, int] = ("", 0)  # file and line being read (for the mapping report)
        self.persons: dict[str, int] = {}  # FHIR Patient id → person_id
        self.born: dict[int, int] = {}  # person_id → year of birth (filled by persons_frame)
        self.medications: dict[str, str | None] = {}  # Medication id → CURIE (None: outside the graph)
        self.exposures: dict[str, str] = {}  # "MedicationRequest/<id>" → drug CURIE
        self.suspects: list[tuple[int, str, str]] = []  # (person, day, drug) named by adverse events
        self.patients: list[tuple[str, str, int]] = []  # (FHIR id, sex, year of birth) in reading order
        self.columns: dict[str, list] = {k: [] for k in ("person_id", "date", "code", "value", "unit", "end_date")}

    # --- driving --------------------------------------------------------------------
    def read(self, rtype: str, paths: list[Path]) -> int:
        """Read every resource of one type from its files; the number of non-empty lines.

        A line problem raises :class:`InputError` (file, line, field), or with ``skip`` drops
        the resource and counts it in the report.
        """
        handler = getattr(self, f"_{rtype.lower()}")
        rows = 0
        for path in paths:
            for line, raw in ndjson_lines(path):
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
        """One line as a resource of type ``rtype``."""
        try:
            resource = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise FieldProblem("", f"not a JSON object ({str(exc).splitlines()[0][:120]})", "not JSON") from None
        if not isinstance(resource, dict):
            raise FieldProblem("", f"not a JSON object (a {type(resource).__name__})", "not JSON")
        found = resource.get("resourceType")
        if found != rtype:
            raise FieldProblem("resourceType", f"{quote(found)} in a file of {rtype} resources", "wrong resourceType")
        return resource

    def _event(self, person: int, day: str, code: str, *, value: float = np.nan, unit: str = "",
               end: str | None = None) -> None:
        """Append one event to the columns."""
        for key, item in (("person_id", person), ("date", day), ("code", code), ("value", value), ("unit", unit),
                          ("end_date", end)):
            self.columns[key].append(item)

    def _person(self, resource: dict) -> int:
        """The person an event's ``subject`` refers to."""
        key = patient_id(resource)
        if key not in self.persons:
            raise FieldProblem("subject.reference",
                               f"event for unknown patient {quote(resource['subject']['reference'], bare=True)}",
                               "unknown person")
        return self.persons[key]

    def _day(self, resource: dict, person: int, paths: tuple[str, ...]) -> str:
        """The event's day from the first of ``paths`` present, checked against the person's birth."""
        return event_day(resource, paths, born=self.born[person])

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
        """A person: sex from ``gender``, year of birth from ``birthDate``."""
        fid = r.get("id")
        if not isinstance(fid, str) or not fid.strip():
            raise FieldProblem("id", "missing: every Patient needs an id", "missing field")
        text_field(fid, "id")
        if fid in self.persons:
            raise FieldProblem("id", f"patient {fid} appears twice", "duplicate person")
        sex = {"female": "F", "male": "M"}.get(r.get("gender"))  # type: ignore[arg-type]
        if sex is None:
            raise FieldProblem("gender", f"{quote(r.get('gender'))} is not usable: the model needs female or male",
                               "bad sex")
        birth = r.get("birthDate")
        year = int(birth[:4]) if isinstance(birth, str) and re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", birth) else None
        if year is None or not MIN_YEAR <= year <= today().year:
            raise FieldProblem("birthDate", f"{quote(birth)} is not a birth date {birth_year_range()}",
                               "bad year_of_birth")
        if len(birth) == 10 and parse_day(birth, "birthDate") > today().isoformat():
            raise FieldProblem("birthDate", f"{quote(birth)} is after today ({today().isoformat()}): a birth cannot "
                               "be in the future", "bad year_of_birth")
        self.persons[fid] = len(self.persons)
        self.patients.append((fid, sex, year))

    def _medication(self, r: dict) -> None:
        """A Medication's code, for the resources that refer to it."""
        if isinstance(r.get("id"), str):
            self.medications[r["id"]] = self._code(r.get("code"), "code", names=True)

    def _drug(self, r: dict) -> str | None:
        """Drug CURIE of a medication resource: its concept, else a contained or referenced Medication."""
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
            raise FieldProblem("medicationReference.reference", f"{quote(ref)} is not a Medication in the export",
                               "bad reference")
        code = self.medications[key]
        if code is None:
            self.report.count_not_used("medication outside the graph's systems (via medicationReference)")
        return code

    def _exposure(self, r: dict, rtype: str, start: tuple[str, ...], end: str | None) -> None:
        """One drug exposure from the first ``start`` field present to ``end``."""
        person = self._person(r)
        drug = self._drug(r)
        if drug is None:
            return
        day = self._day(r, person, start)
        if end is not None and end < day:
            end = day
        if isinstance(r.get("id"), str):
            self.exposures[f"{rtype}/{r['id']}"] = drug
        self._event(person, day, drug, end=end)

    def _medicationrequest(self, r: dict) -> None:
        """An exposure to the validity period's end, else start + expected supply duration."""
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
        """An exposure over ``effectiveDateTime`` / ``effectivePeriod`` (else from ``dateAsserted``)."""
        end = element(r, "effectivePeriod.end")
        self._exposure(r, "MedicationStatement", ("effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
                       parse_day(end, "effectivePeriod.end") if end is not None else None)

    def _medicationadministration(self, r: dict) -> None:
        """An exposure over ``effectiveDateTime`` / ``effectivePeriod``."""
        end = element(r, "effectivePeriod.end")
        self._exposure(r, "MedicationAdministration", ("effectiveDateTime", "effectivePeriod.start"),
                       parse_day(end, "effectivePeriod.end") if end is not None else None)

    def _condition(self, r: dict) -> None:
        """An event at the onset, else the recorded date."""
        person = self._person(r)
        code = self._code(r.get("code"), "code")
        if code is not None:
            self._event(person, self._day(r, person, ("onsetDateTime", "onsetPeriod.start", "recordedDate")), code)

    def _observation(self, r: dict) -> None:
        """A lab value (numeric result) or a finding (the value's code, else the observation's own)."""
        person = self._person(r)
        day = self._day(r, person, ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"))
        if "valueQuantity" in r or "valueInteger" in r:
            quantity = r.get("valueQuantity") or {}
            if not isinstance(quantity, dict):
                raise FieldProblem("valueQuantity", "is not a Quantity object", "non-numeric lab value")
            field = "valueQuantity.value" if "valueQuantity" in r else "valueInteger"
            value = parse_number(quantity.get("value") if "valueQuantity" in r else r.get("valueInteger"), field)
            unit_field = "valueQuantity.code" if code_system(quantity) == UCUM else "valueQuantity.unit"
            unit = quantity.get(unit_field.rpartition(".")[2])
            unit = text_field(unit, unit_field) if isinstance(unit, str) else unit
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
        """The reaction as an event; suspect medications are kept for :meth:`events_frame`."""
        if r.get("actuality") == "potential":
            self.report.count_not_used("AdverseEvent potential")
            return
        person = self._person(r)
        code = self._code(r.get("event"), "event")
        if code is None:
            return
        day = self._day(r, person, ("date", "detected", "recordedDate"))
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
        self.born = {number: year for number, (_, _, year) in zip(numbers, self.patients)}
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
