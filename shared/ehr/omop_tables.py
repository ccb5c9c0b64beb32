"""OMOP CDM v5.4 subset: the tables and columns this project reads and writes.

Only the standard columns below are used; extra columns in a site's files are ignored.
The code of every event is in the table's ``*_source_value`` column as a CURIE
(``ORPHA:558``, ``HP:0001166``, ``DRUGBANK:DB00678``, ``LOINC:2160-0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from shared.atomic import atomic_dir
from shared.ehr.cohort import Cohort


@dataclass(frozen=True, slots=True)
class OmopTable:
    """One table: its required columns, and which of them carry the event."""

    name: str
    columns: tuple[str, ...]  # required
    code: str | None = None  # *_source_value
    date: str | None = None
    end_date: str | None = None
    value: str | None = None
    unit: str | None = None


PERSON = OmopTable("person", ("person_id", "gender_source_value", "year_of_birth"))
EVENT_TABLES: tuple[OmopTable, ...] = (
    OmopTable("condition_occurrence", ("person_id", "condition_source_value", "condition_start_date"),
              code="condition_source_value", date="condition_start_date"),
    OmopTable("observation", ("person_id", "observation_source_value", "observation_date"),
              code="observation_source_value", date="observation_date"),
    OmopTable("drug_exposure", ("person_id", "drug_source_value", "drug_exposure_start_date",
                                "drug_exposure_end_date"),
              code="drug_source_value", date="drug_exposure_start_date", end_date="drug_exposure_end_date"),
    OmopTable("measurement", ("person_id", "measurement_source_value", "value_as_number", "unit_source_value",
                              "measurement_date"),
              code="measurement_source_value", date="measurement_date", value="value_as_number",
              unit="unit_source_value"),
)
TABLES: tuple[OmopTable, ...] = (PERSON, *EVENT_TABLES)

#: Where the writer puts each domain (a reader accepts any code in any table).
DOMAIN_TABLE = {
    "diagnosis": "condition_occurrence",
    "phenotype": "observation",
    "adverse_event": "observation",
    "unknown": "observation",
    "drug": "drug_exposure",
    "lab": "measurement",
}
FORMATS = ("csv", "parquet")


def cohort_to_tables(cohort: Cohort) -> dict[str, pd.DataFrame]:
    """The cohort as OMOP tables (dates as ISO strings in CSV, dates in Parquet)."""
    p = cohort.persons
    tables = {"person": pd.DataFrame({"person_id": p["person_id"], "gender_source_value": p["sex"],
                                      "year_of_birth": p["year_of_birth"]})}
    e = cohort.events.assign(table=cohort.events["domain"].map(DOMAIN_TABLE).fillna("observation"))
    for spec in EVENT_TABLES:
        rows = e[e["table"] == spec.name]
        out = {f"{spec.name}_id": range(1, len(rows) + 1), "person_id": rows["person_id"].to_numpy(),
               spec.code: rows["code"].to_numpy(), spec.date: rows["date"].dt.date.to_numpy()}
        if spec.end_date:
            out[spec.end_date] = rows["end_date"].dt.date.to_numpy()
        if spec.value:
            out[spec.value] = rows["value"].to_numpy()
            out[spec.unit] = rows["unit"].to_numpy()
        tables[spec.name] = pd.DataFrame(out)
    return tables


def write_omop(cohort: Cohort, out: str | Path, *, fmt: str = "csv", overwrite: bool = False) -> Path:
    """Write the five tables as ``<table>.csv`` or ``<table>.parquet`` into a new folder.

    Raises
    ------
    ValueError
        Unknown format.
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_tables(cohort, tmp, fmt=fmt)
    return Path(out)


def write_tables(cohort: Cohort, folder: Path, *, fmt: str) -> None:
    """Write the five tables into an existing folder (callers make it atomic)."""
    for name, table in cohort_to_tables(cohort).items():
        if fmt == "csv":
            table.to_csv(folder / f"{name}.csv", index=False, date_format="%Y-%m-%d")
        else:
            table.to_parquet(folder / f"{name}.parquet", index=False)
