"""How a site reaches its OMOP CDM database: the URL, the schemas, the password, and a
read-only connection whose errors never show the password.

The password rule: it never appears on a command line, in a log, in a report or in an
error message. The URL is given without it (a URL that holds one is refused); the password
comes from a file that only its owner may read (mode 0600: any bit of 0o077 is refused, as
for private keys) or from an environment variable (``RAREGRAPH_CDM_PASSWORD`` by default).
Every error from the database driver is re-raised as one line with the password scrubbed.

Streaming (:func:`stream_frames`): a SELECT comes back as DataFrames of ``rows`` rows built
column by column, never row by row: DuckDB hands over Arrow record batches; PostgreSQL runs
``COPY (SELECT …) TO STDOUT`` in CSV and pyarrow's C parser types the columns (the catalog says
which are dates, integers, numbers, text); other dialects go through a SQLAlchemy server-side
cursor, ``rows`` at a time.

Read-only: PostgreSQL sessions start with ``default_transaction_read_only = on``; DuckDB
files are opened with ``read_only = True``; other SQLAlchemy dialects (SQL Server, Oracle,
Redshift, Databricks…) are accepted but untested, and the site should give a role that can
only read. Nothing is ever written.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import duckdb
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from shared.ehr.settings import DEFAULT_PASSWORD_ENV
from shared.errors import InputError

TESTED_DIALECTS = ("duckdb", "postgresql")


@dataclass(frozen=True)
class CdmDatabase:
    """A site's CDM in a database.

    Attributes
    ----------
    url
        SQLAlchemy URL without the password (``postgresql+psycopg://reader@db:5432/cdm``,
        ``duckdb:////data/site.duckdb``).
    schema
        The clinical tables' schema (None: the connection's default).
    vocabulary_schema
        The vocabulary tables' schema (None: the same as ``schema``).
    password_env
        The environment variable holding the password (read when no file is given).
    password_file
        A file holding the password, readable by its owner only; None: use ``password_env``.
    """

    url: str
    schema: str | None = None
    vocabulary_schema: str | None = None
    password_env: str = DEFAULT_PASSWORD_ENV
    password_file: Path | None = None

    def __post_init__(self) -> None:
        try:
            parsed = sa.make_url(self.url)
        except sa.exc.ArgumentError:
            raise InputError("not a database URL (expected e.g. postgresql+psycopg://user@host:5432/cdm or "
                             "duckdb:///path/site.duckdb)") from None
        if parsed.password is not None:
            raise InputError(f"the CDM URL holds a password ({self}): give the URL without it and the password "
                             f"in a file readable by its owner only or in ${self.password_env}")

    @property
    def vocab_schema(self) -> str | None:
        """The vocabulary tables' schema (``vocabulary_schema``, else ``schema``)."""
        return self.vocabulary_schema if self.vocabulary_schema is not None else self.schema

    @property
    def dialect(self) -> str:
        """The SQLAlchemy backend (``duckdb``, ``postgresql``, ...)."""
        return sa.make_url(self.url).get_backend_name()

    def __str__(self) -> str:
        shown = sa.make_url(self.url).render_as_string(hide_password=True)
        return shown if self.schema is None else f"{shown} (schema {self.schema})"


def read_password(db: CdmDatabase) -> str | None:
    """The password: from ``db.password_file`` (owner-only), else ``$password_env``; None when neither.

    Raises
    ------
    InputError
        The file is missing, unreadable, or others may access it (the message gives the mode
        and ``chmod 600 FILE``).
    """
    if db.password_file is not None:
        path = Path(db.password_file)
        try:
            mode = path.stat().st_mode
            if os.name == "posix" and mode & 0o077:
                raise InputError(f"password file is accessible by others (mode {stat.S_IMODE(mode):04o}); it must be "
                                 f"readable by its owner only: run `chmod 600 {path}`", file=path)
            return path.read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise InputError(f"cannot read the password file ({exc.strerror})", file=path) from None
    return os.environ.get(db.password_env) or None


def engine(db: CdmDatabase) -> sa.Engine:
    """A read-only engine on the CDM (the password filled in from :func:`read_password`)."""
    url = sa.make_url(db.url)
    password = read_password(db)
    if password is not None and url.get_backend_name() != "duckdb":
        url = url.set(password=password)
    connect_args: dict = {}
    if url.get_backend_name() == "duckdb":
        database = url.database or ""
        if database in ("", ":memory:") or not Path(database).is_file():
            raise InputError("DuckDB CDM file not found", file=database or "(no file in the URL)")
        connect_args = {"read_only": True}
    elif url.get_backend_name() == "postgresql":
        connect_args = {"options": "-c default_transaction_read_only=on", "connect_timeout": 10}
    eng = sa.create_engine(url, connect_args=connect_args, poolclass=sa.pool.NullPool)
    if url.get_backend_name() == "duckdb":  # DuckDB draws a progress bar on stdout for slow queries: not ours
        sa.event.listen(eng, "connect", lambda dbapi, _: dbapi.execute("SET enable_progress_bar = false").fetchall())
    return eng


