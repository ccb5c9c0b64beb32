"""Read a site's OMOP CDM v5.4 export (CSV or Parquet) into a :class:`Cohort`, checking
every row, and report what was found.

Fatal problems (a missing folder, table, or column; a file that is neither CSV nor Parquet,
not UTF-8, or a truncated gzip stream; an empty cohort) always stop with one line naming the
file (and the line, where there is one). Row problems (a date that does not parse, an event
for an unknown person, a non-numeric lab value, an empty code, a bad sex or year of birth, a
duplicate person, and the rules of :mod:`shared.ehr.rules`: an over-long field, an event in
the future or before its person's birth) stop at the first one with file, row and column —
or, with ``skip_bad_rows``, are dropped and counted in the report. A UTF-8 byte-order mark at
the start of a CSV file is accepted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from shared.ehr.codemap import CodeMapper
from shared.ehr.cohort import SYNTHETIC_ID_BASE, Cohort
from shared.ehr.omop_files import locate_table, read_table
from shared.ehr.omop_tables import EVENT_TABLES, PERSON, TABLES, OmopTable
from shared.ehr.rules import (
    MAX_FIELD_CHARS,
    MIN_YEAR,
    before_birth,
    birth_year_range,
    earliest_event_year,
    in_future,
    today,
    too_long,
)
from shared.errors import InputError, clip, quote

SEX_VALUES = {"F": "F", "FEMALE": "F", "W": "F", "M": "M", "MALE": "M"}
EXAMPLES_KEPT = 20  # row problems quoted in the report per run


@dataclass
class Problem:
    """One row-level problem (kept as an example in the report)."""

    file: str
    row: int  # CSV: line number in the file; Parquet: 1-based data row
    column: str
    message: str
    reason: str = ""  # the count it is skipped under (filled when skipped)

    def __post_init__(self) -> None:
        self.message = clip(self.message)  # reports quote it too (--json, report.json)

    def as_error(self, parquet: bool) -> InputError:
        if parquet:
            return InputError(self.message, file=self.file, row=self.row, field=self.column)
        return InputError(self.message, file=self.file, line=self.row, field=self.column)


@dataclass
class ValidationReport:
    """What a site's export holds and what was wrong with it."""

    site: str
    tables: dict[str, dict] = field(default_factory=dict)  # name → {file, format, rows}
    patients: int = 0
    events: int = 0
    events_per_domain: dict[str, int] = field(default_factory=dict)
    skipped_rows: dict[str, int] = field(default_factory=dict)  # reason → count
    problems: list[Problem] = field(default_factory=list)  # examples, at most EXAMPLES_KEPT
    vocabulary: dict | None = None  # filled by check_vocabulary
    skipped_per_file: dict[str, int] = field(default_factory=dict)  # file name → rows skipped

    def add_skip(self, problem: Problem, reason: str, count: int) -> None:
        self.skipped_rows[reason] = self.skipped_rows.get(reason, 0) + count
        name = Path(problem.file).name
        self.skipped_per_file[name] = self.skipped_per_file.get(name, 0) + count
        problem.reason = reason
        if len(self.problems) < EXAMPLES_KEPT:
            self.problems.append(problem)

    def as_dict(self) -> dict:
        return {
            "site": self.site, "tables": self.tables, "patients": self.patients, "events": self.events,
            "events_per_domain": self.events_per_domain, "skipped_rows": self.skipped_rows,
            "skipped_total": int(sum(self.skipped_rows.values())),
            "problems": [vars(p) for p in self.problems], "vocabulary": self.vocabulary,
            "skipped_per_file": self.skipped_per_file,
        }


