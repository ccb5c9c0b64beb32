"""Read a site's OMOP CDM v5.4 from its database (SQLAlchemy: DuckDB and PostgreSQL tested,
other dialects accepted and untested) into the same :class:`Cohort` and validation report as
the file reader (:mod:`shared.ehr.omop`), through the same row checks
(:mod:`shared.ehr.omop_checks`).

What the database is asked (read-only, :mod:`shared.ehr.cdm_connection`):

1. The catalog: the schemas exist, and the clinical tables (person, condition_occurrence,
   observation, drug_exposure, measurement) and the vocabulary tables (concept,
   concept_relationship, concept_ancestor) are there with the columns the reader needs, of
   the v5.4 type (:mod:`shared.ehr.cdm_ddl`).
2. The vocabulary, joined in SQL to the concept ids the event tables use
   (:func:`shared.ehr.vocabulary.resolve_concepts`): only their concepts, "Maps to" targets
   and ingredients come back.
3. Each table's needed columns only (never ``SELECT *``), streamed in chunks of
   :data:`CHUNK_ROWS` rows.

A row is named in messages by its table and id (``cdm.condition_occurrence
condition_occurrence_id=17: column condition_start_date: …``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pandas as pd
import sqlalchemy as sa

from shared.ehr.cdm_connection import CdmDatabase, driver_errors, engine
from shared.ehr.cdm_ddl import TABLES as CDM_TABLES
from shared.ehr.codemap import CodeMapper
from shared.ehr.cohort import Cohort
from shared.ehr.omop_checks import Source, ValidationReport, check_events, check_persons
from shared.ehr.omop_columns import EVENT_TABLES, TABLES, ReadTable
from shared.ehr.vocabulary import VOCABULARY_TABLES, ConceptCodes, resolve_concepts
from shared.errors import InputError

CHUNK_ROWS = 50_000  # rows fetched at a time: memory follows the chunk, not the table
#: spec type → words a database's own type name may contain for a compatible column
TYPE_WORDS = {"integer": ("int", "numeric", "decimal", "number"), "date": ("date", "timestamp"),
              "float": ("int", "numeric", "decimal", "double", "real", "float", "number"),
              "varchar": ("char", "text", "string", "clob")}


def read_omop_db(db: CdmDatabase, *, skip_bad_rows: bool = False, mapper: CodeMapper | None = None,
                 sex_codes: dict[str, str] | None = None) -> tuple[Cohort, ValidationReport]:
    """Read and check one site's CDM in its database.

    Parameters
    ----------
    db
        Where the CDM is (URL, schemas, password source).
    skip_bad_rows, mapper, sex_codes
        As for :func:`shared.ehr.omop.read_omop`.

    Returns
    -------
    (Cohort, ValidationReport), as the file reader gives them.

    Raises
    ------
    InputError
        One line: the database cannot be reached or refuses the password (never shown), a
        schema, table or column is missing or of the wrong type, a vocabulary table is
        missing, or the first row problem when ``skip_bad_rows`` is false.
    """
    report = ValidationReport(site=str(db))
    eng = engine(db)
    try:
        with driver_errors(db, "cannot read the CDM"), eng.connect() as conn:
            _check_catalog(conn, db)
            frames = {t.name: _read(conn, db, t) for t in TABLES}
            concepts = _concepts(conn, db)
    finally:
        eng.dispose()
    for t in TABLES:
        report.tables[t.name] = {"file": _name(db.schema, t.name), "format": db.dialect,
                                 "rows": int(len(frames[t.name]))}
    source = {t.name: Source(_name(db.schema, t.name), "sql", t.key) for t in TABLES}
    persons = check_persons(frames["person"], source["person"], skip=skip_bad_rows, report=report,
                            sex_codes=sex_codes)
    born = pd.Series(persons["year_of_birth"].to_numpy(), index=persons["person_id"].to_numpy())
    events = [check_events(frames[t.name], t, source[t.name], skip=skip_bad_rows, report=report, born=born,
                           mapper=mapper, concepts=concepts) for t in EVENT_TABLES]
    cohort = Cohort.from_frames(persons, pd.concat(events, ignore_index=True))
    report.patients = cohort.n_persons
    report.events = int(len(cohort.events))
    report.events_per_domain = cohort.domain_counts()
    return cohort, report


def db_fingerprint(db: CdmDatabase) -> str:
    """Identity of a site's CDM: sha256 over every row the reader reads, table by table in id
    order (and the vocabulary rows of the concepts they use), so any change to the data read
    is a new dataset and a budget is never reused for another one."""
    digest = hashlib.sha256()
    eng = engine(db)
    try:
        with driver_errors(db, "cannot read the CDM"), eng.connect() as conn:
            _check_catalog(conn, db)
            for t in TABLES:
                digest.update(t.name.encode())
                for chunk in _chunks(conn, db, t, ordered=True):
                    digest.update(pd.util.hash_pandas_object(chunk.astype(str), index=False).to_numpy().tobytes())
            for concept_id, codes in sorted(_concepts(conn, db).codes.items()):
                digest.update(f"{concept_id}={'|'.join(codes)};".encode())
    finally:
        eng.dispose()
    return "sha256:" + digest.hexdigest()


def _name(schema: str | None, table: str) -> str:
    return table if schema is None else f"{schema}.{table}"


def _quoted(conn: sa.Connection, schema: str | None, table: str) -> str:
    prefix = _prefix(conn, schema)
    return f"{prefix}.{conn.dialect.identifier_preparer.quote(table)}" if prefix else \
        conn.dialect.identifier_preparer.quote(table)


def _prefix(conn: sa.Connection, schema: str | None) -> str:
    """The quoted qualifier of ``schema``'s tables ("" for the default schema). DuckDB's is
    ``catalog.schema``: a file called ``cdm.duckdb`` is itself a catalog named ``cdm``, and a
    bare ``cdm.person`` would be ambiguous."""
    if schema is None:
        return ""
    q = conn.dialect.identifier_preparer.quote
    if conn.dialect.name == "duckdb":
        catalog = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        return f"{q(str(catalog))}.{q(schema)}"
    return q(schema)


def _columns(conn: sa.Connection, schema: str | None) -> dict[str, dict[str, str]]:
    """table → column → the database's type name, for one schema (lower case)."""
    if conn.dialect.name in ("duckdb", "postgresql"):
        rows = conn.execute(sa.text(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = COALESCE(:s, current_schema()) AND table_catalog = current_database()"),
            {"s": schema})
        out: dict[str, dict[str, str]] = {}
        for table, column, kind in rows:
            out.setdefault(str(table).lower(), {})[str(column).lower()] = str(kind).lower()
        return out
    inspector = sa.inspect(conn)  # other dialects (untested): SQLAlchemy's reflection
    return {t: {c["name"].lower(): str(c["type"]).lower() for c in inspector.get_columns(t, schema=schema)}
            for t in inspector.get_table_names(schema=schema)}


def _schemas(conn: sa.Connection) -> set[str]:
    if conn.dialect.name in ("duckdb", "postgresql"):
        return {str(s) for (s,) in conn.execute(sa.text(
            "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = current_database()"))}
    return set(sa.inspect(conn).get_schema_names())


def _check_catalog(conn: sa.Connection, db: CdmDatabase) -> None:
    """Rule 1: schemas, tables, columns and their types."""
    schemas = _schemas(conn)
    for kind, schema in (("CDM", db.schema), ("vocabulary", db.vocab_schema)):
        if schema is not None and schema not in schemas:
            raise InputError(f"{kind} schema {schema!r} not found (schemas: {', '.join(sorted(schemas))[:200]})",
                             file=str(db))
    clinical = _columns(conn, db.schema)
    vocabulary = clinical if db.vocab_schema == db.schema else _columns(conn, db.vocab_schema)
    for t in TABLES:
        _check_table(db, db.schema, t.name, clinical, t.columns)
    needs = {"concept": ("concept_id", "vocabulary_id", "concept_code", "domain_id", "concept_class_id",
                         "standard_concept"),
             "concept_relationship": ("concept_id_1", "concept_id_2", "relationship_id", "invalid_reason"),
             "concept_ancestor": ("ancestor_concept_id", "descendant_concept_id")}
    for table in VOCABULARY_TABLES:
        _check_table(db, db.vocab_schema, table, vocabulary, needs[table], vocabulary_table=True)


def _check_table(db: CdmDatabase, schema: str | None, table: str, catalog: dict[str, dict[str, str]],
                 columns: tuple[str, ...], *, vocabulary_table: bool = False) -> None:
    where = _name(schema, table)
    if table not in catalog:
        what = "vocabulary table" if vocabulary_table else "table"
        hint = "; give its schema with vocabulary-schema" if vocabulary_table else ""
        raise InputError(f"{what} {where} not found{hint}", file=str(db))
    for column in columns:
        if column not in catalog[table]:
            raise InputError(f"column missing in {where}", file=str(db), field=column)
        spec = CDM_TABLES[table].column(column).type
        family = "varchar" if spec.startswith("varchar") else spec
        actual = catalog[table][column]
        if family in TYPE_WORDS and not any(word in actual for word in TYPE_WORDS[family]):
            raise InputError(f"{where} has type {actual}; the OMOP CDM v5.4 type is {spec}", file=str(db),
                             field=column)


def _select(conn: sa.Connection, db: CdmDatabase, t: ReadTable, *, ordered: bool) -> str:
    q = conn.dialect.identifier_preparer.quote
    columns = ", ".join(q(c) for c in dict.fromkeys((t.key, *t.columns)))
    order = f" ORDER BY {q(t.key)}" if ordered else ""
    return f"SELECT {columns} FROM {_quoted(conn, db.schema, t.name)}{order}"


def _chunks(conn: sa.Connection, db: CdmDatabase, t: ReadTable, *, ordered: bool = False) -> Iterator[pd.DataFrame]:
    """The table's needed columns, :data:`CHUNK_ROWS` rows at a time (a server-side cursor where the driver has one)."""
    result = conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(
        sa.text(_select(conn, db, t, ordered=ordered)))
    names = list(result.keys())
    for rows in result.partitions():
        yield pd.DataFrame.from_records(rows, columns=names, coerce_float=False)


def _read(conn: sa.Connection, db: CdmDatabase, t: ReadTable) -> pd.DataFrame:
    parts = list(_chunks(conn, db, t))
    columns = list(dict.fromkeys((t.key, *t.columns)))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    frame = frame.astype({c: object for c in frame.columns if c not in (t.key,)})
    return frame.assign(_row=frame[t.key].to_numpy())


def _concepts(conn: sa.Connection, db: CdmDatabase) -> ConceptCodes:
    """Rule 2: the vocabulary joined to the concept ids the event tables use."""
    q = conn.dialect.identifier_preparer.quote
    used = " UNION ".join(f"SELECT {q(c)} AS id FROM {_quoted(conn, db.schema, t.name)}"
                          for t in EVENT_TABLES for c in t.concept_columns)
    return resolve_concepts(lambda sql: conn.execute(sa.text(sql)).fetchall(), schema=_prefix(conn, db.vocab_schema),
                            used=used)
