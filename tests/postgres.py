"""A real PostgreSQL server for the tests, started and stopped by the suite itself.

The ``postgres_server`` session fixture (registered in ``tests/conftest.py``) finds Debian's
``initdb`` and ``pg_ctl`` (on PATH or under ``/usr/lib/postgresql/*/bin``), creates a cluster
in a fresh temporary folder, starts it on a free port of 127.0.0.1 with password
(SCRAM-SHA-256) authentication for one test role, and stops it with ``pg_ctl stop`` at the
end of the session. PostgreSQL refuses to run as root, so as root the cluster is created and
run as the ``postgres`` system user that Debian's package makes. Without PostgreSQL the
fixture fails — it does not skip — saying to run the README's set-up
(``scripts/bootstrap.sh`` installs the package).

The core, :func:`postgres_cluster`, is a plain context manager with no pytest in it (it
raises :class:`RuntimeError` with the set-up message), so a benchmark can start the same
throwaway server: ``with postgres_cluster(folder) as server: ...``.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

ROLE = "raregraph_test"  # the cluster's superuser, password-authenticated over TCP
RUN_AS = "postgres"  # the system user the cluster runs as when the tests run as root
SETUP = "PostgreSQL is not installed: run the README's set-up (scripts/bootstrap.sh installs Debian's postgresql)"


@dataclass(frozen=True)
class PostgresServer:
    """A running test server: its URL without the password, and the password apart."""

    url: sa.URL  # postgresql+psycopg://raregraph_test@127.0.0.1:PORT/postgres, no password
    password: str

    def engine(self, database: str | None = None) -> sa.Engine:
        """An engine on ``database`` (default: ``postgres``) with the password filled in."""
        url = self.url.set(password=self.password)
        return sa.create_engine(url if database is None else url.set(database=database))

    def create_database(self, name: str) -> sa.URL:
        """A new, empty database (dropped first if a test made it before); its URL, no password."""
        engine = self.engine()
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url.set(database=name)


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: PATH first, then Debian's versioned folders (newest)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(command: list[str]) -> list[str]:
    """``command`` run as the cluster's owner: :data:`RUN_AS` when we are root, ourselves otherwise."""
    return ["runuser", "-u", RUN_AS, "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(_as_owner(command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")


@contextmanager
def postgres_cluster(folder: Path | None = None) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server, stopped (``pg_ctl stop``) and its folder removed on exit.

    Parameters
    ----------
    folder
        Where the cluster lives (created; it must not exist yet, and as root the ``postgres``
        user must be able to reach it: not under a mode-0700 folder such as pytest's); None: a
        fresh folder under ``/tmp``.

    Yields
    ------
    PostgresServer on a free port of 127.0.0.1, password (SCRAM-SHA-256) authentication.

    Raises
    ------
    RuntimeError
        PostgreSQL is not installed (the message says to run the README's set-up), there is
        no ``postgres`` user to run it as when we are root, or ``initdb`` / ``pg_ctl`` fails.
    """
    binaries = find_binaries()
    if binaries is None:
        raise RuntimeError(SETUP)
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(RUN_AS)
        except KeyError:
            raise RuntimeError(f"running as root, and there is no {RUN_AS!r} user to run PostgreSQL as; {SETUP}") \
                from None
    if folder is None:
        root = Path(tempfile.mkdtemp(prefix="raregraph-pg-"))
    else:
        root = Path(folder)
        root.mkdir(parents=True)
    try:
        data, log = root / "data", root / "server.log"
        password = secrets.token_urlsafe(24)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if owner is not None:
            for path in (root, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        _run([str(binaries / "initdb"), "-D", str(data), "-U", ROLE, "--auth=scram-sha-256", f"--pwfile={pwfile}",
              "--encoding=UTF8", "--locale=C.UTF-8"], "initdb")
        pwfile.unlink()
        port = _free_port()
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
        _run([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
             "pg_ctl start")
        try:
            yield PostgresServer(sa.URL.create("postgresql+psycopg", username=ROLE, host="127.0.0.1", port=port,
                                               database="postgres"), password)
        finally:
            subprocess.run(_as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test session (fails, never skips, when PostgreSQL is missing)."""
    try:
        with postgres_cluster() as server:
            yield server
    except RuntimeError as exc:  # set-up missing or initdb / pg_ctl failed (tests' errors never reach here)
        pytest.fail(str(exc), pytrace=False)