class _RowChecker:
    """Applies one check to a column; raises on the first bad row or drops and counts."""

    def __init__(self, path: Path, fmt: str, skip: bool, report: ValidationReport) -> None:
        self.path, self.parquet, self.skip, self.report = path, fmt == "parquet", skip, report

    def row_number(self, position: int) -> int:
        return position + 1 if self.parquet else position + 2  # CSV: header is line 1

    def reject(self, frame: pd.DataFrame, bad: np.ndarray, column: str, message: str, reason: str) -> pd.DataFrame:
        """Drop the ``bad`` rows (counted under ``reason``), or raise on the first. ``message`` is
        a format string with ``{value}`` (as read), ``{quoted}`` (its repr), ``{length}``, and
        ``{person}`` and ``{born}`` (the row's person id and birth year, once known)."""
        if not bad.any():
            return frame
        first = int(np.flatnonzero(bad)[0])
        value = frame[column].iloc[first]
        # every value is quoted through shared.errors.quote: a 4 MB field never reaches a message
        shown = {"value": quote(value, bare=True), "quoted": quote(value), "length": len(str(value))}
        for key, col in (("person", "_id"), ("born", "_born")):
            if f"{{{key}}}" in message:  # only once parsed: the column holds integers then
                shown[key] = int(frame[col].iloc[first])
        problem = Problem(str(self.path), self.row_number(int(frame.index[first])), column, message.format(**shown))
        if not self.skip:
            raise problem.as_error(self.parquet)
        self.report.add_skip(problem, reason, int(bad.sum()))
        return frame.loc[~bad]

    def long_fields(self, frame: pd.DataFrame, table: OmopTable) -> pd.DataFrame:
        """Refuse fields over :data:`~shared.ehr.rules.MAX_FIELD_CHARS` in the table's columns."""
        for column in table.columns:
            values = frame[column]
            if values.dtype == object:  # Parquet: strings among other objects (dates)
                lengths = np.fromiter((len(v) if isinstance(v, str) else 0 for v in values.to_numpy()),
                                      dtype=np.int64, count=len(values))
            elif pd.api.types.is_string_dtype(values):  # CSV
                lengths = values.str.len().fillna(0).to_numpy(dtype=np.int64)
            else:  # numbers, dates
                continue
            frame = self.reject(frame, lengths > MAX_FIELD_CHARS, column, too_long("{length:,}"),
                                "over-long field")
        return frame


def _dates(values: pd.Series, *, allow_empty: bool) -> tuple[pd.Series, np.ndarray]:
    """Parsed dates and a mask of bad entries (ISO YYYY-MM-DD strings or native dates)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values.astype("datetime64[s]")
        empty = parsed.isna().to_numpy()
    elif values.dtype == object and len(values) and isinstance(values.dropna().iloc[0] if values.notna().any() else "", date):
        parsed = pd.to_datetime(values, errors="coerce").astype("datetime64[s]")
        empty = values.isna().to_numpy()
    else:
        text = values.astype(str).str.strip()
        empty = (text == "").to_numpy() | values.isna().to_numpy()
        parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce").astype("datetime64[s]")
    bad = parsed.isna().to_numpy() & ~(empty & allow_empty)
    return parsed, bad


def _numbers(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    parsed = pd.to_numeric(values if values.dtype != object else values.astype(str).str.strip(), errors="coerce")
    parsed = parsed.astype("float64")
    return parsed, (~np.isfinite(parsed.to_numpy()))


def read_omop(folder: str | Path, *, skip_bad_rows: bool = False, synthetic: bool = False,
              mapper: CodeMapper | None = None) -> tuple[Cohort, ValidationReport]:
    """Read and check one site's OMOP tables.

    Parameters
    ----------
    folder
        The site folder with person, condition_occurrence, observation, drug_exposure and
        measurement as ``.csv``, ``.csv.gz`` or ``.parquet``.
    skip_bad_rows
        Drop rows with problems and count them instead of stopping at the first.
    synthetic
        Read a synthetic release: person ids must then be in the synthetic range (from
        ``SYNTHETIC_ID_BASE``), which real exports may not use; its dates, drawn on a shifted
        grid, are not held to the rules on future events and events before birth.
    mapper
        Maps source values in other systems (``ICD10:E75.2``, ``RXNORM:52175``, and a
        ``drug_source_value`` without a prefix as a drug name) to graph codes and counts
        every outcome (:mod:`shared.ehr.codemap`); None: codes stay as written.

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
    frames = {}
    for t in TABLES:
        path, fmt = located[t.name]
        frames[t.name] = read_table(path, fmt, t)
        report.tables[t.name] = {"file": path.name, "format": fmt, "rows": int(len(frames[t.name]))}

    persons = _persons(frames["person"], *located["person"], skip_bad_rows, report, synthetic)
    born = pd.Series(persons["year_of_birth"].to_numpy(), index=persons["person_id"].to_numpy())
    events = [_events(frames[t.name], t, *located[t.name], skip_bad_rows, report, born, mapper,
                      check_dates=not synthetic) for t in EVENT_TABLES]
    events_frame = pd.concat(events, ignore_index=True)
    cohort = Cohort.from_frames(persons, events_frame)
    report.patients = cohort.n_persons
    report.events = int(len(cohort.events))
    report.events_per_domain = cohort.domain_counts()
    return cohort, report


