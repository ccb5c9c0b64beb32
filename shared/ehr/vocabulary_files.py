"""The vocabulary tables of a file export: ``concept``, ``concept_relationship`` and
``concept_ancestor`` as CSV (comma- or tab-separated, as Athena writes them; any case:
``CONCEPT.csv``), ``.csv.gz`` or Parquet beside the clinical tables. They are read by an
in-memory DuckDB with the same SQL a database site runs (:mod:`shared.ehr.vocabulary`),
restricted to the concept ids the export uses.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from shared.ehr.vocabulary import VOCABULARY_TABLES, ConceptCodes, resolve_concepts
from shared.errors import InputError

EXTENSIONS = (".csv", ".csv.gz", ".parquet")


def vocabulary_files(folder: Path) -> dict[str, Path]:
    """The vocabulary tables found in ``folder`` (table → file); empty when it has none."""
    by_name = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    found = {}
    for table in VOCABULARY_TABLES:
        for ext in EXTENSIONS:
            if f"{table}{ext}" in by_name:
                found[table] = by_name[f"{table}{ext}"]
                break
    return found


def file_concepts(folder: Path, used: np.ndarray) -> ConceptCodes:
    """The candidate codes of the concept ids ``used`` (int64, 0s ignored), from the folder's vocabulary files.

    Raises
    ------
    InputError
        Some but not all vocabulary tables are there, or one cannot be read.
    """
    files = vocabulary_files(folder)
    missing = [t for t in VOCABULARY_TABLES if t not in files]
    if missing:
        raise InputError(f"vocabulary table {missing[0]} is missing (concept ids are resolved through "
                         f"{', '.join(VOCABULARY_TABLES)}; export them from the CDM or Athena)", file=folder)
    con = duckdb.connect()
    try:
        for table, path in files.items():
            reader = f"read_parquet('{_sql_path(path)}')" if path.suffix == ".parquet" else \
                f"read_csv('{_sql_path(path)}', header = true, all_varchar = true, quote = '\"')"
            con.execute(f"CREATE VIEW raw_{table} AS SELECT * FROM {reader}")
        con.execute("""CREATE VIEW concept AS SELECT CAST(concept_id AS BIGINT) AS concept_id, vocabulary_id,
            concept_code, domain_id, concept_class_id, standard_concept FROM raw_concept""")
        con.execute("""CREATE VIEW concept_relationship AS SELECT CAST(concept_id_1 AS BIGINT) AS concept_id_1,
            CAST(concept_id_2 AS BIGINT) AS concept_id_2, relationship_id,
            NULLIF(TRIM(CAST(invalid_reason AS VARCHAR)), '') AS invalid_reason FROM raw_concept_relationship""")
        con.execute("""CREATE VIEW concept_ancestor AS SELECT CAST(ancestor_concept_id AS BIGINT) AS ancestor_concept_id,
            CAST(descendant_concept_id AS BIGINT) AS descendant_concept_id FROM raw_concept_ancestor""")
        ids = np.unique(used[used != 0]).astype(np.int64)
        con.register("used_frame", pd.DataFrame({"id": ids}))
        return resolve_concepts(lambda sql: con.execute(sql).fetchall(), schema="",
                                used="SELECT id FROM used_frame")
    except duckdb.Error as exc:
        raise InputError(f"cannot read the vocabulary tables: {str(exc).splitlines()[0]}", file=folder) from None
    finally:
        con.close()


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
