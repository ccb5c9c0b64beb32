"""The row checks of an OMOP CDM site, one path for files (:mod:`shared.ehr.omop`) and
databases (:mod:`shared.ehr.omop_db`): a frame of a table's columns goes in, checked persons
or events come out, and every problem is named by where it was read.

A frame carries ``_row``, each row's name in its source: the line of a CSV file (the header
is line 1), the 1-based data row of a Parquet file, or the row's id (``person_id``,
``condition_occurrence_id``, …) in a database table. A problem stops the read at its first
row, or — with ``skip`` — drops the rows and counts them in the :class:`ValidationReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from shared.ehr.codemap import GRAPH_NAMESPACES, SYSTEMS, CodeMapper, split_source_value
from shared.ehr.cohort import SYNTHETIC_ID_BASE
from shared.ehr.omop_columns import GENDER_CONCEPTS, PERSON, ReadTable
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
from shared.ehr.vocabulary import ConceptCodes, choose_codes, concept_ids
from shared.errors import InputError, clip, quote

SEX_VALUES = {"F": "F", "FEMALE": "F", "W": "F", "M": "M", "MALE": "M"}
EXAMPLES_KEPT = 20  # row problems quoted in the report per run


@dataclass(frozen=True, slots=True)
class Source:
    """Where a table's rows come from: a file (CSV or Parquet) or a database table."""

    name: str  # the file's path, or ``schema.table``
    kind: Literal["csv", "parquet", "sql"]
    key: str = ""  # sql: the id column that names a row


@dataclass
class Problem:
    """One row-level problem (kept as an example in the report)."""

    file: str
    row: int  # CSV: line number in the file; Parquet: 1-based data row; database: the row's id
    column: str
    message: str
    reason: str = ""  # the count it is skipped under (filled when skipped)
    key: str = ""  # database: the id column ``row`` is a value of

    def __post_init__(self) -> None:
        self.message = clip(self.message)  # reports quote it too (--json, report.json)

    def as_error(self, parquet: bool) -> InputError:
        if self.key:
            return InputError(self.message, file=f"{self.file} {self.key}={self.row}", field=self.column)
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
    #: table → {"rules": {rule that gave the code → rows}, "outside_graph": rows whose code did
    #: not map to a graph code, "unmapped" / "ambiguous": of those, by the code map's verdict}
    code_sources: dict[str, dict] = field(default_factory=dict)
    #: {"status": "ok" | "below minimum" | "no study patients", "message": ...}; set with a bundle
    verdict: dict | None = None

    def add_skip(self, problem: Problem, reason: str, count: int) -> None:
        self.skipped_rows[reason] = self.skipped_rows.get(reason, 0) + count
        name = Path(problem.file).name
        self.skipped_per_file[name] = self.skipped_per_file.get(name, 0) + count
        problem.reason = reason
        if len(self.problems) < EXAMPLES_KEPT:
            self.problems.append(problem)

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "site": self.site, "tables": self.tables, "patients": self.patients, "events": self.events,
            "events_per_domain": self.events_per_domain, "skipped_rows": self.skipped_rows,
            "skipped_total": int(sum(self.skipped_rows.values())),
            "problems": [vars(p) for p in self.problems], "vocabulary": self.vocabulary,
            "skipped_per_file": self.skipped_per_file, "code_sources": self.code_sources,
        }