def _persons(frame: pd.DataFrame, path: Path, fmt: str, skip: bool, report: ValidationReport,
             synthetic: bool) -> pd.DataFrame:
    check = _RowChecker(path, fmt, skip, report)
    if frame.empty:
        raise InputError("empty cohort: the person table has no rows", file=path)
    frame = check.long_fields(frame, PERSON)
    ids, bad = _numbers(frame["person_id"])
    bad |= np.isfinite(ids.to_numpy()) & (ids.to_numpy() != np.round(ids.to_numpy()))
    frame = check.reject(frame.assign(_id=ids), bad, "person_id", "{quoted} is not an integer person id",
                         "bad person_id")
    in_synthetic_range = (frame["_id"] >= SYNTHETIC_ID_BASE).to_numpy()
    frame = check.reject(frame, in_synthetic_range != synthetic, "person_id",
                         f"person id {{value}} is {'outside' if synthetic else 'inside'} the range reserved for "
                         f"synthetic patients (from {SYNTHETIC_ID_BASE})", "bad person_id")
    sex = frame["gender_source_value"].astype(str).str.strip().str.upper().map(SEX_VALUES)
    frame = check.reject(frame.assign(_sex=sex), sex.isna().to_numpy(), "gender_source_value",
                         "{quoted} is not a sex (F, M, FEMALE, MALE)", "bad sex")
    years, bad = _numbers(frame["year_of_birth"])
    y = years.to_numpy()
    bad |= np.isfinite(y) & ((y < MIN_YEAR) | (y > today().year) | (y != np.round(y)))
    frame = check.reject(frame.assign(_year=years), bad, "year_of_birth",
                         f"{{quoted}} is not a year {birth_year_range()}", "bad year_of_birth")
    dup = frame["_id"].duplicated(keep="first").to_numpy()
    frame = check.reject(frame, dup, "person_id", "person {value} appears twice", "duplicate person")
    if frame.empty:
        raise InputError("empty cohort: no valid person rows", file=path)
    return pd.DataFrame({"person_id": frame["_id"].astype("int64").to_numpy(), "sex": frame["_sex"].to_numpy(),
                         "year_of_birth": frame["_year"].astype("int64").to_numpy()})


def _events(frame: pd.DataFrame, t: OmopTable, path: Path, fmt: str, skip: bool, report: ValidationReport,
            born: pd.Series, mapper: CodeMapper | None = None, *, check_dates: bool = True) -> pd.DataFrame:
    """One event table's rows as events; ``born``: year of birth per known person id;
    ``check_dates``: refuse events in the future or before birth (:mod:`shared.ehr.rules`)."""
    check = _RowChecker(path, fmt, skip, report)
    frame = check.long_fields(frame, t)
    ids, bad = _numbers(frame["person_id"])
    frame = check.reject(frame.assign(_id=ids), bad, "person_id", "{quoted} is not an integer person id",
                         "bad person_id")
    unknown = ~frame["_id"].isin(born.index).to_numpy()
    frame = check.reject(frame, unknown, "person_id", "event for unknown person {value}", "unknown person")
    codes = frame[t.code].astype(str).str.strip()
    frame = check.reject(frame.assign(_code=codes), (codes == "").to_numpy() | (codes == "nan").to_numpy(),
                         t.code, "empty code", "empty code")
    dates, bad = _dates(frame[t.date], allow_empty=False)
    frame = check.reject(frame.assign(_date=dates), bad, t.date, "{quoted} is not a date (YYYY-MM-DD)", "bad date")
    if check_dates:
        future = (frame["_date"] > pd.Timestamp(today())).to_numpy()
        frame = check.reject(frame, future, t.date, in_future("{quoted}"), "date in the future")
        frame = frame.assign(_born=frame["_id"].map(born).astype("int64"))
        early = (frame["_date"].dt.year < earliest_event_year(frame["_born"])).to_numpy()
        frame = check.reject(frame, early, t.date, before_birth("{quoted}", "{person}", "{born}"), "event before birth")
    if t.end_date:
        ends, bad = _dates(frame[t.end_date], allow_empty=True)
        frame = check.reject(frame.assign(_end=ends), bad, t.end_date, "{quoted} is not a date (YYYY-MM-DD)",
                             "bad date")
    if t.value:
        values, bad = _numbers(frame[t.value])
        frame = check.reject(frame.assign(_value=values), bad, t.value, "{quoted} is not a number",
                             "non-numeric lab value")
    codes = frame["_code"].to_numpy()
    if mapper is not None:
        rows = frame.index.to_numpy(dtype=np.int64) + (1 if check.parquet else 2)  # as row_number()
        codes = mapper.map_source_values(frame["_code"], rows, file=str(path), field=t.code,
                                         names=t.name == "drug_exposure")  # free-text drug names
    out = pd.DataFrame({"person_id": frame["_id"].astype("int64").to_numpy(), "date": frame["_date"].to_numpy(),
                        "code": codes})
    if t.end_date:
        out["end_date"] = frame["_end"].to_numpy()
    if t.value:
        out["value"] = frame["_value"].to_numpy()
        out["unit"] = frame[t.unit].astype(str).str.strip().to_numpy()
    return out


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
