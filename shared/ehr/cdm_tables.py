"""A cohort as OMOP CDM v5.4 tables that load into the official DDL (:mod:`shared.ehr.cdm_ddl`):
every NOT NULL column filled, every id a 32-bit integer, one ``observation_period`` per person
and a ``cdm_source`` row (the columns not filled are NULL: :mod:`shared.ehr.cdm_files`).

What goes in each column
------------------------
- ``person``: ``gender_concept_id`` 8532 (FEMALE) or 8507 (MALE), ``gender_source_value``
  ``F`` / ``M``; race and ethnicity are not modelled: ``*_concept_id`` 0.
- events: the table of the code's domain (:data:`DOMAIN_TABLE`), the
  CURIE in ``*_source_value``, ``*_concept_id`` and ``*_source_concept_id`` from a vocabulary
  (:mod:`shared.ehr.cdm_concepts`), else 0; ids 1..rows per table. A drug exposure without an
  end date ends the day it starts (the column is NOT NULL; the CDM's convention).
- ``*_type_concept_id`` and ``period_type_concept_id``: :data:`TYPE_CONCEPT_ID`, 32880
  "Standard algorithm". Type concepts state a record's provenance; these records were not
  written in an EHR (32817), a registry (32879) or a claim (32810): a model produced them, and
  "Standard algorithm" is the Type Concept vocabulary's provenance for records derived by an
  algorithm rather than recorded at a point of care. A researcher who pools a release with real
  data can tell the synthetic rows apart by it.
- ``observation_period``: one per person, from its first event to its last (a drug's end date
  counts), so every event lies inside it.

The site simulator's folders are written the same way (:func:`shared.ehr.omop_tables.write_omop`):
simulated hospital records are produced by an algorithm too.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from shared.ehr.cdm_concepts import Concepts
from shared.ehr.cdm_ddl import CDM_VERSION, CDM_VERSION_CONCEPT_ID, INT32_MAX
from shared.ehr.cohort import Cohort
from shared.ehr.omop_columns import EVENT_TABLES, FEMALE, MALE

TYPE_CONCEPT_ID = 32880  # "Standard algorithm" (Type Concept vocabulary): see the module docstring
GENDER_CONCEPT_IDS = {"F": FEMALE, "M": MALE}  # 8532, 8507 (Gender vocabulary)
#: the tables a release fills, in writing order
RELEASE_TABLES = ("person", "observation_period", "condition_occurrence", "drug_exposure", "measurement",
                  "observation", "cdm_source")
#: where a cohort's domain goes (a reader accepts any code in any table)
DOMAIN_TABLE = {
    "diagnosis": "condition_occurrence",
    "phenotype": "observation",
    "adverse_event": "observation",
    "unknown": "observation",
    "drug": "drug_exposure",
    "lab": "measurement",
}


def _check_int32(values: np.ndarray, what: str) -> None:
    """Refuse ids outside the CDM's 32-bit integer (the message names the CDM's limit)."""
    if len(values) and (values.min() < -INT32_MAX - 1 or values.max() > INT32_MAX):
        raise ValueError(f"{what} {int(values.max())} does not fit the OMOP CDM's 32-bit integer "
                         f"(at most {INT32_MAX:,})")


def cdm_tables(cohort: Cohort, *, concepts: Concepts | None = None) -> dict[str, pd.DataFrame]:
    """The clinical tables of a release (all of :data:`RELEASE_TABLES` but ``cdm_source``).

    Parameters
    ----------
    cohort
        Persons and events; person ids must fit 32 bits (synthetic ids do:
        :data:`~shared.ehr.cohort.SYNTHETIC_ID_BASE`).
    concepts
        Concept ids of the cohort's codes (:mod:`shared.ehr.cdm_concepts`); None: all 0.

    Returns
    -------
    {table: frame} with the columns a release fills (every NOT NULL one among them), dates as
    ``datetime64``; :func:`shared.ehr.cdm_files.arrow_table` adds the other columns as NULL
    and casts each to its DDL type.

    Raises
    ------
    ValueError
        A person id, an event count or a concept id beyond 32 bits, or a person without events
        (no observation period can cover nothing).
    """
    persons = cohort.persons
    _check_int32(persons["person_id"].to_numpy(), "person_id")
    zeros = np.zeros(len(persons), dtype=np.int64)
    tables = {"person": pd.DataFrame({
        "person_id": persons["person_id"].to_numpy(), "gender_concept_id": persons["sex"].map(GENDER_CONCEPT_IDS),
        "year_of_birth": persons["year_of_birth"].to_numpy(), "race_concept_id": zeros, "ethnicity_concept_id": zeros,
        "gender_source_value": persons["sex"].to_numpy()})}
    tables["observation_period"] = _observation_periods(cohort)
    events = cohort.events.assign(table=cohort.events["domain"].map(DOMAIN_TABLE).fillna("observation"))
    for spec in EVENT_TABLES:
        rows = events[events["table"] == spec.name].reset_index(drop=True)
        _check_int32(np.array([len(rows)]), f"{spec.name} row count")
        prefix, codes = spec.code.removesuffix("_source_value"), rows["code"]
        frame = pd.DataFrame({
            f"{spec.name}_id": np.arange(1, len(rows) + 1, dtype=np.int64), "person_id": rows["person_id"],
            f"{prefix}_concept_id": _concept_ids(concepts, codes, spec.name, standard=True), spec.date: rows["date"],
            f"{prefix}_type_concept_id": np.full(len(rows), TYPE_CONCEPT_ID, dtype=np.int64), spec.code: codes,
            f"{prefix}_source_concept_id": _concept_ids(concepts, codes, spec.name, standard=False)})
        if spec.end_date:
            frame[spec.end_date] = rows["end_date"].fillna(rows["date"])
        if spec.value:
            frame[spec.value] = rows["value"]
            frame[spec.unit] = rows["unit"]
            frame["unit_concept_id"] = _concept_ids(concepts, "UCUM:" + rows["unit"].astype(str), "unit",
                                                    standard=True)
        tables[spec.name] = frame
    return tables


def _concept_ids(concepts: Concepts | None, codes: pd.Series, table: str, *, standard: bool) -> np.ndarray:
    """Standard or source concept id per code (0 without a vocabulary)."""
    if concepts is None:
        return np.zeros(len(codes), dtype=np.int64)
    ids = concepts.standard_concept_ids(codes, table) if standard else concepts.source_concept_ids(codes)
    values = ids.to_numpy(dtype=np.int64)
    _check_int32(values, f"{table} concept id")
    return values


def _observation_periods(cohort: Cohort) -> pd.DataFrame:
    """One period per person, first event to last (drug end dates included)."""
    e = cohort.events
    last = e["end_date"].where(e["end_date"] > e["date"], e["date"])
    span = pd.DataFrame({"person_id": e["person_id"], "start": e["date"], "end": last}).groupby("person_id").agg(
        start=("start", "min"), end=("end", "max"))
    ids = cohort.persons["person_id"]
    missing = ids[~ids.isin(span.index)]
    if len(missing):
        raise ValueError(f"person {int(missing.iloc[0])} has no events: an observation period must cover some "
                         f"({len(missing)} such persons)")
    span = span.loc[ids.to_numpy()]
    return pd.DataFrame({
        "observation_period_id": np.arange(1, len(ids) + 1, dtype=np.int64), "person_id": ids.to_numpy(),
        "observation_period_start_date": span["start"].to_numpy(),
        "observation_period_end_date": span["end"].to_numpy(),
        "period_type_concept_id": np.full(len(ids), TYPE_CONCEPT_ID, dtype=np.int64)})


def cdm_source(card: dict, *, vocabulary_version: str, released: date) -> pd.DataFrame:
    """The one ``cdm_source`` row: the release's name, its bundle hash and privacy statement.

    Parameters
    ----------
    card
        The data card (:func:`shared.model.generation.data_card`, with ``release`` when made by
        ``raregraph release``); missing fields are left out of the text, never invented.
    vocabulary_version
        The vocabulary's release (``""``: none was given, written as ``none``).
    released
        The release date (source and CDM release dates alike: the data exist from then).
    """
    run_id = (card.get("release") or {}).get("run_id", "")
    bundle = card.get("bundle_sha256", "")
    study = card.get("study", "")
    what = f"release of run {run_id}" if run_id else "generated sample"
    name = " ".join(p for p in ("RareGraph-Synth synthetic", what, f"study {study}" if study else "",
                                f"(bundle sha256 {bundle[:16]})" if bundle else "") if p)
    statement = (card.get("privacy") or {}).get("statement", "")
    description = " ".join(p for p in (
        f"Synthetic patients, no real person: {card.get('method', 'sampled from a diffusion model')}.",
        f"Study bundle sha256 {bundle}." if bundle else "", f"Privacy: {statement}" if statement else "",
        f"Type concepts are {TYPE_CONCEPT_ID} (Standard algorithm): every record was produced by the model.") if p)
    return pd.DataFrame({
        "cdm_source_name": [name[:255]], "cdm_source_abbreviation": ["RareGraph-Synth"],
        "cdm_holder": ["RareGraph-Synth consortium coordinator"], "source_description": [description],
        "source_documentation_reference": ["data_card.json (beside these tables)"],
        "cdm_etl_reference": ["shared/ehr/cdm_tables.py (raregraph-synth)"],
        "source_release_date": [released], "cdm_release_date": [released], "cdm_version": [f"v{CDM_VERSION}"],
        "cdm_version_concept_id": [CDM_VERSION_CONCEPT_ID], "vocabulary_version": [(vocabulary_version or "none")[:20]],
    })
