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
   and ingredients come back. The used ids are collected once (``SELECT DISTINCT``).
3. Each table's needed columns only (never ``SELECT *``; dates cast to ``date``, lab values
   to ``double precision``), streamed :data:`CHUNK_ROWS` rows at a time as column-built frames
   (:func:`shared.ehr.cdm_connection.stream_frames`) and checked chunk by chunk, so memory
   follows the chunk and the checked events, not the table.

What is read: the whole export, or the study's patients only
-----------------------------------------------------------
``data validate`` reports on the whole export (every row counted and checked: a bad row
anywhere is found), so by default every person and event is read. Training needs only the
patients with a study diagnosis (:func:`shared.trajectories.tensorize.tensorize` drops the
rest), so with ``study_diseases`` the database filters first: a person is read when one of
their events carries a concept id (standard or source) whose vocabulary codes include one that
is, or maps to, a study disease, or a source value that does (the database finds their ids
with one ``SELECT … UNION …`` over the event tables, and step 3's SELECTs get
``WHERE person_id IN (those ids)``). That is a superset of the study patients — the exact
choice of each event's code is made afterwards, as for the whole export — so the tensors are
the same.
The report then counts and checks those persons' rows only (a bad row of another person is not
seen), and when no person matches, everything is read, so the verdict and errors are as usual.

The fingerprint (:func:`db_fingerprint`) is an aggregate the database computes: per table,
the row count and the sum of a 64-bit slice of each row's md5 (over the columns read), plus
the resolved vocabulary codes; no row travels for it.

