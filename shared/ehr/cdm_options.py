"""The command-line options of a CDM release (``raregraph generate`` and ``raregraph release``):
the vocabulary (``--vocabulary FOLDER`` or ``--vocabulary-db URL --vocabulary-schema NAME``)
and the target database (``--to-db URL --schema NAME``), turned into the objects that write
it. The options themselves (their Typer types) are in :mod:`shared.ehr.cdm_option_types`, which
the command line loads without the database drivers.

The password follows the site reader's rule (:mod:`shared.ehr.cdm_connection`): a URL that
holds one is refused; it comes from ``--db-password-file`` (readable by its owner only) or
from the environment variable :data:`PASSWORD_ENV`, so it is never on a command line, in a
shell history, a log or an error message. The vocabulary database is opened read-only.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from shared.ehr.cdm_connection import DEFAULT_PASSWORD_ENV, CdmDatabase, engine, read_password
from shared.ehr.cdm_files import FORMATS
from shared.ehr.cdm_release import ReleaseTarget, Vocabulary
from shared.errors import InputError

PASSWORD_ENV = DEFAULT_PASSWORD_ENV


def writable_engine(url: str, *, password_file: Path | None) -> sa.Engine:
    """An engine that may write, on ``url`` (no password in it), the password filled in by the
    site reader's rule (:func:`shared.ehr.cdm_connection.read_password`).

    Raises
    ------
    InputError
        The URL is not a SQLAlchemy URL or holds a password, or the password file is missing
        or readable by others. No message quotes the password.
    """
    settings = CdmDatabase(url, password_file=password_file)
    parsed = sa.make_url(settings.url)
    password = read_password(settings)
    if password is not None and parsed.get_backend_name() != "duckdb":
        parsed = parsed.set(password=password)
    return sa.create_engine(parsed, poolclass=sa.pool.NullPool)


def vocabulary_option(folder: Path | None, url: str | None, schema: str | None, *,
                      password_file: Path | None) -> Vocabulary | None:
    """The vocabulary the options name, or None.

    Raises
    ------
    InputError
        Both a folder and a database, a database without its schema, or a bad URL or password file.
    """
    if folder is not None and url is not None:
        raise InputError("give --vocabulary or --vocabulary-db, not both")
    if url is not None and not schema:
        raise InputError("--vocabulary-db needs --vocabulary-schema (the schema holding concept)")
    if folder is not None:
        return Vocabulary(folder=folder)
    if url is not None:
        return Vocabulary(engine=engine(CdmDatabase(url, vocabulary_schema=schema, password_file=password_file)),
                          schema=schema)
    return None


def release_options(fmt: str, vocabulary: Path | None, vocabulary_db: str | None, vocabulary_schema: str | None,
                    to_db: str | None, schema: str | None, *,
                    password_file: Path | None) -> tuple[Vocabulary | None, ReleaseTarget | None]:
    """The vocabulary and the checked target database of a release's options (format checked too):
    a wrong password or a schema already taken fails here, before minutes of sampling.

    Raises
    ------
    InputError
        An unknown format, or what :func:`vocabulary_option`, :func:`target_option` and
        ``ReleaseTarget.check`` refuse.
    """
    if fmt not in FORMATS:
        raise InputError(f"--format must be csv or parquet, got {fmt!r}")
    vocab = vocabulary_option(vocabulary, vocabulary_db, vocabulary_schema, password_file=password_file)
    database = target_option(to_db, schema, password_file=password_file)
    if database is not None:
        database.check()
    return vocab, database


def target_option(url: str | None, schema: str | None, *, password_file: Path | None) -> ReleaseTarget | None:
    """The target database the options name, or None.

    Raises
    ------
    InputError
        ``--to-db`` without ``--schema`` or the other way round, or a bad URL or password file.
    """
    if (url is None) != (not schema):
        raise InputError("--to-db and --schema go together (the database, and the new schema for the release)")
    if url is None or schema is None:
        return None
    return ReleaseTarget(writable_engine(url, password_file=password_file), schema)