class RowChecker:
    """Applies one check to a column; raises on the first bad row or drops and counts."""

    def __init__(self, source: Source, skip: bool, report: ValidationReport) -> None:
        self.source, self.skip, self.report = source, skip, report
        self.parquet = source.kind == "parquet"

    def reject(self, frame: pd.DataFrame, bad: np.ndarray, column: str, message: str, reason: str) -> pd.DataFrame:
        """Drop the ``bad`` rows (counted under ``reason``), or raise on the first. ``message`` is
        a format string with ``{value}`` (as read), ``{quoted}`` (its repr), ``{length}``, and
        ``{person}`` and ``{born}`` (the row's person id and birth year, once known)."""
        if not bad.any():
            return frame
        first = int(np.flatnonzero(bad)[0])
        value = frame[column].iloc[first]
        if isinstance(value, date):  # a database's or Parquet's native date: shown as written in a file
            value = value.isoformat(sep=" ") if isinstance(value, datetime) and value.time() != time() else \
                value.strftime("%Y-%m-%d")
        # every value is quoted through shared.errors.quote: a 4 MB field never reaches a message
        shown = {"value": quote(value, bare=True), "quoted": quote(value), "length": len(str(value))}
        for key, col in (("person", "_id"), ("born", "_born")):
            if f"{{{key}}}" in message:  # only once parsed: the column holds integers then
                shown[key] = int(frame[col].iloc[first])
        problem = Problem(self.source.name, int(frame["_row"].iloc[first]), column, message.format(**shown),
                          key=self.source.key)
        if not self.skip:
            raise problem.as_error(self.parquet)
        self.report.add_skip(problem, reason, int(bad.sum()))
        return frame.loc[~bad]

    def long_fields(self, frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
        """Refuse fields over :data:`~shared.ehr.rules.MAX_FIELD_CHARS` in ``columns``."""
        for column in columns:
            if column not in frame:
                continue
            values = frame[column]
            if values.dtype == object:  # Parquet, databases: strings among other objects (dates)
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
    if values.dtype == object:  # strings (CSV) or Decimal / None (databases)
        values = values.map(lambda v: np.nan if v is None else v).astype(str).str.strip()
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    return parsed, (~np.isfinite(parsed.to_numpy()))


def _text(values: pd.Series) -> pd.Series:
    """Stripped text of each entry, "" when missing (column-wise: no Python call per row)."""
    return values.fillna("").astype(str).str.strip()


def _empty(values: pd.Series) -> np.ndarray:
    """Missing or blank entries."""
    return values.isna().to_numpy() | values.astype(str).str.strip().isin(["", "None", "nan", "<NA>"]).to_numpy()


def parse_sex_codes(text: str) -> dict[str, str]:
    """A site's declared sex codes, ``"1=M,2=F"`` → ``{"1": "M", "2": "F"}`` ("" → none).

    Raises
    ------
    ValueError
        An entry that is not ``code=M`` or ``code=F``.
    """
    out = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        code, sep, sex = (p.strip() for p in entry.partition("="))
        if not sep or not code or sex.upper() not in ("M", "F"):
            raise ValueError(f"sex codes must read like \"1=M,2=F\", got {entry!r}")
        out[code.upper()] = sex.upper()
    return out


def check_persons(frame: pd.DataFrame, source: Source, *, skip: bool, report: ValidationReport,
                  synthetic: bool = False, sex_codes: dict[str, str] | None = None) -> pd.DataFrame:
    """The person table's rows as persons (person_id, sex, year_of_birth).

    The sex is ``gender_concept_id`` 8507 (male) / 8532 (female), else ``gender_source_value``
    F/M/FEMALE/MALE (any case) or a code the site declared (``sex_codes``: ``{"1": "M", "2": "F"}``).
    """
    check = RowChecker(source, skip, report)
    if frame.empty:
        raise InputError("empty cohort: the person table has no rows", file=source.name)
    frame = check.long_fields(frame, PERSON.columns)
    ids, bad = _numbers(frame["person_id"])
    bad |= np.isfinite(ids.to_numpy()) & (ids.to_numpy() != np.round(ids.to_numpy()))
    frame = check.reject(frame.assign(_id=ids), bad, "person_id", "{quoted} is not an integer person id",
                         "bad person_id")
    in_synthetic_range = (frame["_id"] >= SYNTHETIC_ID_BASE).to_numpy()
    frame = check.reject(frame, in_synthetic_range != synthetic, "person_id",
                         f"person id {{value}} is {'outside' if synthetic else 'inside'} the range reserved for "
                         f"synthetic patients (from {SYNTHETIC_ID_BASE})", "bad person_id")
    sex = pd.Series(np.full(len(frame), None, dtype=object), index=frame.index)
    if "gender_concept_id" in frame:
        sex = pd.Series(concept_ids(frame["gender_concept_id"])[0], index=frame.index).map(GENDER_CONCEPTS)
    column = "gender_concept_id"
    if "gender_source_value" in frame:
        column = "gender_source_value"
        values = {**SEX_VALUES, **(sex_codes or {})}
        sex = sex.fillna(frame[column].map(lambda v: None if v is None else str(v)).str.strip().str.upper().map(values))
    declared = f", or the codes the site declared ({', '.join(sex_codes)})" if sex_codes else \
        "; codes such as 1/2 need their meaning declared (sex-codes = \"1=M,2=F\")"
    frame = check.reject(frame.assign(_sex=sex), sex.isna().to_numpy(), column,
                         "{quoted} is not a sex (gender_concept_id 8507 male / 8532 female, or gender_source_value "
                         f"F, M, FEMALE, MALE{declared})", "bad sex")
    frame = check.reject(frame, _empty(frame["year_of_birth"]), "year_of_birth",
                         "empty: every person needs a year of birth", "bad year_of_birth")
    years, bad = _numbers(frame["year_of_birth"])
    y = years.to_numpy()
    bad |= np.isfinite(y) & ((y < MIN_YEAR) | (y > today().year) | (y != np.round(y)))
    frame = check.reject(frame.assign(_year=years), bad, "year_of_birth",
                         f"{{quoted}} is not a year {birth_year_range()}", "bad year_of_birth")
    dup = frame["_id"].duplicated(keep="first").to_numpy()
    frame = check.reject(frame, dup, "person_id", "person {value} appears twice", "duplicate person")
    if frame.empty:
        raise InputError("empty cohort: no valid person rows", file=source.name)
    return pd.DataFrame({"person_id": frame["_id"].astype("int64").to_numpy(), "sex": frame["_sex"].to_numpy(),
                         "year_of_birth": frame["_year"].astype("int64").to_numpy()})


def check_events(frame: pd.DataFrame, t: ReadTable, source: Source, *, skip: bool, report: ValidationReport,
                 born: pd.Series, mapper: CodeMapper | None = None, concepts: ConceptCodes | None = None,
                 check_dates: bool = True) -> pd.DataFrame:
    """One event table's rows as events.

    Parameters
    ----------
    frame
        The table's columns that were read, and ``_row``.
    born
        Year of birth per known person id.
    mapper
        The bundle's code map (None: codes stay as chosen).
    concepts
        The site's resolved concept ids (:func:`shared.ehr.vocabulary.resolve_concepts`);
        None: the concept-id columns are not used (no vocabulary).
    check_dates
        Refuse events in the future or before birth (:mod:`shared.ehr.rules`).
    """
    check = RowChecker(source, skip, report)
    frame = check.long_fields(frame, t.columns)
    ids, bad = _numbers(frame["person_id"])
    frame = check.reject(frame.assign(_id=ids), bad, "person_id", "{quoted} is not an integer person id",
                         "bad person_id")
    unknown = ~frame["_id"].isin(born.index).to_numpy()
    frame = check.reject(frame, unknown, "person_id", "event for unknown person {value}", "unknown person")
    frame, standard, source_ids = _concept_columns(frame, t, check, concepts)
    values = _text(frame[t.code]) if t.code in frame else None
    if values is not None:
        values = values.where(values != "nan", "")
    codes, rules = choose_codes(t.name, standard(frame), source_ids(frame),
                                None if values is None else values.to_numpy(dtype=object),
                                concepts or ConceptCodes({}), mapper, names=t.name == "drug_exposure")
    code_column = t.code if t.code in frame else next(c for c in t.concept_columns if c in frame)
    empty = codes == ""
    frame = check.reject(frame.assign(_code=codes, _rule=rules), empty, code_column, "empty code", "empty code")
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
        values_n, bad = _numbers(frame[t.value])
        frame = check.reject(frame.assign(_value=values_n), bad, t.value, "{quoted} is not a number",
                             "non-numeric lab value")
    codes = frame["_code"].to_numpy(dtype=object)
    if mapper is not None:
        codes = mapper.map_source_values(frame["_code"].astype(str), frame["_row"].to_numpy(dtype=np.int64),
                                         file=source.name, field=code_column, names=t.name == "drug_exposure")
    _count_sources(report, t.name, frame["_rule"].to_numpy(dtype=object), frame["_code"].to_numpy(dtype=object),
                   codes, mapper)
    out = pd.DataFrame({"person_id": frame["_id"].astype("int64").to_numpy(), "date": frame["_date"].to_numpy(),
                        "code": codes})
    if t.end_date:
        out["end_date"] = frame["_end"].to_numpy()
    if t.value:
        out["value"] = frame["_value"].to_numpy()
        out["unit"] = _text(frame[t.unit]).to_numpy(dtype=object)
    return out


def _concept_columns(frame: pd.DataFrame, t: ReadTable, check: RowChecker, concepts: ConceptCodes | None):
    """Parse the concept-id columns (when a vocabulary resolves them) and refuse ids it does
    not hold; returns the frame and getters of the standard and source ids of its rows."""
    present = [c for c in t.concept_columns if c in frame] if concepts is not None else []
    for column in present:
        ids, bad = concept_ids(frame[column])
        frame = check.reject(frame.assign(**{f"_{column}": ids}), bad, column, "{quoted} is not a concept id",
                             "bad concept id")
        ids = frame[f"_{column}"].to_numpy()
        missing = (ids != 0) & ~concepts.holds(ids)
        frame = check.reject(frame, missing, column, "concept id {value} is not in the vocabulary's concept table",
                             "concept not in the vocabulary")

    def getter(column: str | None):
        return lambda f: f[f"_{column}"].to_numpy() if column in present else None

    return frame, getter(t.concept), getter(t.source_concept)


def _count_sources(report: ValidationReport, table: str, rules: np.ndarray, chosen: np.ndarray, mapped: np.ndarray,
                   mapper: CodeMapper | None) -> None:
    """Per table: which rule gave the codes, and how many did not reach a graph code (and why)."""
    entry = report.code_sources.setdefault(table, {"rules": {}, "outside_graph": 0, "unmapped": 0, "ambiguous": 0})
    for rule, n in sorted(pd.Series(rules, dtype=object).astype(str).value_counts(sort=False).items()):
        entry["rules"][str(rule)] = entry["rules"].get(str(rule), 0) + int(n)
    # each distinct code is looked at once (hash-factorised), not once per row
    positions, distinct = pd.factorize(np.asarray(mapped, dtype=object))
    outside = np.fromiter((split_source_value(str(c))[0].upper() not in GRAPH_NAMESPACES for c in distinct),
                          dtype=bool, count=len(distinct))[positions] if len(mapped) else np.zeros(0, dtype=bool)
    entry["outside_graph"] += int(outside.sum())
    if mapper is None:
        return
    for code, n in pd.Series(chosen[outside], dtype=object).value_counts(sort=False).items():
        system, local = split_source_value(str(code))
        if system in SYSTEMS and mapper.resolve(system, local).status == "ambiguous":
            entry["ambiguous"] += int(n)
        else:
            entry["unmapped"] += int(n)