A row is named in messages by its table and id (``cdm.condition_occurrence
condition_occurrence_id=17: column condition_start_date: …``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Collection, Iterator

import pandas as pd
import sqlalchemy as sa

from shared.ehr.cdm_connection import CdmDatabase, driver_errors, engine, stream_frames
from shared.ehr.cdm_ddl import TABLES as CDM_TABLES
from shared.ehr.codemap import GRAPH_NAMESPACES, NAME, SYSTEMS, CodeMapper, split_source_value
from shared.ehr.cohort import Cohort, domain_of
from shared.ehr.omop_checks import Source, ValidationReport, check_events, check_persons
from shared.ehr.omop_columns import EVENT_TABLES, PERSON, TABLES, ReadTable
from shared.ehr.vocabulary import VOCABULARY_TABLES, ConceptCodes, resolve_concepts, source_value_code
from shared.errors import InputError

log = logging.getLogger(__name__)
CHUNK_ROWS = 250_000  # rows fetched and checked at a time: memory follows the chunk, not the table
#: spec type → words a database's own type name may contain for a compatible column
TYPE_WORDS = {"integer": ("int", "numeric", "decimal", "number"), "date": ("date", "timestamp"),
              "float": ("int", "numeric", "decimal", "double", "real", "float", "number"),
              "varchar": ("char", "text", "string", "clob")}
Catalog = dict[str, dict[str, str]]  # table → column → the database's type name (lower case)


def read_omop_db(db: CdmDatabase, *, skip_bad_rows: bool = False, mapper: CodeMapper | None = None,
                 sex_codes: dict[str, str] | None = None,
                 study_diseases: Collection[str] | None = None) -> tuple[Cohort, ValidationReport]:
    """Read and check one site's CDM in its database.

    Parameters
    ----------
    db
        Where the CDM is (URL, schemas, password source).
    skip_bad_rows, mapper, sex_codes
        As for :func:`shared.ehr.omop.read_omop`.
    study_diseases
        The study's disease codes (``ORPHA:355``, …): read only the persons who may have one
        (filtered in SQL; see the module docstring), for training. None: the whole export,
        as ``data validate`` reports on it.

    Returns
    -------
    (Cohort, ValidationReport), as the file reader gives them; with ``study_diseases`` they
    cover the persons read.

    Raises
    ------
    InputError
        One line: the database cannot be reached or refuses the password (never shown), a
        schema, table or column is missing or of the wrong type, a vocabulary table is
        missing, or the first row problem when ``skip_bad_rows`` is false.
    """
    report = ValidationReport(site=str(db))
    source = {t.name: Source(_name(db.schema, t.name), "sql", t.key) for t in TABLES}
    eng = engine(db)
    try:
        with driver_errors(db, "cannot read the CDM"), eng.connect() as conn:
            t0 = time.perf_counter()
            catalog = _check_catalog(conn, db)
            concepts = _concepts(conn, db)
            persons_sql = None
            if study_diseases is not None:
                persons_sql = _study_persons(conn, db, concepts, mapper, frozenset(study_diseases))
            log.debug("read catalog, vocabulary and study filter: database %.2f s", time.perf_counter() - t0)
            frame = _read(conn, db, PERSON, catalog, persons_sql)
            report.tables["person"] = _entry(db, "person", len(frame))
            persons = check_persons(frame, source["person"], skip=skip_bad_rows, report=report, sex_codes=sex_codes)
            del frame
            born = pd.Series(persons["year_of_birth"].to_numpy(), index=persons["person_id"].to_numpy())
            events = []
            for t in EVENT_TABLES:
                rows, fetch_s, t0 = 0, 0.0, time.perf_counter()
                for chunk, waited in _timed(_chunks(conn, db, t, catalog, persons_sql)):
                    rows += len(chunk)
                    fetch_s += waited
                    events.append(check_events(chunk, t, source[t.name], skip=skip_bad_rows, report=report,
                                               born=born, mapper=mapper, concepts=concepts))
                report.tables[t.name] = _entry(db, t.name, rows)
                log.debug("read %s: %d rows, database %.2f s, checks %.2f s", t.name, rows, fetch_s,
                          time.perf_counter() - t0 - fetch_s)
    finally:
        eng.dispose()
    events = pd.concat(events, ignore_index=True) if events else _no_events()
    codes, distinct = pd.factorize(events["code"].astype(str))
    events["domain"] = domain_of(pd.Series(distinct, dtype=str)).to_numpy()[codes]  # once per distinct code
    cohort = Cohort.from_frames(persons, events)
    report.patients = cohort.n_persons
    report.events = int(len(cohort.events))
    report.events_per_domain = cohort.domain_counts()
    return cohort, report


def db_fingerprint(db: CdmDatabase) -> str:
    """Identity of a site's CDM, computed by the database: per table (id order does not
    matter) the row count and the sum of a 64-bit slice of each row's md5 over the columns the
    reader reads, and the vocabulary codes of the concepts they use, so any change to the data
    read is a new dataset and a budget is never reused for another one. Other dialects
    (untested): sha256 over the streamed rows."""
    digest = hashlib.sha256()
    eng = engine(db)
    try:
        with driver_errors(db, "cannot read the CDM"), eng.connect() as conn:
            catalog = _check_catalog(conn, db)
            for t in TABLES:
                digest.update(t.name.encode())
                if conn.dialect.name in ("duckdb", "postgresql"):
                    count, total = conn.execute(sa.text(_aggregate(conn, db, t))).one()
                    digest.update(f"{count}:{total};".encode())
                    continue
                for chunk in _chunks(conn, db, t, catalog, None, ordered=True):
                    digest.update(pd.util.hash_pandas_object(chunk.astype(str), index=False).to_numpy().tobytes())
            for concept_id, codes in sorted(_concepts(conn, db).codes.items()):
                digest.update(f"{concept_id}={'|'.join(codes)};".encode())
    finally:
        eng.dispose()
    return "sha256:" + digest.hexdigest()


def _entry(db: CdmDatabase, table: str, rows: int) -> dict:
    return {"file": _name(db.schema, table), "format": db.dialect, "rows": int(rows)}


def _no_events() -> pd.DataFrame:
    return pd.DataFrame({"person_id": pd.Series(dtype="int64"), "date": pd.Series(dtype="datetime64[s]"),
                         "code": pd.Series(dtype=object)})


def _timed(frames: Iterator[pd.DataFrame]) -> Iterator[tuple[pd.DataFrame, float]]:
    """Each frame with the seconds spent waiting for it (the database's and the driver's share)."""
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        if frame is None:
            return
        yield frame, time.perf_counter() - t0


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


def _columns(conn: sa.Connection, schema: str | None) -> Catalog:
    """table → column → the database's type name, for one schema (lower case)."""
    if conn.dialect.name in ("duckdb", "postgresql"):
        rows = conn.execute(sa.text(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = COALESCE(:s, current_schema()) AND table_catalog = current_database()"),
            {"s": schema})
        out: Catalog = {}
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


def _check_catalog(conn: sa.Connection, db: CdmDatabase) -> Catalog:
    """Rule 1: schemas, tables, columns and their types; returns the clinical tables' catalog."""
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
    return clinical


def _check_table(db: CdmDatabase, schema: str | None, table: str, catalog: Catalog,
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


def _kind(table: str, column: str, actual: str) -> str:
    """How a column travels: ``date``, ``number`` (cast to double), ``integer`` or ``text``."""
    spec = CDM_TABLES[table].column(column).type
    if spec in ("date", "datetime"):
        return "date"
    if spec == "float":
        return "number"
    if spec in ("integer", "bigint"):
        return "integer" if "int" in actual else "number"  # a numeric(…) id column: parsed, then checked
    return "text"


def _select(conn: sa.Connection, db: CdmDatabase, t: ReadTable, catalog: Catalog, persons: str | None, *,
            ordered: bool = False) -> tuple[str, dict[str, str]]:
    """The SELECT of a table's needed columns (filtered to the ``persons`` id list) and each column's kind."""
    q = conn.dialect.identifier_preparer.quote
    names = list(dict.fromkeys((t.key, *t.columns)))
    kinds = {c: _kind(t.name, c, catalog[t.name][c]) for c in names}
    typed = conn.dialect.name in ("duckdb", "postgresql")  # others (untested): as the driver gives them
    cast = {"date": "DATE", "number": "DOUBLE PRECISION"}
    columns = ", ".join(f"CAST({q(c)} AS {cast[kinds[c]]}) AS {q(c)}" if typed and kinds[c] in cast else q(c)
                        for c in names)
    where = f" WHERE {q('person_id')} IN ({persons})" if persons else ""
    order = f" ORDER BY {q(t.key)}" if ordered else ""
    return f"SELECT {columns} FROM {_quoted(conn, db.schema, t.name)}{where}{order}", kinds


def _chunks(conn: sa.Connection, db: CdmDatabase, t: ReadTable, catalog: Catalog, persons: str | None, *,
            ordered: bool = False) -> Iterator[pd.DataFrame]:
    """The table's needed columns, :data:`CHUNK_ROWS` rows at a time, each row named by its id (``_row``)."""
    sql, kinds = _select(conn, db, t, catalog, persons, ordered=ordered)
    for frame in stream_frames(conn, sql, rows=CHUNK_ROWS, kinds=kinds):
        yield frame.assign(_row=frame[t.key])


def _read(conn: sa.Connection, db: CdmDatabase, t: ReadTable, catalog: Catalog, persons: str | None) -> pd.DataFrame:
    parts = list(_chunks(conn, db, t, catalog, persons))
    if parts:
        return pd.concat(parts, ignore_index=True)
    return pd.DataFrame(columns=[*dict.fromkeys((t.key, *t.columns)), "_row"])


def _aggregate(conn: sa.Connection, db: CdmDatabase, t: ReadTable) -> str:
    """Row count and the sum of each row's md5 (its first 64 bits) over the columns read."""
    q = conn.dialect.identifier_preparer.quote
    text = " || '|' || ".join(f"COALESCE(CAST({q(c)} AS VARCHAR), '\\N')" for c in dict.fromkeys((t.key, *t.columns)))
    if conn.dialect.name == "duckdb":
        part = f"md5_number_lower({text})"
    else:  # PostgreSQL: the first 16 hex digits of the md5 as a signed 64-bit integer
        part = f"('x' || substr(md5({text}), 1, 16))::bit(64)::bigint::numeric"
    return f"SELECT count(*), COALESCE(sum({part}), 0) FROM {_quoted(conn, db.schema, t.name)}"


def _used_ids(conn: sa.Connection, db: CdmDatabase) -> str:
    """A SELECT of the concept ids the event tables use (one column ``id``): for DuckDB and
    PostgreSQL collected once and inlined (the vocabulary queries do not rescan the events)."""
    q = conn.dialect.identifier_preparer.quote
    used = " UNION ".join(f"SELECT {q(c)} AS id FROM {_quoted(conn, db.schema, t.name)}"
                          for t in EVENT_TABLES for c in t.concept_columns)
    if conn.dialect.name not in ("duckdb", "postgresql"):
        return used
    ids = sorted(int(i) for (i,) in conn.execute(sa.text(f"SELECT DISTINCT id FROM ({used}) u WHERE id IS NOT NULL"))
                 if i is not None and float(i).is_integer())
    return f"SELECT id FROM (VALUES {', '.join(f'({i})' for i in ids) or '(NULL)'}) AS u(id)"


def _concepts(conn: sa.Connection, db: CdmDatabase) -> ConceptCodes:
    """Rule 2: the vocabulary joined to the concept ids the event tables use."""
    return resolve_concepts(lambda sql: conn.execute(sa.text(sql)).fetchall(), schema=_prefix(conn, db.vocab_schema),
                            used=_used_ids(conn, db))


def _leads_to(code: str, study: frozenset[str], mapper: CodeMapper | None, *, names: bool) -> bool:
    """Whether ``code`` is, or maps to, a study disease (a pure lookup: nothing counted)."""
    if code in study:
        return True
    system, local = split_source_value(code)
    if system.upper() in GRAPH_NAMESPACES or mapper is None:
        return False
    if names and not system:
        system = NAME
    if system not in SYSTEMS:
        return False
    res = mapper.resolve(system, local)
    return res.status == "mapped" and res.target in study


def _study_persons(conn: sa.Connection, db: CdmDatabase, concepts: ConceptCodes, mapper: CodeMapper | None,
                   study: frozenset[str]) -> str | None:
    """The ids of the persons who may have a study diagnosis, as a SQL list (see the module
    docstring); None when none does (then everything is read, and the usual verdict says so)."""
    q = conn.dialect.identifier_preparer.quote
    ids = sorted(c for c, codes in concepts.codes.items()
                 if any(_leads_to(code, study, mapper, names=False) for code in codes))
    parts = []
    for t in EVENT_TABLES:
        table = _quoted(conn, db.schema, t.name)
        found = conn.execute(sa.text(f"SELECT DISTINCT {q(t.code)} FROM {table} WHERE {q(t.code)} IS NOT NULL"))
        values = [v for (v,) in found
                  if _leads_to(source_value_code(t.name, str(v).strip())[0], study, mapper,
                               names=t.name == "drug_exposure")]
        tests = [f"{q(c)} IN ({', '.join(map(str, ids))})" for c in t.concept_columns if ids]
        if values:
            literal = sa.String().literal_processor(conn.dialect)
            tests.append(f"{q(t.code)} IN ({', '.join(literal(str(v)) for v in values)})")
        if tests:
            parts.append(f"SELECT {q('person_id')} FROM {table} WHERE {' OR '.join(tests)}")
    if not parts:
        return None
    # the ids themselves, inlined: a subquery would be re-run by each table's SELECT
    ids = sorted(int(p) for (p,) in conn.execute(sa.text(" UNION ".join(parts))) if p is not None)
    return ", ".join(map(str, ids)) or None
