"""The files of a site's OMOP export: which file holds each table (``.csv``, ``.csv.gz`` or
``.parquet``), and its required columns read from them. Problems with the bytes themselves
(not UTF-8, a truncated gzip stream) are named down to the line; :mod:`shared.ehr.omop`
checks the rows.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow.parquet as pq

from shared.ehr.omop_columns import ReadTable
from shared.errors import InputError


def locate_table(folder: Path, table: ReadTable) -> tuple[Path, str]:
    """The one file holding ``table`` in a site folder, and its format (``csv`` or ``parquet``)."""
    candidates = [(folder / f"{table.name}.csv", "csv"), (folder / f"{table.name}.csv.gz", "csv"),
                  (folder / f"{table.name}.parquet", "parquet")]
    found = [(p, fmt) for p, fmt in candidates if p.is_file()]
    if not found:
        raise InputError(f"table {table.name} is missing (expected {table.name}.csv or {table.name}.parquet)",
                         file=folder)
    if len(found) > 1:
        raise InputError(f"table {table.name} is present twice ({', '.join(p.name for p, _ in found)}); keep one",
                         file=folder)
    return found[0]


def read_table(path: Path, fmt: str, table: ReadTable) -> pd.DataFrame:
    """The table's columns that are present (its required ones, at least one of its
    ``any_of``, and the optional ones there), as strings (CSV) or native types (Parquet).

    Raises
    ------
    InputError
        Not a Parquet or CSV file, a required column missing (or every one of ``any_of``),
        a line that is not UTF-8 (naming line and column), or a gzip stream that ends early
        (naming the first line lost). A byte-order mark before the header is accepted.
    """
    if fmt == "parquet":
        try:
            schema = pq.read_schema(path)
        except Exception as exc:  # noqa: BLE001 — pyarrow raises several types for non-Parquet bytes
            raise InputError(f"not a Parquet file ({type(exc).__name__})", file=path) from None
        columns = _present(path, table, schema.names, line=None)
        return pq.read_table(path, columns=columns).to_pandas()
    names = _csv_header(path)
    if any("\x00" in n for n in names) or len(names) == 1 and len(table.required) > 1:
        raise InputError("not a CSV file (no comma-separated header line)", file=path, line=1)
    columns = _present(path, table, names, line=1)
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is dropped, not glued to the first name
        return pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False,
                           na_values=[], encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise _not_utf8(path, names) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise _broken_gzip(path, exc) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(f"not a readable CSV file: {str(exc).splitlines()[0]}", file=path) from None


def _present(path: Path, table: ReadTable, names: list[str], *, line: int | None) -> list[str]:
    """The columns of ``table`` to read from a file whose header is ``names``; raises when one is missing."""
    what = "header has" if line else "has"
    missing = [c for c in table.required if c not in names]
    if missing:
        raise InputError(f"required column missing ({what}: {', '.join(names)[:200]})", file=path, line=line,
                         field=missing[0])
    if table.any_of and not any(c in names for c in table.any_of):
        raise InputError(f"needs one of the columns {', '.join(table.any_of)} ({what}: {', '.join(names)[:200]})",
                         file=path, line=line, field=table.any_of[-1])
    return [c for c in table.columns if c in names]


def _open_binary(path: Path) -> IO[bytes]:
    """A CSV file's bytes, decompressed when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's first line (a byte-order mark dropped)."""
    try:
        with _open_binary(path) as fh:
            raw = fh.readline()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise _broken_gzip(path, exc) from None
    try:
        header = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # a column named as far as it reads (U+FFFD for the bad byte)
        names = next(csv.reader([raw.decode("utf-8", errors="replace").rstrip("\r\n")]), [])
        names = [n.strip().strip('"') for n in names] if len(names) > 1 else []  # one "name": not a CSV header
        raise _not_utf8_at(raw, exc, path, 1, names) from None
    return [h.strip().strip('"') for h in next(csv.reader([header.rstrip("\r\n")]), [""])]


def _not_utf8(path: Path, names: list[str]) -> InputError:
    """The first line of a CSV file that is not UTF-8, as an error naming line and column."""
    try:
        with _open_binary(path) as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return _not_utf8_at(raw, exc, path, number, names)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        return _broken_gzip(path, exc)
    return InputError("not a readable UTF-8 CSV file", file=path)  # pandas saw what a line scan did not


def _not_utf8_at(raw: bytes, exc: UnicodeDecodeError, path: Path, line: int, names: list[str]) -> InputError:
    """The error for a line whose bytes from ``exc.start`` are not UTF-8; the column is the
    comma-separated field holding that byte (quotes respected), when the header names it."""
    before = raw[: exc.start].decode("utf-8", errors="replace")
    column = len(next(csv.reader([before]), [""])) - 1 if before else 0
    field = names[column] if 0 <= column < len(names) else None
    bad = raw[exc.start:exc.end].hex(" ")
    return InputError(f"not UTF-8 (byte 0x{bad}; a Latin-1 or Windows-1252 export?): save the file as UTF-8",
                      file=path, line=line, field=field)


def _broken_gzip(path: Path, exc: Exception) -> InputError:
    """The error for a gzip stream that ends early or is corrupt, naming the first line it loses."""
    lines = 0
    try:
        with gzip.open(path, "rb") as fh:
            for _ in fh:
                lines += 1
    except (EOFError, gzip.BadGzipFile, zlib.error):
        pass
    why = "truncated: the compressed stream ends early" if isinstance(exc, EOFError) else \
        f"{type(exc).__name__}: {exc}"
    return InputError(f"not a readable gzip file ({why}); copy or export it again", file=path, line=lines + 1)
