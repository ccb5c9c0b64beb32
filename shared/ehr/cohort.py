"""The in-memory cohort: one table of persons, one long table of dated events.

Every reader (OMOP today, FHIR later) produces a :class:`Cohort`; the tensorizer, the
writers and the evaluation read one. The event's domain comes from its code's namespace
(DESIGN.md): ``ORPHA:`` diagnosis, ``HP:`` phenotype (the tensorizer re-labels an HP term
as an adverse event when the bundle links it to a drug the patient took before it),
``MEDDRA:`` adverse event, ``DRUGBANK:``/``RXNORM:`` drug, ``LOINC:`` lab.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.ehr.omop_columns import MAX_SYNTHETIC_PERSONS, SYNTHETIC_ID_BASE

#: code namespace → event domain
NAMESPACE_DOMAIN: dict[str, str] = {
    "ORPHA": "diagnosis",
    "HP": "phenotype",
    "MEDDRA": "adverse_event",
    "DRUGBANK": "drug",
    "RXNORM": "drug",
    "LOINC": "lab",
}
DOMAINS = ("diagnosis", "phenotype", "adverse_event", "drug", "lab", "unknown")

PERSON_COLUMNS = {"person_id": "int64", "sex": "str", "year_of_birth": "int64"}
EVENT_COLUMNS = {
    "person_id": "int64",
    "date": "datetime64[s]",
    "code": "str",
    "domain": "str",
    "value": "float64",  # labs only, NaN otherwise
    "unit": "str",  # labs only, "" otherwise
    "end_date": "datetime64[s]",  # drugs only, NaT otherwise
}
SEXES = ("F", "M")


def domain_of(codes: pd.Series) -> pd.Series:
    """Domain per code from its namespace (the part before ':'); 'unknown' otherwise."""
    namespace = codes.str.split(":", n=1).str[0]
    return namespace.map(NAMESPACE_DOMAIN).fillna("unknown").astype(str)


@dataclass(frozen=True)
class Cohort:
    """Persons and their events.

    ``persons``: person_id (int64, unique), sex ("F" or "M"), year_of_birth (int64).
    ``events``: person_id, date, code (CURIE), domain, value, unit, end_date — see
    :data:`EVENT_COLUMNS`; sorted by person_id then date.
    """

    persons: pd.DataFrame
    events: pd.DataFrame

    @classmethod
    def from_frames(cls, persons: pd.DataFrame, events: pd.DataFrame) -> Cohort:
        """Normalise column types and order (missing optional columns are filled)."""
        persons = persons[list(PERSON_COLUMNS)].astype({"person_id": "int64", "year_of_birth": "int64"})
        persons = persons.assign(sex=persons["sex"].astype(str)).sort_values("person_id", ignore_index=True)
        events = events.copy()
        if "domain" not in events:
            events["domain"] = domain_of(events["code"].astype(str))
        for column, default in (("value", np.nan), ("unit", ""), ("end_date", pd.NaT)):
            if column not in events:
                events[column] = default
        events["unit"] = events["unit"].fillna("")
        events = events[list(EVENT_COLUMNS)].astype({
            "person_id": "int64", "code": str, "domain": str, "value": "float64", "unit": str,
            "date": "datetime64[s]", "end_date": "datetime64[s]",
        })
        events = events.sort_values(["person_id", "date", "code"], kind="stable", ignore_index=True)
        return cls(persons=persons, events=events)

    @property
    def n_persons(self) -> int:
        return int(len(self.persons))

    def domain_counts(self) -> dict[str, int]:
        """Events per domain."""
        return {str(k): int(v) for k, v in self.events["domain"].value_counts().sort_index().items()}


def split_patients(cohort: Cohort, *, share: float, seed: int) -> tuple[Cohort, Cohort]:
    """(training, held-out) by person, at random: ``share`` of the persons (at least one)
    held out, each with all their events."""
    rng = np.random.default_rng(seed)
    ids = cohort.persons["person_id"].to_numpy()
    return partition(cohort, set(rng.choice(ids, size=max(1, int(round(share * len(ids)))), replace=False).tolist()))


def partition(cohort: Cohort, held: set[int]) -> tuple[Cohort, Cohort]:
    """(patients not in ``held``, patients in ``held``), each with all their events."""
    parts = []
    for keep in (lambda i: i not in held, lambda i: i in held):
        mask_p = cohort.persons["person_id"].map(keep).to_numpy(dtype=bool)
        mask_e = cohort.events["person_id"].map(keep).to_numpy(dtype=bool)
        parts.append(Cohort.from_frames(cohort.persons[mask_p], cohort.events[mask_e]))
    return parts[0], parts[1]


# the synthetic id range is defined beside the OMOP columns (a module that loads no pandas, for
# the command line's --n) and is read from here as well
__all__ = ["DOMAINS", "EVENT_COLUMNS", "MAX_SYNTHETIC_PERSONS", "NAMESPACE_DOMAIN", "PERSON_COLUMNS", "SEXES",
           "SYNTHETIC_ID_BASE", "Cohort", "domain_of", "partition", "split_patients"]
