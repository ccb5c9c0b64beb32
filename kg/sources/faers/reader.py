"""Reading FAERS/AERS quarters as published: one ``$``-delimited table (three header
variants, legacy trailing ``$``), the tables and deleted-case lists of a quarter folder (see
the format notes in :mod:`kg.sources.faers`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from shared.errors import InputError

TABLE_KINDS = ("DEMO", "DRUG", "REAC", "OUTC", "INDI", "THER", "RPSR")
#: columns every file of a kind must have, after renaming (legacy DEMO: no caseversion).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "DEMO": ("primaryid", "caseid", "caseversion", "fda_dt"),
    "DRUG": ("primaryid", "role_cod", "drugname"),
    "REAC": ("primaryid", "pt"),
    "OUTC": ("primaryid", "outc_cod"),
    "INDI": ("primaryid", "indi_drug_seq", "indi_pt"),
    "THER": ("primaryid", "dsg_drug_seq"),
    "RPSR": ("primaryid", "rpsr_cod"),
}
#: older header names → current ones (headers are lower-cased first).
_RENAMES = {"isr": "primaryid", "case": "caseid", "outc_code": "outc_cod", "gndr_cod": "sex",
            "lot_nbr": "lot_num"}
_LEGACY_DRUG_SEQ = {"INDI": "indi_drug_seq", "THER": "dsg_drug_seq"}

_TABLE_FILE = re.compile(r"^(DEMO|DRUG|REAC|OUTC|INDI|THER|RPSR)\d{2}Q[1-4](_NEW)?\.TXT$", re.I)
_DELETED_FILE = re.compile(r"^DELE.*\.TXT$", re.I)
_TRAILING = "\x00trailing"  # name of the empty field after a row-terminating '$'


# -- reading one table ------------------------------------------------------------------------


def read_faers_table(
    path: str | Path, kind: str, *, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read one FAERS/AERS ``$``-delimited table, every field a string.

    Parameters
    ----------
    path
        ``DEMOyyQq.txt`` etc. (current or legacy layout, LF or CRLF, trailing ``$`` or not).
    kind
        One of :data:`TABLE_KINDS`.
    columns
        Current (lower-case) column names to return; default :data:`REQUIRED_COLUMNS` of
        ``kind``. A requested column the file lacks comes back as empty strings; legacy DEMO
        gets ``caseversion`` ``"0"``.

    Returns
    -------
    pandas.DataFrame
        The requested columns, whitespace-stripped strings.

    Raises
    ------
    InputError
        Missing file; a header without ``$`` (tab- or comma-separated file); a header
        missing a required column (named); no data rows; a row with the wrong number of
        fields (its line).
    """
    kind = kind.upper()
    if kind not in TABLE_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(TABLE_KINDS)}")
    path = Path(path)
    names, legacy, encoding = _header(path, kind)
    required = [c for c in REQUIRED_COLUMNS[kind] if not (legacy and c == "caseversion")]
    for col in required:
        if col not in names:
            raise InputError(f"missing column {col!r}: the header has {', '.join(names)}",
                             file=path, line=1, field=col)
    wanted = list(dict.fromkeys(columns if columns is not None else REQUIRED_COLUMNS[kind]))
    present = [c for c in wanted if c in names]
    trailing = _rows_end_in_dollar(path, len(names), encoding)
    table = _read_body(path, names, present, trailing, encoding)
    for col in wanted:
        if col not in table.columns:
            table[col] = "0" if (legacy and col == "caseversion") else ""
    return table[wanted]


