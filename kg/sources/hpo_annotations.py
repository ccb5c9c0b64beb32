"""Parsers for the HPO annotation releases: ``phenotype.hpoa``, ``genes_to_phenotype.txt``
and ``phenotype_to_genes.txt`` (tab-separated, published by the HPO project).

Frequencies become numbers in [0, 1]:

========================  =======================  =========
``frequency`` value       meaning                   number
========================  =======================  =========
``HP:0040280``            Obligate (100 %)          1.0
``HP:0040281``            Very frequent (80–99 %)   0.895 (interval midpoint)
``HP:0040282``            Frequent (30–79 %)        0.545
``HP:0040283``            Occasional (5–29 %)       0.17
``HP:0040284``            Very rare (1–4 %)         0.025
``HP:0040285``            Excluded (0 %)            0.0
``n/m``                   n of m patients           n / m
``p%``                    a percentage              p / 100
empty or ``-``            unknown                   NaN
========================  =======================  =========

A ``NOT`` qualifier is kept as its own flag: the caller turns it into an explicit negative
edge and never into a positive one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from shared.errors import InputError

#: HPO frequency terms (subontology HP:0040279) → the midpoint of their published interval.
FREQUENCY_TERMS: dict[str, float] = {
    "HP:0040280": 1.0,
    "HP:0040281": 0.895,
    "HP:0040282": 0.545,
    "HP:0040283": 0.17,
    "HP:0040284": 0.025,
    "HP:0040285": 0.0,
}

HPOA_COLUMNS = (
    "database_id", "disease_name", "qualifier", "hpo_id", "reference", "evidence",
    "onset", "frequency", "sex", "modifier", "aspect", "biocuration",
)
GENES_TO_PHENOTYPE_COLUMNS = (
    "ncbi_gene_id", "gene_symbol", "hpo_id", "hpo_name", "frequency", "disease_id",
)
PHENOTYPE_TO_GENES_COLUMNS = ("hpo_id", "hpo_name", "ncbi_gene_id", "gene_symbol", "disease_id")
ASPECTS = frozenset("PICMH")
QUALIFIERS = frozenset({"", "NOT"})
SEXES = frozenset({"", "MALE", "FEMALE", "male", "female"})

_FRACTION = re.compile(r"^(\d+)/(\d+)$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
_HPO_ID = re.compile(r"^HP:\d{7}$")


def parse_frequency(value: str) -> float:
    """Map an HPO frequency field to a number in [0, 1]; NaN when unknown.

    Raises
    ------
    ValueError
        The value is none of the published forms, or a fraction/percentage above 1.
    """
    value = value.strip()
    if value in ("", "-"):
        return math.nan
    if value in FREQUENCY_TERMS:
        return FREQUENCY_TERMS[value]
    if m := _FRACTION.match(value):
        n, d = int(m.group(1)), int(m.group(2))
        if d == 0 or n > d:
            raise ValueError(f"fraction {value!r} is not a share of patients")
        return n / d
    if m := _PERCENT.match(value):
        p = float(m.group(1))
        if p > 100:
            raise ValueError(f"percentage {value!r} is above 100%")
        return p / 100.0
    raise ValueError(
        f"frequency {value!r} is not an HP:00402xx term, an n/m fraction or a percentage"
    )


@dataclass(frozen=True, slots=True)
class HpoaFile:
    """``phenotype.hpoa``: the metadata header and one row per annotation."""

    version: str
    table: pd.DataFrame  # HPOA_COLUMNS as str, plus float column "frequency_value"
    first_line: int  # file line number of the table's first row (for error messages)


def _open_text(path: Path):
    try:
        return open(path, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None


def parse_hpoa(path: str | Path) -> HpoaFile:
    """Parse ``phenotype.hpoa`` (all 12 columns).

    Raises
    ------
    InputError
        Missing file, a header that is not the 12 published columns, a row with the
        wrong number of fields, a bad HPO id, qualifier, aspect, sex or frequency, or a
        file with no rows. The message names the line and column.
    """
    path = Path(path)
    version = ""
    header_line = 0
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if line.startswith("#"):
                if line.startswith("#version:"):
                    version = line.split(":", 1)[1].strip()
                continue
            cols = tuple(line.split("\t"))
            if cols != HPOA_COLUMNS:
                raise InputError(
                    f"wrong header: expected the 12 phenotype.hpoa columns "
                    f"({', '.join(HPOA_COLUMNS)}), got {', '.join(cols)[:120]}",
                    file=path, line=lineno,
                )
            header_line = lineno
            break
    if not header_line:
        raise InputError("no column header line (empty or truncated file)", file=path)
    table = _read_tsv(path, HPOA_COLUMNS, skip=header_line - 1)
    first_row = header_line + 1
    _check_values(table, "hpo_id", lambda v: bool(_HPO_ID.match(v)), path, first_row, "an HPO id HP:nnnnnnn")
    _check_values(table, "qualifier", QUALIFIERS.__contains__, path, first_row, "empty or NOT")
    _check_values(table, "aspect", ASPECTS.__contains__, path, first_row, "one of P, I, C, M, H")
    _check_values(table, "sex", SEXES.__contains__, path, first_row, "empty, MALE or FEMALE")
    _check_values(table, "database_id", lambda v: ":" in v, path, first_row, "a CURIE such as ORPHA:558")
    table["frequency_value"] = _frequencies(table["frequency"], path, first_row)
    return HpoaFile(version=version, table=table, first_line=first_row)


def _check_values(table: pd.DataFrame, column: str, ok, path: Path, first_row: int, expected: str) -> None:
    """Raise on the first row whose ``column`` fails ``ok`` (checked once per distinct value)."""
    # tolist converts the distinct values at once (iterating the Arrow array converts them one by one)
    bad = {v for v in table[column].unique().tolist() if not ok(v)}
    if bad:
        idx = int(np.flatnonzero(table[column].isin(bad).to_numpy())[0])
        raise InputError(
            f"{table[column].iat[idx]!r} is not {expected}", file=path, line=first_row + idx, field=column
        )


def _frequencies(column: pd.Series, path: Path, first_row: int) -> np.ndarray:
    """``parse_frequency`` of every row, parsed once per distinct value (a few thousand)."""
    codes, uniques = pd.factorize(column)
    numbers = np.empty(len(uniques), dtype=np.float64)
    for code, value in enumerate(uniques):
        try:
            numbers[code] = parse_frequency(value)
        except ValueError as exc:
            idx = int(np.flatnonzero(codes == code)[0])
            raise InputError(str(exc), file=path, line=first_row + idx, field="frequency") from None
    return numbers[codes]


def _read_tsv(path: Path, columns: tuple[str, ...], *, skip: int) -> pd.DataFrame:
    """Read a tab-separated table whose header is on line ``skip + 1`` (Arrow's CSV reader).

    Every field stays a string (no quoting: HPO files are unquoted). A row with too many
    or too few fields raises with its line number.
    """
    bad: list[pa_csv.InvalidRow] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    try:
        arrow = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(skip_rows=skip),
            parse_options=pa_csv.ParseOptions(
                delimiter="\t", quote_char=False, invalid_row_handler=on_invalid
            ),
            convert_options=pa_csv.ConvertOptions(
                # large_string: the type pandas keeps its strings in, so to_pandas copies nothing
                column_types={c: pa.large_string() for c in columns}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        raise InputError(f"not a readable tab-separated table ({exc})", file=path) from None
    if bad:
        row = bad[0]
        line = _find_line(path, row.text, skip) if row.number is None else row.number + skip
        raise InputError(
            f"expected {row.expected_columns} tab-separated fields, got {row.actual_columns} "
            "(truncated or malformed row)",
            file=path, line=line,
        )
    if arrow.num_rows == 0:
        raise InputError("no data rows (empty or truncated file)", file=path)
    return arrow.to_pandas()


def _find_line(path: Path, text: str, skip: int) -> int | None:
    """Line number of the first line equal to ``text`` (Arrow's threads lose row numbers)."""
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno > skip and raw.rstrip("\r\n") == text:
                return lineno
    return None


def _read_gene_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read one of the HPO gene tables and check its header and gene ids."""
    with _open_text(path) as fh:
        first = fh.readline().rstrip("\r\n")
    if tuple(first.split("\t")) != columns:
        raise InputError(
            f"wrong header: expected {', '.join(columns)}, got {first[:120]!r}", file=path, line=1
        )
    table = _read_tsv(path, columns, skip=0)
    _check_values(table, "ncbi_gene_id", str.isdigit, path, 2, "an NCBI gene number")
    return table


def parse_genes_to_phenotype(path: str | Path) -> pd.DataFrame:
    """Parse ``genes_to_phenotype.txt``; adds float column ``frequency_value``.

    Raises
    ------
    InputError
        Missing file, wrong header, a truncated row, a bad gene id or frequency.
    """
    path = Path(path)
    table = _read_gene_table(path, GENES_TO_PHENOTYPE_COLUMNS)
    table["frequency_value"] = _frequencies(table["frequency"], path, first_row=2)
    return table


def parse_phenotype_to_genes(path: str | Path) -> pd.DataFrame:
    """Parse ``phenotype_to_genes.txt`` (annotations propagated up the ontology).

    Raises
    ------
    InputError
        Missing file, wrong header, a truncated row or a bad gene id.
    """
    return _read_gene_table(Path(path), PHENOTYPE_TO_GENES_COLUMNS)
