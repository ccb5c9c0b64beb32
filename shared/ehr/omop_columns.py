"""The columns the site readers take from each OMOP CDM v5.4 table, from files
(:mod:`shared.ehr.omop`) and from a database (:mod:`shared.ehr.omop_db`) alike.

An event's code is read from up to three columns, in this order of preference
(:mod:`shared.ehr.vocabulary`): the standard ``*_concept_id``, the ``*_source_concept_id``,
the ``*_source_value``. A file export needs at least one of them (a concept id only with the
vocabulary tables beside it); a database has them all (the v5.4 DDL). The sex is
``gender_concept_id`` or, failing that, ``gender_source_value``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReadTable:
    """One table as the readers take it: required and optional columns, and their roles."""

    name: str
    key: str  # the row's id column (names a row of a database table in messages)
    required: tuple[str, ...]  # a file must have these
    any_of: tuple[str, ...] = ()  # a file must have at least one of these
    optional: tuple[str, ...] = ()  # read when present
    concept: str | None = None  # *_concept_id (standard)
    source_concept: str | None = None  # *_source_concept_id
    code: str | None = None  # *_source_value
    date: str | None = None
    end_date: str | None = None
    value: str | None = None
    unit: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the readers may take, in a fixed order."""
        return tuple(dict.fromkeys((*self.required, *self.any_of, *self.optional)))

    @property
    def concept_columns(self) -> tuple[str, ...]:
        """The concept-id columns (resolved through the vocabulary)."""
        return tuple(c for c in (self.concept, self.source_concept) if c)


def _event(name: str, prefix: str, date: str, *, end_date: str | None = None, value: str | None = None,
           unit: str | None = None) -> ReadTable:
    concept, source_concept, code = f"{prefix}_concept_id", f"{prefix}_source_concept_id", f"{prefix}_source_value"
    required = ("person_id", date, *((end_date,) if end_date else ()), *((value, unit) if value and unit else ()))
    return ReadTable(name, f"{name}_id", required, any_of=(concept, source_concept, code), concept=concept,
                     source_concept=source_concept, code=code, date=date, end_date=end_date, value=value, unit=unit)


PERSON = ReadTable("person", "person_id", ("person_id", "year_of_birth"),
                   any_of=("gender_concept_id", "gender_source_value"))
EVENT_TABLES: tuple[ReadTable, ...] = (
    _event("condition_occurrence", "condition", "condition_start_date"),
    _event("observation", "observation", "observation_date"),
    _event("drug_exposure", "drug", "drug_exposure_start_date", end_date="drug_exposure_end_date"),
    _event("measurement", "measurement", "measurement_date", value="value_as_number", unit="unit_source_value"),
)
TABLES: tuple[ReadTable, ...] = (PERSON, *EVENT_TABLES)
MALE, FEMALE = 8507, 8532  # the standard gender concepts (vocabulary "Gender")
GENDER_CONCEPTS = {MALE: "M", FEMALE: "F"}
#: Synthetic person ids start here; the OMOP reader refuses real patients in this range, so
#: a synthetic id can never equal a real one. The range lies inside the OMOP CDM's 32-bit
#: ``person_id`` (up to 2,147,483,647), so a release loads into the official DDL as it is
#: numbered inside the project; real exports keep every id below 2·10⁹.
SYNTHETIC_ID_BASE = 2_000_000_000
#: The most synthetic persons one cohort can number (ids up to the 32-bit limit).
MAX_SYNTHETIC_PERSONS = 2**31 - SYNTHETIC_ID_BASE
