"""A synthetic cohort written as an OMOP CDM v5.4 release: the tables
(:mod:`shared.ehr.cdm_tables`) with their concept ids from the coordinator's vocabulary
(:mod:`shared.ehr.cdm_concepts`), as files (:mod:`shared.ehr.cdm_files`) with
``data_card.json``, and optionally into a database schema (:mod:`shared.ehr.cdm_database`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from shared.ehr.cdm_concepts import Concepts, concepts_from_folder, look_up
from shared.ehr.cdm_database import check_target, write_cdm_database
from shared.ehr.cdm_ddl import CDM_VERSION
from shared.ehr.cdm_files import write_cdm_files
from shared.ehr.cdm_tables import RELEASE_TABLES, TYPE_CONCEPT_ID, cdm_source, cdm_tables
from shared.ehr.cohort import Cohort
from shared.errors import InputError

CARD_NAME = "data_card.json"
_CONCEPT_PREFIXES = {"condition_occurrence": "condition", "drug_exposure": "drug", "measurement": "measurement",
                     "observation": "observation"}


@dataclass(frozen=True)
class Vocabulary:
    """Where the coordinator's OMOP vocabulary is: an Athena folder, or a database schema.

    Exactly one of ``folder`` and ``engine`` is set; ``schema`` goes with ``engine``.
    """

    folder: Path | None = None
    engine: sa.Engine | None = None
    schema: str | None = None

    def __post_init__(self) -> None:
        if (self.folder is None) == (self.engine is None):
            raise ValueError("a vocabulary is an Athena folder or a database schema: give exactly one")

    def look_up(self, codes: set[str]) -> Concepts:
        """The concepts of ``codes`` (:mod:`shared.ehr.cdm_concepts`).

        Raises
        ------
        InputError
            The folder is not an Athena download, or the schema lacks the vocabulary tables.
        """
        if self.engine is None:
            return concepts_from_folder(self.folder, codes)  # type: ignore[arg-type]  # set: __post_init__
        where = self.engine.url.render_as_string(hide_password=True)
        try:
            with self.engine.connect() as conn:
                return look_up(conn, codes, schema=self.schema, described=f"schema {self.schema} of {where}")
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0][:300] if exc.orig is not None else type(exc).__name__
            raise InputError(f"vocabulary schema {self.schema!r} of {where} cannot be read "
                             f"(it needs concept and concept_relationship): {reason}") from None


@dataclass(frozen=True)
class ReleaseTarget:
    """A release's target schema: ``schema`` (new, or without CDM tables) in ``engine``'s database."""

    engine: sa.Engine
    schema: str

    def describe(self) -> str:
        """The target, without the password."""
        return f"schema {self.schema} of {self.engine.url.render_as_string(hide_password=True)}"

    def check(self) -> None:
        """Refuse an unreachable target or a schema that holds CDM tables, before any work
        (:func:`shared.ehr.cdm_database.check_target`)."""
        check_target(self.engine, schema=self.schema)


def release_codes(cohort: Cohort) -> set[str]:
    """Every code a release looks up: the events' CURIEs and their units as ``UCUM:<unit>``."""
    units = {f"UCUM:{u}" for u in cohort.events["unit"].unique() if u}
    return set(cohort.events["code"].unique()) | units


def concept_coverage(tables: dict[str, pd.DataFrame]) -> dict[str, dict[str, int]]:
    """Rows per event table, and how many have a standard and a source concept (not 0)."""
    out = {}
    for table, prefix in _CONCEPT_PREFIXES.items():
        frame = tables[table]
        out[table] = {"rows": int(len(frame)),
                      "with_concept_id": int((frame[f"{prefix}_concept_id"] != 0).sum()),
                      "with_source_concept_id": int((frame[f"{prefix}_source_concept_id"] != 0).sum())}
    return out


def write_release_folder(cohort: Cohort, folder: Path, *, card: dict, fmt: str,
                         vocabulary: Vocabulary | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
    """Write the CDM tables and ``data_card.json`` into an existing folder (callers make it atomic).

    Parameters
    ----------
    cohort
        The synthetic patients (ids inside 32 bits: :data:`~shared.ehr.cohort.SYNTHETIC_ID_BASE`).
    card
        The data card; a copy gains a ``cdm`` section (version, tables, type concept,
        vocabulary, concept coverage per table) and is what gets written.
    fmt
        ``csv`` or ``parquet``.
    vocabulary
        Where to look the concept ids up; None: every ``*_concept_id`` is 0.

    Returns
    -------
    (tables, card): the tables as written (for :func:`load_release`) and the card.

    Raises
    ------
    ValueError
        An id beyond 32 bits, a person without events, or an unknown format.
    InputError
        The vocabulary cannot be read.
    """
    concepts = vocabulary.look_up(release_codes(cohort)) if vocabulary is not None else None
    tables = cdm_tables(cohort, concepts=concepts)
    version = concepts.vocabulary_version if concepts is not None else ""
    card = {**card, "cdm": {
        "version": CDM_VERSION, "tables": list(RELEASE_TABLES), "format": fmt,
        "type_concept_id": TYPE_CONCEPT_ID, "type_concept_name": "Standard algorithm",
        "vocabulary": None if concepts is None else {"source": concepts.described, "version": version},
        "concepts": concept_coverage(tables),
    }}
    released = datetime.now(UTC).date()
    tables["cdm_source"] = cdm_source(card, vocabulary_version=version, released=released)
    write_cdm_files(tables, folder, fmt=fmt)
    (folder / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return tables, card


def load_release(tables: dict[str, pd.DataFrame], database: ReleaseTarget) -> None:
    """Load written tables into ``database`` in one transaction (:func:`write_cdm_database`)."""
    write_cdm_database(tables, database.engine, schema=database.schema)