def _decode(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"  # pre-2012 files hold a few Latin-1 bytes


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None


def _header(path: Path, kind: str) -> tuple[list[str], bool, str]:
    """Current column names of the header line, whether it is legacy AERS, the encoding."""
    with _open(path) as fh:
        raw = fh.readline()
    text, encoding = _decode(raw)
    text = text.lstrip("\ufeff").rstrip("\r\n")
    if not text.strip():
        raise InputError("empty file: no header line", file=path, line=1)
    if "$" not in text:
        sep = "tab" if "\t" in text else "comma" if "," in text else "no"
        raise InputError(f"the header has no '$': a FAERS table is '$'-delimited, this looks "
                         f"{sep}-separated ({text[:80]!r})", file=path, line=1)
    fields = [f.strip().lower() for f in text.split("$")]
    if fields[-1] == "":
        fields.pop()  # a header that also ends in '$'
    legacy = "isr" in fields and "primaryid" not in fields
    names: list[str] = []
    for f in fields:
        name = _RENAMES.get(f, f)
        if legacy and f == "drug_seq" and kind in _LEGACY_DRUG_SEQ:
            name = _LEGACY_DRUG_SEQ[kind]
        names.append(name if name not in names else f"{name}.{len(names)}")
    return names, legacy, encoding


def _data_lines(path: Path, encoding: str):
    """(line number, fields) of every non-empty line after the header, split as Arrow splits them."""
    py_encoding = "utf-8" if encoding == "utf8" else encoding
    with _open(path) as fh:
        fh.readline()
        for lineno, raw in enumerate(fh, start=2):
            text = raw.rstrip(b"\r\n")
            if not text:
                continue  # Arrow skips empty lines too
            if b"\r" in text:  # Arrow ends a row at a lone CR as well
                raise InputError("a stray carriage return breaks this row in two",
                                 file=path, line=lineno)
            yield lineno, text.decode(py_encoding, errors="replace").split("$")


def _rows_end_in_dollar(path: Path, n: int, encoding: str) -> bool:
    """Whether data rows carry a terminating '$' (legacy), judged on the first data row."""
    for lineno, fields in _data_lines(path, encoding):
        if len(fields) == n:
            return False
        if len(fields) == n + 1 and fields[-1] == "":
            return True
        raise InputError(f"expected {n} '$'-separated fields as in the header, got {len(fields)}",
                         file=path, line=lineno)
    raise InputError("no data rows (empty or truncated file)", file=path)


def _read_body(path: Path, names: list[str], wanted: list[str], trailing: bool,
               encoding: str) -> pd.DataFrame:
    """Arrow's CSV reader, only ``wanted`` columns, as strings; bad rows raise with their line."""
    cols = [*names, _TRAILING] if trailing else names
    include = [*wanted, _TRAILING] if trailing else wanted
    bad: list[object] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        bad.append(row)
        return "error"

    try:
        arrow = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(skip_rows=1, column_names=cols, encoding=encoding),
            parse_options=pa_csv.ParseOptions(delimiter="$", quote_char=False,
                                              invalid_row_handler=on_invalid),
            convert_options=pa_csv.ConvertOptions(
                include_columns=include, column_types={c: pa.string() for c in include},
                strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        if not bad and "UTF8" in str(exc) and encoding == "utf8":
            return _read_body(path, names, wanted, trailing, "latin-1")
        if bad:
            _raise_bad_row(path, len(names), trailing, encoding)
        raise InputError(f"not a readable '$'-delimited table ({exc})", file=path) from None
    table = arrow.to_pandas()
    if trailing and (table[_TRAILING] != "").any():
        _raise_bad_row(path, len(names), trailing, encoding)
    table = table.drop(columns=[_TRAILING], errors="ignore")
    return table.apply(lambda s: s.str.strip()) if len(table) else table


def _raise_bad_row(path: Path, n: int, trailing: bool, encoding: str) -> None:
    """Find the first data line whose field count is wrong (Arrow's threads lose it) and raise."""
    for lineno, fields in _data_lines(path, encoding):
        if trailing and len(fields) == n and fields[-1] != "":
            raise InputError("the row lacks the terminating '$' that the other rows of this legacy "
                             "file have", file=path, line=lineno)
        got = len(fields) - 1 if trailing and fields[-1] == "" else len(fields)
        if got != n:
            raise InputError(f"expected {n} '$'-separated fields as in the header, got {got} "
                             "(truncated row, a '$' inside a value, or a broken line)",
                             file=path, line=lineno)
    raise InputError("malformed row (line not found again)", file=path)  # pragma: no cover


def _line_of(path: Path, names: list[str], column: str, value: str) -> int | None:
    """File line of the first data row whose ``column`` equals ``value`` (for error messages)."""
    idx = names.index(column)
    for lineno, fields in _data_lines(path, "utf8"):
        if len(fields) > idx and fields[idx].strip() == value:
            return lineno
    return None  # pragma: no cover


# -- one quarter folder -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuarterFiles:
    """The tables and deleted-case lists found in one quarter folder."""

    directory: Path
    tables: dict[str, Path]  # kind → file
    deleted: tuple[Path, ...]


def find_quarter_files(directory: str | Path) -> QuarterFiles:
    """Locate the tables of one quarter in ``directory`` or its ``ascii/`` subfolder.

    Raises
    ------
    InputError
        The folder is missing, lacks DEMO, DRUG or REAC, or holds two files of one kind.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("quarter folder not found", file=directory)
    places = [directory, *(p for p in sorted(directory.iterdir())
                           if p.is_dir() and p.name.lower() == "ascii")]
    tables: dict[str, Path] = {}
    deleted: list[Path] = []
    for place in places:
        for p in sorted(place.iterdir()):
            if p.is_dir() and p.name.lower() == "deleted":
                deleted += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() == ".txt")
            elif p.is_file() and _DELETED_FILE.match(p.name):
                deleted.append(p)
            elif p.is_file() and (m := _TABLE_FILE.match(p.name)):
                kind, new = m.group(1).upper(), bool(m.group(2))
                if kind in tables and (new == bool(_TABLE_FILE.match(tables[kind].name).group(2))):
                    raise InputError(f"two {kind} files: {tables[kind].name} and {p.name}",
                                     file=directory)
                if kind not in tables or new:
                    tables[kind] = p
    missing = [k for k in ("DEMO", "DRUG", "REAC") if k not in tables]
    if missing:
        raise InputError(f"no {', '.join(f'{k}yyQq.txt' for k in missing)} file in the quarter "
                         "folder (or its ascii/ subfolder)", file=directory)
    return QuarterFiles(directory, tables, tuple(deleted))


def read_deleted_caseids(path: str | Path) -> set[str]:
    """Caseids listed in a deleted-cases file: one per line, an optional header line.

    Raises
    ------
    InputError
        A line after the first that is not a caseid (digits).
    """
    path = Path(path)
    ids: set[str] = set()
    with _open(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            value = _decode(raw)[0].lstrip("\ufeff").split("$")[0].strip()
            if not value:
                continue
            if not value.isdigit():
                if lineno == 1:
                    continue  # header, e.g. "caseid"
                raise InputError(f"{value[:40]!r} is not a caseid", file=path, line=lineno)
            ids.add(value)
    return ids


def _read_demo(path: Path) -> pd.DataFrame:
    demo = read_faers_table(path, "DEMO")
    for col, ok in (("caseversion", demo["caseversion"].str.fullmatch(r"\d+")),
                    ("caseid", demo["caseid"] != ""), ("primaryid", demo["primaryid"] != "")):
        if not ok.all():
            value = demo.loc[~ok, col].iloc[0]
            what = "a version number" if col == "caseversion" else f"a {col}"
            line = _line_of(path, _header(path, "DEMO")[0], col, value)
            raise InputError(f"{value!r} is not {what}", file=path, line=line, field=col)
    return demo
