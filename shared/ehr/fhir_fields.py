"""The FHIR R4 elements the Bulk reader (:mod:`shared.ehr.fhir`) uses, parsed and checked by hand.

Only the fields that become cohort data are validated — dates, references, codings,
quantities — each raising :class:`FieldProblem` with the field's FHIR path, so the reader
can name file, line and field; values are quoted through :func:`shared.errors.quote`, and
the rules of :mod:`shared.ehr.rules` (field length, no future events, none before birth)
are applied here. A full FHIR model (``fhir.resources``) was measured at
~4,700 resources/s against ~36,000/s for the whole reader here, and ships R4B and R5 but
not R4, so it is not used.
"""

from __future__ import annotations

import re
from datetime import date

import numpy as np

from shared.ehr.rules import MAX_FIELD_CHARS, before_birth, earliest_event_year, in_future, today, too_long
from shared.errors import quote

#: code system URI (normalised: http, no trailing slash) → graph namespace
GRAPH_SYSTEMS: dict[str, str] = {
    "http://www.orpha.net": "ORPHA", "http://www.orpha.net/ORDO": "ORPHA", "http://orpha.net": "ORPHA",
    "http://purl.obolibrary.org/obo/hp.owl": "HP", "http://purl.obolibrary.org/obo/hp.obo": "HP",
    "http://human-phenotype-ontology.org": "HP",
    "http://www.drugbank.ca": "DRUGBANK", "http://drugbank.ca": "DRUGBANK", "http://go.drugbank.com": "DRUGBANK",
    "http://loinc.org": "LOINC",
}
#: what a code must look like in each namespace (group 1: the local id)
CODE_PATTERNS = {
    "ORPHA": re.compile(r"(?:ORPHA:|Orphanet_)?(\d+)"),
    "HP": re.compile(r"(?:HP[:_])?(\d{7})"),
    "DRUGBANK": re.compile(r"(?:DRUGBANK:)?(DB\d{5})"),
    "LOINC": re.compile(r"(?:LOINC:)?(\d{1,8}-\d)"),
}
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
#: coded values that say a finding was looked for and not found
ABSENT_VALUES = {(SNOMED, "2667000"), (SNOMED, "410516002"), (SNOMED, "260385009"), (SNOMED, "260415000"),
                 ("http://terminology.hl7.org/CodeSystem/v2-0136", "N")}
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?")
_PARTIAL = re.compile(r"\d{4}(?:-\d{2})?")


class FieldProblem(Exception):
    """A problem with one resource: the field (FHIR path), the message, the reason it is counted under."""

    def __init__(self, field: str, message: str, reason: str) -> None:
        super().__init__(message)
        self.field, self.message, self.reason = field, message, reason


def element(resource: object, path: str) -> object:
    """Value at a dotted path (``onsetPeriod.start``), None when any step is missing."""
    value = resource
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def parse_day(value: object, field: str) -> str:
    """ISO day of a FHIR date or dateTime (the local day as written, no time-zone shift)."""
    text = value.strip() if isinstance(value, str) else value
    m = _DATE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        if isinstance(text, str) and _PARTIAL.fullmatch(text):
            raise FieldProblem(field, f"{quote(text)} has no day: the time grid needs YYYY-MM-DD", "bad date")
        raise FieldProblem(field, f"{quote(value)} is not a date (YYYY-MM-DD or a FHIR dateTime)", "bad date")
    try:
        date(*map(int, m.groups()))
    except ValueError:
        raise FieldProblem(field, f"{quote(value)} is not a date (YYYY-MM-DD or a FHIR dateTime)",
                           "bad date") from None
    return text[:10]


def text_field(value: str, field: str) -> str:
    """A string the reader keeps (a code, a name, a unit, an id), refused over
    :data:`~shared.ehr.rules.MAX_FIELD_CHARS` characters."""
    if len(value) > MAX_FIELD_CHARS:
        raise FieldProblem(field, too_long(f"{len(value):,}"), "over-long field")
    return value


def _first_present(resource: dict, paths: tuple[str, ...]) -> tuple[str, object]:
    """(path, value) of the first of ``paths`` present; a date is required."""
    for path in paths:
        value = element(resource, path)
        if value is not None:
            return path, value
    raise FieldProblem(paths[0], f"no date: needs one of {', '.join(paths)}", "missing field")