@contextmanager
def driver_errors(db: CdmDatabase, what: str) -> Iterator[None]:
    """Re-raise database errors as one :class:`InputError` line, the password scrubbed."""
    try:
        yield
    except (sa.exc.SQLAlchemyError, duckdb.Error, psycopg.Error, pa.ArrowInvalid) as exc:  # raw-driver streams
        raise InputError(f"{what}: {scrub(_first_line(exc), db)}", file=str(db)) from None


def _first_line(exc: Exception) -> str:
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def scrub(text: str, db: CdmDatabase) -> str:
    """``text`` with the password (and its URL-quoted form) replaced by ``***``."""
    password = None
    try:
        password = read_password(db)
    except InputError:
        pass
    if password:
        for form in {password, quote_plus(password)}:
            text = text.replace(form, "***")
    return text


#: Arrow integer types read as pandas' nullable Int64: a NULL id stays an integer column
#: (and a value in a message reads 1700, not 1700.0)
_INTEGERS = {t: pd.Int64Dtype() for t in (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(),
                                         pa.uint32())}


def stream_frames(conn: sa.Connection, sql: str, *, rows: int, kinds: Mapping[str, str]) -> Iterator[pd.DataFrame]:
    """A SELECT's rows, ``rows`` at a time, as DataFrames built column by column.

    Parameters
    ----------
    conn
        An open connection (:func:`engine`).
    sql
        One SELECT whose output columns are named as ``kinds`` lists them, in that order.
    rows
        Rows per frame: memory follows the frame, not the table.
    kinds
        Output column → ``"integer"``, ``"number"``, ``"date"`` or ``"text"`` (how PostgreSQL's
        CSV is typed; a date column must already be a SQL ``date``).

    Yields
    ------
    DataFrame per batch: integers as ``Int64``, numbers ``float64``, dates ``datetime64``, text
    ``str`` (NULL: missing). Other dialects: the driver's Python objects, column by column.
    """
    if conn.dialect.name == "duckdb":
        yield from _duckdb_frames(conn, sql, rows)
    elif conn.dialect.name == "postgresql":
        yield from _postgres_frames(conn, sql, rows, kinds)
    else:
        result = conn.execution_options(stream_results=True, yield_per=rows).execute(sa.text(sql))
        names = list(result.keys())
        for part in result.partitions():
            yield pd.DataFrame({n: pd.Series(list(col), dtype=object) for n, col in zip(names, zip(*part))})


def _to_pandas(batch: pa.RecordBatch | pa.Table) -> pd.DataFrame:
    return batch.to_pandas(types_mapper=_INTEGERS.get, date_as_object=False)


def _duckdb_frames(conn: sa.Connection, sql: str, rows: int) -> Iterator[pd.DataFrame]:
    """DuckDB's own Arrow record batches (``to_arrow_reader``; ``fetch_arrow_reader`` before 2.0)."""
    relation = conn.connection.driver_connection.sql(sql)
    reader = relation.to_arrow_reader(rows) if hasattr(relation, "to_arrow_reader") else \
        relation.fetch_arrow_reader(rows)
    for batch in reader:
        if batch.num_rows:
            yield _to_pandas(batch)


class _CopyReader(io.RawIOBase):
    """A file over a psycopg COPY's data blocks (pyarrow's CSV reader pulls from it)."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self._blocks = iter(copy)
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 — a writable buffer
        while not len(self._rest):
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._rest = memoryview(block)
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def _postgres_frames(conn: sa.Connection, sql: str, rows: int, kinds: Mapping[str, str]) -> Iterator[pd.DataFrame]:
    """``COPY (sql) TO STDOUT`` as CSV, parsed by pyarrow in blocks; an empty unquoted field is NULL."""
    types = {"integer": pa.int64(), "number": pa.float64(), "date": pa.date32(), "text": pa.string()}
    cursor = conn.connection.driver_connection.cursor()
    try:
        with cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)") as copy:
            stream = io.BufferedReader(_CopyReader(copy), buffer_size=1 << 20)
            reader = pa_csv.open_csv(
                stream, read_options=pa_csv.ReadOptions(column_names=list(kinds), block_size=64 << 20,
                                                        use_threads=False),
                convert_options=pa_csv.ConvertOptions(column_types={c: types[k] for c, k in kinds.items()},
                                                      null_values=[""], strings_can_be_null=True,
                                                      quoted_strings_can_be_null=False))
            pending: list[pa.RecordBatch] = []
            held = 0
            for batch in reader:
                pending.append(batch)
                held += batch.num_rows
                while held >= rows:
                    table = pa.Table.from_batches(pending)
                    yield _to_pandas(table.slice(0, rows))
                    pending, held = table.slice(rows).to_batches(), held - rows
            if held:
                yield _to_pandas(pa.Table.from_batches(pending))
    finally:
        cursor.close()
