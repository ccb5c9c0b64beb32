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
non-numeric value, an unknown patient, and the rules of :mod:`shared.ehr.rules`: an over-long
field, an event in the future or before its patient's birth) stop at the first one with file,
line and field — or, with ``skip_bad_rows``, drop that resource and are counted. A missing Patient file, an
unreadable gzip stream or an empty cohort always stop.
"""

from __future__ import annotations

from pathlib import Path

from shared.ehr.codemap import CodeMapper
from shared.ehr.cohort import Cohort
from shared.ehr.fhir_files import RESOURCE_TYPES, find_fhir_files
from shared.ehr.fhir_resources import FhirReader
from shared.ehr.report import SiteReport
from shared.errors import InputError


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
    reader = FhirReader(skip_bad_rows, report, mapper)
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