def first_day(resource: dict, paths: tuple[str, ...]) -> str:
    """The day of the first of ``paths`` present (a present but bad one is an error, not skipped)."""
    path, value = _first_present(resource, paths)
    return parse_day(value, path)


def event_day(resource: dict, paths: tuple[str, ...], *, born: int) -> str:
    """The day of an event (:func:`first_day`), held to :mod:`shared.ehr.rules`: not after
    today, not before 1 January of the year before ``born`` (the person's year of birth)."""
    path, value = _first_present(resource, paths)
    day = parse_day(value, path)
    if date.fromisoformat(day) > today():
        raise FieldProblem(path, in_future(quote(value)), "date in the future")
    if int(day[:4]) < earliest_event_year(born):
        person = quote(patient_id(resource), bare=True)
        raise FieldProblem(path, before_birth(quote(value), person, str(born)), "event before birth")
    return day


def parse_number(value: object, field: str, *, reason: str = "non-numeric lab value") -> float:
    """A JSON number (a string, even a numeric one, is not one in FHIR JSON)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise FieldProblem(field, f"{quote(value)} is not a number", reason)
    return float(value)


def patient_id(resource: dict, field: str = "subject") -> str:
    """The Patient id a reference points to: ``Patient/<id>``, ``<base>/Patient/<id>[/_history/n]``
    or ``urn:uuid:<id>``."""
    ref = element(resource, f"{field}.reference")
    if not isinstance(ref, str) or not ref.strip():
        raise FieldProblem(f"{field}.reference", "missing: the patient this is about", "missing field")
    text = text_field(ref.strip(), f"{field}.reference")
    if text.startswith("urn:uuid:"):
        return text[len("urn:uuid:"):]
    parts = text.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    raise FieldProblem(f"{field}.reference", f"{quote(text)} is not a Patient reference", "bad reference")


def code_system(coding: dict) -> str:
    """A coding's system URI, normalised (https → http, no trailing slash)."""
    system = str(coding.get("system") or "").strip().rstrip("/")
    return "http://" + system[8:] if system.startswith("https://") else system


def graph_code(concept: object, field: str) -> str | None:
    """CURIE of a CodeableConcept's first coding in a graph namespace; None when it has none."""
    if concept is None:
        return None
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(concept, dict) or not isinstance(codings if codings is not None else [], list):
        raise FieldProblem(field, "is not a CodeableConcept (an object with a coding list)", "bad code")
    _check_lengths(concept, field)
    for i, coding in enumerate(codings or []):
        namespace = GRAPH_SYSTEMS.get(code_system(coding)) if isinstance(coding, dict) else None
        if namespace is None:
            continue
        code = coding.get("code")
        if not isinstance(code, str) or not code.strip():
            raise FieldProblem(f"{field}.coding[{i}].code", "empty code", "empty code")
        m = CODE_PATTERNS[namespace].fullmatch(code.strip())
        if m is None:
            raise FieldProblem(f"{field}.coding[{i}].code", f"{quote(code)} is not a {namespace} code", "bad code")
        return f"{namespace}:{m.group(1)}"
    return None


def _check_lengths(concept: dict, field: str) -> None:
    """Every string of a CodeableConcept the reader may keep or report (text; each coding's
    system, code, display) within :data:`~shared.ehr.rules.MAX_FIELD_CHARS`."""
    if isinstance(concept.get("text"), str):
        text_field(concept["text"], f"{field}.text")
    for i, coding in enumerate(concept.get("coding") or []):
        for key in ("system", "code", "display"):
            if isinstance(coding, dict) and isinstance(coding.get(key), str):
                text_field(coding[key], f"{field}.coding[{i}].{key}")


def outside_code(concept: object) -> tuple[str, str]:
    """(system, code) of a concept's first coding, for the report's codes outside the graph."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not codings or not isinstance(codings, list) or not isinstance(codings[0], dict):
        return ("(text only)" if isinstance(concept, dict) and concept.get("text") else "(no coding)"), ""
    return code_system(codings[0]) or "(no system)", str(codings[0].get("code", ""))


def is_absent(resource: dict) -> bool:
    """Whether an Observation says its finding was looked for and not found."""
    codings = element(resource, "valueCodeableConcept.coding")
    coded = any((code_system(c), str(c.get("code"))) in ABSENT_VALUES
                for c in (codings if isinstance(codings, list) else []) if isinstance(c, dict))
    return resource.get("valueBoolean") is False or coded
