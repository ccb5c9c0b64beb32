"""Write a cohort as an OMOP CDM v5.4 folder: the site simulator's and the tests' hospital
exports. The tables are those of a release (:mod:`shared.ehr.cdm_tables`: every column of the
specification, concept ids 0, each event's CURIE in ``*_source_value``), without the data card
and ``cdm_source``; the readers (:mod:`shared.ehr.omop`) take what they need from them.
"""

from __future__ import annotations

from pathlib import Path

from shared.atomic import atomic_dir
from shared.ehr.cdm_files import FORMATS, write_cdm_files
from shared.ehr.cdm_tables import DOMAIN_TABLE, cdm_tables
from shared.ehr.cohort import Cohort

__all__ = ["DOMAIN_TABLE", "FORMATS", "write_omop"]


def write_omop(cohort: Cohort, out: str | Path, *, fmt: str = "csv", overwrite: bool = False) -> Path:
    """Write the person, observation_period and event tables as ``<table>.csv`` or
    ``<table>.parquet`` into a new folder, atomically.

    Raises
    ------
    ValueError
        Unknown format, an id beyond 32 bits, or a person without events.
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_cdm_files(cdm_tables(cohort), tmp, fmt=fmt)
    return Path(out)
