"""Read a site's OMOP CDM v5.4 export (CSV or Parquet) into a :class:`Cohort`, checking
every row, and report what was found.

Fatal problems (a missing folder, table, or column; a file that is neither CSV nor Parquet,
not UTF-8, or a truncated gzip stream; an empty cohort) always stop with one line naming the
file (and the line, where there is one). Row problems (a date that does not parse, an event
for an unknown person, a non-numeric lab value, an empty code, a bad sex or year of birth, a
duplicate person, a concept id the vocabulary does not hold, and the rules of
:mod:`shared.ehr.rules`: an over-long field, an event in the future or before its person's
birth) stop at the first one with file, row and column — or, with ``skip_bad_rows``, are
dropped and counted in the report. A UTF-8 byte-order mark at the start of a CSV file is
accepted. The checks are :mod:`shared.ehr.omop_checks`, shared with the database reader
(:mod:`shared.ehr.omop_db`).

Standard OMOP shapes are read as a database site has them (:mod:`shared.ehr.omop_columns`):
the sex from ``gender_concept_id`` or ``gender_source_value``; an event's code from its
``*_concept_id`` and ``*_source_concept_id`` when the folder also holds the vocabulary tables
(``concept.csv``, ``concept_relationship.csv``, ``concept_ancestor.csv``), else from its
``*_source_value`` (:mod:`shared.ehr.vocabulary`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from shared.ehr.codemap import CodeMapper
from shared.ehr.cohort import Cohort
from shared.ehr.omop_checks import Source, ValidationReport, check_events, check_persons
from shared.ehr.omop_columns import EVENT_TABLES, TABLES
from shared.ehr.omop_files import locate_table, read_table
from shared.ehr.vocabulary import ConceptCodes, concept_ids
from shared.ehr.vocabulary_files import file_concepts, vocabulary_files
from shared.errors import InputError

__all__ = ["check_vocabulary", "read_omop"]


def read_omop(folder: str | Path, *, skip_bad_rows: bool = False, synthetic: bool = False,
              mapper: CodeMapper | None = None, sex_codes: dict[str, str] | None = None,
              ) -> tuple[Cohort, ValidationReport]:
    """Read and check one site's OMOP tables.

    Parameters
    ----------
    folder
        The site folder with person, condition_occurrence, observation, drug_exposure and
        measurement as ``.csv``, ``.csv.gz`` or ``.parquet`` (and, to resolve concept ids,
        the vocabulary tables: :mod:`shared.ehr.vocabulary_files`).
    skip_bad_rows
        Drop rows with problems and count them instead of stopping at the first.
    synthetic
        Read a synthetic release: person ids must then be in the synthetic range (from
        ``SYNTHETIC_ID_BASE``), which real exports may not use; its dates, drawn on a shifted
        grid, are not held to the rules on future events and events before birth.
    mapper
        Maps codes in other systems (``ICD10:E75.2``, ``RXNORM:52175``, and a
        ``drug_source_value`` without a prefix as a drug name) to graph codes and counts
        every outcome (:mod:`shared.ehr.codemap`); None: codes stay as written.
    sex_codes
        The site's declared meaning of other ``gender_source_value`` codes (``{"1": "M", "2": "F"}``).

    Returns
    -------
    (Cohort, ValidationReport)

    Raises
    ------
    InputError
        A fatal problem, or the first row problem when ``skip_bad_rows`` is false.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("site folder not found", file=folder)
    report = ValidationReport(site=str(folder))
    located = {t.name: locate_table(folder, t) for t in TABLES}
    frames, sources = {}, {}
    for t in TABLES:
        path, fmt = located[t.name]
        frame = read_table(path, fmt, t)
        frames[t.name] = frame.assign(_row=np.arange(len(frame)) + (1 if fmt == "parquet" else 2))
        sources[t.name] = Source(str(path), fmt)  # type: ignore[arg-type]
        report.tables[t.name] = {"file": path.name, "format": fmt, "rows": int(len(frame))}
    concepts = _concepts(folder, frames, located)
    persons = check_persons(frames["person"], sources["person"], skip=skip_bad_rows, report=report,
                            synthetic=synthetic, sex_codes=sex_codes)
    born = pd.Series(persons["year_of_birth"].to_numpy(), index=persons["person_id"].to_numpy())
    events = [check_events(frames[t.name], t, sources[t.name], skip=skip_bad_rows, report=report, born=born,
                           mapper=mapper, concepts=concepts, check_dates=not synthetic) for t in EVENT_TABLES]
    cohort = Cohort.from_frames(persons, pd.concat(events, ignore_index=True))
    report.patients = cohort.n_persons
    report.events = int(len(cohort.events))
    report.events_per_domain = cohort.domain_counts()
    for table, path in vocabulary_files(folder).items() if concepts is not None else ():
        report.tables[table] = {"file": path.name, "format": "parquet" if path.suffix == ".parquet" else "csv",
                                "rows": None}
    return cohort, report


def _concepts(folder: Path, frames: dict[str, pd.DataFrame],
              located: dict[str, tuple[Path, str]]) -> ConceptCodes | None:
    """The folder's concept ids resolved through its vocabulary files; None when it has none
    (then a table whose codes are only concept ids cannot be read)."""
    if not vocabulary_files(folder):
        for t in EVENT_TABLES:
            if t.code not in frames[t.name] and not frames[t.name].empty:
                raise InputError(f"{t.name} has concept ids but no {t.code}, and the folder has no vocabulary "
                                 "tables to resolve them: add concept.csv, concept_relationship.csv and "
                                 "concept_ancestor.csv (from the CDM or Athena)", file=located[t.name][0])
        return None
    used = [concept_ids(frames[t.name][c])[0] for t in EVENT_TABLES for c in t.concept_columns if c in frames[t.name]]
    return file_concepts(folder, np.concatenate(used) if used else np.zeros(0, dtype=np.int64))


def check_vocabulary(cohort: Cohort, report: ValidationReport, *, vocabulary: pd.DataFrame,
                     diseases: list[str]) -> None:
    """Count events whose code the bundle does not know (they are dropped from training).

    Adds to ``report.vocabulary``: per domain, events in and outside the vocabulary and the
    most frequent outside codes; patients with a study diagnosis.
    """
    e = cohort.events
    known = set(vocabulary["code"]) | set(diseases)
    inside = e["code"].isin(known)
    outside = Counter(e.loc[~inside, "code"])
    per_domain = {}
    for domain, group in e.groupby("domain"):
        ins = int(group["code"].isin(known).sum())
        per_domain[str(domain)] = {"in_vocabulary": ins, "outside": int(len(group) - ins)}
    with_dx = e.loc[e["code"].isin(diseases), "person_id"].nunique()
    report.vocabulary = {
        "events_in_vocabulary": int(inside.sum()),
        "events_outside_vocabulary": int((~inside).sum()),
        "per_domain": per_domain,
        "top_outside_codes": [{"code": c, "events": n} for c, n in outside.most_common(10)],
        "patients_with_study_diagnosis": int(with_dx),
    }
