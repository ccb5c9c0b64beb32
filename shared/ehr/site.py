"""One entry point for a hospital's data, wherever and however it keeps it.

A site's data is its OMOP CDM database (a :class:`~shared.ehr.cdm_connection.CdmDatabase`:
:mod:`shared.ehr.omop_db`) or a folder holding either OMOP CDM tables (``person.csv``,
``condition_occurrence.parquet``, ... — :mod:`shared.ehr.omop`) or a FHIR R4 Bulk Data export
(``Patient.ndjson``, ... — :mod:`shared.ehr.fhir`). :func:`read_site` detects which, reads it into the same
:class:`Cohort`, converts lab values to the bundle's units where it can
(:mod:`shared.ehr.units`), maps local codes (ICD-10, SNOMED CT, RxNorm, ATC, drug names)
through the bundle's code map (:mod:`shared.ehr.codemap`), checks the study's minimum cohort
(:func:`study_cohort`), and returns the same :class:`SiteReport` shape for both.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from shared.bundle import StudyBundle
from shared.ehr.cdm_connection import CdmDatabase
from shared.ehr.codemap import DEFAULT_ACCEPT, Accept, CodeMapper
from shared.ehr.cohort import Cohort
from shared.ehr.fhir import read_fhir
from shared.ehr.fhir_files import is_fhir_file
from shared.ehr.omop import read_omop
from shared.ehr.omop_columns import TABLES
from shared.ehr.omop_db import db_fingerprint, read_omop_db
from shared.ehr.study_fit import no_study_patients, verdict
from shared.ehr.report import DEFAULT_MIN_PATIENTS, SiteReport
from shared.ehr.units import convert_labs
from shared.errors import InputError

OMOP_FILES = frozenset(f"{t.name}{ext}" for t in TABLES for ext in (".csv", ".csv.gz", ".parquet"))
CHUNK = 1 << 20  # bytes hashed at a time: memory stays flat on multi-GB exports


def detect_format(folder: str | Path) -> Literal["omop", "fhir"]:
    """``"omop"`` or ``"fhir"`` from the files in the folder.

    Raises
    ------
    InputError
        The folder is missing, or holds both formats or neither.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("site folder not found", file=folder)
    files = [p for p in folder.iterdir() if p.is_file()]
    omop = sorted(p.name for p in files if p.name in OMOP_FILES)
    fhir = sorted(p.name for p in files if is_fhir_file(p))
    if omop and fhir:
        raise InputError(f"holds both OMOP tables ({', '.join(omop[:3])}) and FHIR NDJSON files "
                         f"({', '.join(fhir[:3])}); keep one format per site folder", file=folder)
    if not omop and not fhir:
        raise InputError("no site data: expected OMOP tables (person.csv or person.parquet, ...) or a FHIR Bulk "
                         "export (Patient.ndjson, Condition.ndjson, ...)", file=folder)
    return "omop" if omop else "fhir"


