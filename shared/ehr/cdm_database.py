"""Load CDM tables into a new database schema made with the v5.4 DDL, all in one transaction.

The schema's clinical tables are created with :func:`shared.ehr.cdm_ddl.create_cdm_schema` (the
ones a release does not fill stay empty, so tools that expect them find them) and filled in
the same transaction: any failure (a constraint, a type, a lost connection) rolls everything
back, the schema included, and the database is as it was. PostgreSQL and DuckDB both roll DDL
back; other SQLAlchemy dialects are untested.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from shared.ehr.cdm_ddl import CLINICAL_TABLES, cdm_metadata, create_cdm_schema
from shared.ehr.cdm_files import arrow_table
from shared.errors import InputError

_BATCH = 10_000  # rows per executemany on dialects without a bulk path


def check_target(engine: sa.Engine, *, schema: str) -> None:
    """Refuse, before any work, a target that cannot take a release: unreachable, a wrong
    password, or a schema that already holds CDM tables.

    Raises
    ------
    InputError
        As :func:`write_cdm_database`; nothing is written.
    """
    if _new_duckdb_file(engine) is not None:
        return  # nothing there to refuse, and connecting would create the file
    with _database_errors(engine, schema, "reaching the database"):
        with engine.connect() as conn:
            _refuse_existing(conn, engine, schema)


def write_cdm_database(tables: dict[str, pd.DataFrame], engine: sa.Engine, *, schema: str) -> None:
    """Create ``schema`` with the CDM's clinical tables and load ``tables`` into it, all or nothing.

    Parameters
    ----------
    tables
        {CDM table name: frame} (:mod:`shared.ehr.cdm_tables`), cast to the DDL types by
        :func:`shared.ehr.cdm_files.arrow_table`.
    engine
        The target database (its URL carries the password; it is never printed).
    schema
        A schema that holds no CDM table yet (it is created when missing).

    Raises
    ------
    InputError
        The database cannot be reached, the schema already holds a CDM table, or the database
        refused the DDL or a row; the message names the table and the database's reason, never
        the password, and nothing stays behind.
    ValueError
        A table does not fit its DDL types (before anything is sent).
    """
    typed = {name: arrow_table(name, frame) for name, frame in tables.items()}
    step = ["creating the tables"]
    created = _new_duckdb_file(engine)
    try:
        with _database_errors(engine, schema, step):
            with engine.begin() as conn:
                _refuse_existing(conn, engine, schema)
                create_cdm_schema(conn, schema, tables=CLINICAL_TABLES)
                target = cdm_metadata(schema, tables=list(typed))
                for table, data in typed.items():
                    step[0] = f"loading {table}"
                    _insert(conn, target.tables[f"{schema}.{table}"], data)
    except BaseException:
        if created is not None:  # a DuckDB file this load made: gone with the rolled-back schema
            engine.dispose()
            for path in (created, created.with_name(created.name + ".wal")):
                path.unlink(missing_ok=True)
        raise


def _new_duckdb_file(engine: sa.Engine) -> Path | None:
    """The file of a DuckDB URL that does not exist yet (connecting creates it), else None."""
    database = engine.url.database or ""
    if engine.url.get_backend_name() != "duckdb" or database in ("", ":memory:") or Path(database).exists():
        return None
    return Path(database)


def _refuse_existing(conn: sa.Connection, engine: sa.Engine, schema: str) -> None:
    existing = [t for t in CLINICAL_TABLES if sa.inspect(conn).has_table(t, schema=schema)]
    if existing:
        raise InputError(f"schema {schema!r} of {engine.url.render_as_string(hide_password=True)} already holds "
                         f"CDM tables ({', '.join(existing[:4])}); load a release into a new schema")


@contextlib.contextmanager
def _database_errors(engine: sa.Engine, schema: str, step: list[str] | str) -> Iterator[None]:
    """A driver error as one :class:`InputError` line naming the step, never the password."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0][:300] if exc.orig is not None else type(exc).__name__
        if engine.url.password:  # drivers do not quote it; this makes sure
            reason = reason.replace(engine.url.password, "***")
        doing = step if isinstance(step, str) else step[0]
        raise InputError(f"{doing} (schema {schema!r} of {engine.url.render_as_string(hide_password=True)}) "
                         f"failed, nothing was written: {reason}") from None


def _insert(conn: sa.Connection, table: sa.Table, data) -> None:
    """Append ``data`` (a typed Arrow table) to ``table`` inside the open transaction."""
    if data.num_rows == 0:
        return
    if conn.dialect.name == "duckdb":
        # DuckDB reads the Arrow table in place: one statement, no row-by-row parameters
        raw = conn.connection.driver_connection
        raw.register("_raregraph_rows", data)
        try:
            columns = ", ".join(f'"{c}"' for c in data.column_names)
            conn.exec_driver_sql(f'INSERT INTO "{table.schema}"."{table.name}" ({columns}) '
                                 f"SELECT {columns} FROM _raregraph_rows")
        finally:
            import duckdb

            # after a failed INSERT the transaction is aborted and refuses even this; the
            # rollback that follows discards the registration with everything else
            with contextlib.suppress(duckdb.TransactionException):
                raw.unregister("_raregraph_rows")
        return
    rows = data.to_pylist()
    for start in range(0, len(rows), _BATCH):
        conn.execute(table.insert(), rows[start:start + _BATCH])