def read_site(folder: str | Path | CdmDatabase, *, skip_bad_rows: bool = False, bundle: StudyBundle | None = None,
              accept: Accept = DEFAULT_ACCEPT, site_codemap: str | Path | None = None,
              sex_codes: dict[str, str] | None = None, require_study_patients: bool = False,
              study_only: bool = False) -> tuple[Cohort, SiteReport]:
    """Read and check one site's data: its CDM database, or a folder, OMOP or FHIR (detected).

    Parameters
    ----------
    folder
        The site's CDM database, or its folder (see :func:`detect_format`).
    skip_bad_rows
        Drop rows (OMOP) or resources (FHIR) with problems and count them, instead of
        stopping at the first.
    bundle
        The study bundle: lab values in another unit than the bundle's are converted where
        :mod:`shared.ehr.units` knows how (the rest are listed in ``report.lab_units``);
        local codes are mapped through its code map (counted in ``report.code_mapping``);
        ``report.study_diseases`` counts patients per study disease and
        ``report.study_cohort`` says whether the site has the study's minimum cohort
        (``[study] min-patients``, :func:`study_cohort`).
    accept
        The weakest mapping relation used (default ``"narrower"``: exact and narrower;
        ``"broader"`` also takes local codes that cover a graph code and more).
    site_codemap
        The site's own mapping table (TSV, :func:`shared.ehr.codemap.read_code_table`),
        used before the bundle's for the codes it lists; needs ``bundle``.
    sex_codes
        OMOP: the site's declared meaning of other ``gender_source_value`` codes
        (``{"1": "M", "2": "F"}``).
    require_study_patients
        With a bundle, a site where no patient has a study diagnosis is an error (the
        message says how many persons were read, their codes closest to the study, and what
        to do: :func:`shared.ehr.study_fit.no_study_patients`); else ``report.verdict`` says so.
    study_only
        A CDM database (needs ``bundle``): let the database send only the persons who may
        have a study diagnosis and their rows (:mod:`shared.ehr.omop_db`), for training: the
        tensors are the same, the report covers those persons only. Default: the whole
        export, as ``data validate`` must see it. A folder is always read whole.

    Returns
    -------
    (Cohort, SiteReport)

    Raises
    ------
    InputError
        Folder missing, both formats or neither, a fatal problem, the first row problem
        when ``skip_bad_rows`` is false, a bad site mapping table, a database that cannot
        be read (:mod:`shared.ehr.omop_db`), or no study patients when required.
    ValueError
        ``site_codemap`` or ``study_only`` without ``bundle``, or an unknown ``accept``.
    """
    if site_codemap is not None and bundle is None:
        raise ValueError("a site mapping table needs the study bundle (its code map is the base)")
    if study_only and bundle is None:
        raise ValueError("study_only needs the study bundle (its diseases say who the study patients are)")
    mapper = CodeMapper(bundle.codemap, accept=accept, site_table=site_codemap) if bundle is not None else None
    if isinstance(folder, CdmDatabase):
        study = tuple(bundle.diseases["id"]) if study_only and bundle is not None else None
        cohort, omop_report = read_omop_db(folder, skip_bad_rows=skip_bad_rows, mapper=mapper, sex_codes=sex_codes,
                                           study_diseases=study)
        report = SiteReport.from_validation(omop_report, format="omop")
    elif detect_format(folder) == "fhir":
        cohort, report = read_fhir(folder, skip_bad_rows=skip_bad_rows, mapper=mapper)
    else:
        cohort, omop_report = read_omop(folder, skip_bad_rows=skip_bad_rows, mapper=mapper, sex_codes=sex_codes)
        report = SiteReport.from_validation(omop_report, format="omop")
        known = {name for t in report.tables.values() for name in t["file"].split(", ")}
        report.ignored_files = sorted(p.name for p in Path(folder).iterdir() if p.is_file() and p.name not in known)
    if bundle is not None:
        events, report.lab_units = convert_labs(cohort.events, dict(zip(bundle.labs["code"], bundle.labs["unit"])))
        cohort = Cohort.from_frames(cohort.persons, events)
        report.events_per_domain = cohort.domain_counts()
        report.code_mapping = mapper.summary()
        report.study_diseases = _study_patients(cohort, bundle)
        report.study_cohort = study_cohort(cohort, bundle)
        report.verdict = verdict(report, mapper, bundle)
        if require_study_patients and not report.study_cohort["patients"]:
            raise no_study_patients(report)
    report.date_ranges = _date_ranges(cohort)
    return cohort, report


def _date_ranges(cohort: Cohort) -> dict[str, dict[str, str]]:
    """First and last event day per domain."""
    e = cohort.events
    spans = e.groupby("domain")["date"].agg(["min", "max"])
    return {str(d): {"first": row["min"].strftime("%Y-%m-%d"), "last": row["max"].strftime("%Y-%m-%d")}
            for d, row in spans.iterrows()}


def _study_patients(cohort: Cohort, bundle: StudyBundle) -> dict[str, dict]:
    """Patients with a diagnosis of each study disease."""
    e = cohort.events
    counts = e.loc[e["code"].isin(bundle.diseases["id"]), ["person_id", "code"]].drop_duplicates()["code"].value_counts()
    return {str(d): {"name": str(name), "patients": int(counts.get(d, 0))}
            for d, name in zip(bundle.diseases["id"], bundle.diseases["name"])}


def study_cohort(cohort: Cohort, bundle: StudyBundle) -> dict:
    """Whether the site meets the study's minimum cohort size.

    Parameters
    ----------
    cohort
        The site's cohort, codes already mapped to the graph's.
    bundle
        The study bundle; its ``study.json`` ``[study] min-patients`` is the minimum
        (:data:`DEFAULT_MIN_PATIENTS` for a bundle made before the setting existed).

    Returns
    -------
    ``{"patients": n, "min_patients": m, "meets": n >= m}``, n counting patients with at
    least one diagnosis of a study disease (the patients the site can train on).
    """
    e = cohort.events
    minimum = int(bundle.study.get("study", {}).get("min-patients", DEFAULT_MIN_PATIENTS))
    patients = int(e.loc[e["code"].isin(bundle.diseases["id"]), "person_id"].nunique())
    return {"patients": patients, "min_patients": minimum, "meets": patients >= minimum}


def data_fingerprint(folder: str | Path | CdmDatabase) -> str:
    """Identity of a site's export: sha256 over its files' names and contents (a database:
    over aggregates the database computes on the rows read, :func:`shared.ehr.omop_db.db_fingerprint`).

    Every file directly in the folder counts (OMOP tables, NDJSON parts, anything else),
    so any change to the export is a new dataset; the privacy state is tied to it, so a
    budget is never reused for another dataset. Files are hashed in chunks, so a multi-GB
    export never has to fit in memory.
    """
    if isinstance(folder, CdmDatabase):
        return db_fingerprint(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        digest.update(path.name.encode())
        content = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(CHUNK):
                content.update(block)
        digest.update(content.digest())
    return "sha256:" + digest.hexdigest()
