"""FDA Adverse Event Reporting System (FAERS) quarterly ASCII extracts → drug–reaction signals.

Format (FDA's ``ASC_NTS`` notes that ship with every extract)
-------------------------------------------------------------
A quarter unzips to a folder (``faers_ascii_2019Q1/``, legacy ``aers_ascii_2011Q4/``) whose
``ascii/`` subfolder holds seven ``$``-delimited tables named ``<KIND>yyQq.txt`` (any case;
``DEMO18Q1_new.txt`` exists and wins over ``DEMO18Q1.txt``). The first line is the header;
there is no quoting, and lines end in LF or CRLF.

=======  ======================================================  ==========================
table    columns read here                                       one row per
=======  ======================================================  ==========================
DEMO     primaryid, caseid, caseversion, fda_dt                  report (case version)
DRUG     primaryid, role_cod, drugname, prod_ai (2014Q3+)        drug of a report
REAC     primaryid, pt (MedDRA preferred term, as text)          reaction of a report
OUTC     primaryid, outc_cod (``outc_code`` before 2014Q3)       outcome (not used here)
INDI     primaryid, indi_drug_seq, indi_pt                       indication (not used here)
THER     primaryid, dsg_drug_seq                                 therapy dates (not used here)
RPSR     primaryid, rpsr_cod                                     report source (not used here)
=======  ======================================================  ==========================

Three header variants are read by column *name*, never by position: 2014Q3 onwards;
2012Q4–2014Q2 (no ``auth_num``, ``lit_ref``, ``age_grp``, ``prod_ai``; ``gndr_cod`` for
``sex``, ``lot_nbr``, ``outc_code``); and legacy AERS before 2012Q4 (upper-case headers,
``ISR`` for ``primaryid``, ``CASE`` for ``caseid``, no ``caseversion``, ``DRUG_SEQ`` in
INDI/THER). Legacy data rows end with a ``$`` that the header lacks; a file is read either
way, but one file must be consistent. Since 2019Q1 a ``deleted/`` folder lists caseids FDA
removed (one per line, an optional header line); ``DELE*.txt`` files beside the tables are
read the same way.

Choices (each a place where the extract does not decide for us)
---------------------------------------------------------------
- **Reports.** One report per case: the DEMO row with the highest ``caseversion``, ties
  broken by the latest ``fda_dt`` and then the highest ``primaryid``. Legacy rows have no
  version and count as version 0, so a FAERS follow-up always supersedes a legacy ISR.
  Deleted caseids (from any folder given) are then removed. DRUG and REAC rows are joined to
  the kept DEMO row of *their own* folder, so a report repeated across quarters counts once.
- **Drugs.** Only suspect drugs (``role_cod`` PS or SS); a concomitant (C) or interacting (I)
  drug never makes a signal. ``drugname`` and ``prod_ai`` are upper-cased and
  whitespace-collapsed and looked up in a ``name → DrugBank`` table; a ``prod_ai`` naming
  several ingredients (``A\\B``) is also looked up part by part. A row whose names all miss is
  counted in :attr:`FaersResult.unmapped_drugs` (by ``drugname``) and left out of the tables.
- **Reactions.** PT text is case-folded and whitespace-collapsed, then mapped to HPO by the
  caller's table; an unmapped PT becomes the node ``MEDDRA:<pt text>`` (e.g.
  ``MEDDRA:drug ineffective``). The extracts carry no MedDRA codes, so the text *is* the
  identifier; lower case makes legacy (upper-case) and current spellings one node.
- **Counting.** N is the number of kept reports with at least one reaction. Each report
  counts a (drug, reaction) pair once however many rows repeat it.

Statistics: see :func:`contingency_statistics`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from scipy.stats import gamma

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
SUSPECT_ROLES = frozenset({"PS", "SS"})
SIGNAL_COLUMNS = ("drug", "reaction", "a", "b", "c", "d", "prr", "chi2", "ror", "ror_low",
                  "ror_high", "ic", "ic025")

_TABLE_FILE = re.compile(r"^(DEMO|DRUG|REAC|OUTC|INDI|THER|RPSR)\d{2}Q[1-4](_NEW)?\.TXT$", re.I)
_DELETED_FILE = re.compile(r"^DELE.*\.TXT$", re.I)
_DRUGBANK = re.compile(r"^(?:DRUGBANK:)?(DB\d{5})$")
_HPO_ID = re.compile(r"^HP:\d{7}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRAILING = "\x00trailing"  # name of the empty field after a row-terminating '$'


@dataclass(frozen=True, slots=True)
class SignalThresholds:
    """Which (drug, reaction) pairs are kept: all three must hold (Evans et al. 2001)."""

    prr: float = 2.0  # minimum PRR; 2 is Evans' criterion
    chi2: float = 4.0  # minimum Yates χ² (1 df); 4 ≈ p < 0.05
    n: int = 3  # minimum reports with both drug and reaction (cell a)

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be an integer ≥ 1, got {self.n!r}")
        for name in ("prr", "chi2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number ≥ 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class FaersCounts:
    """What happened to the reports, for the build report."""

    reports_read: int  # DEMO rows in all folders
    reports_deduplicated: int  # after keeping the latest version of each case
    reports_after_deletion: int  # after removing deleted caseids
    deleted_caseids: int  # distinct caseids listed as deleted
    reports_with_reactions: int  # N of the 2×2 tables
    suspect_drug_rows: int  # PS/SS rows of the kept reports
    unmapped_drug_rows: int  # of those, rows with no DrugBank id
    pairs_tested: int  # distinct (drug, reaction) pairs with a ≥ 1
    signals_kept: int


@dataclass(frozen=True, slots=True)
class FaersResult:
    """Signals (:data:`SIGNAL_COLUMNS`, one row per kept pair) and the counts behind them."""

    signals: pd.DataFrame
    counts: FaersCounts
    unmapped_drugs: dict[str, int] = field(default_factory=dict)  # drugname → suspect rows
    unmapped_pts: dict[str, int] = field(default_factory=dict)  # pt (MEDDRA node) → reports

    def summary(self) -> dict:
        """JSON-ready counts plus the 20 most frequent unmapped drug names and PTs."""
        return {**asdict(self.counts), "unmapped_drug_names": len(self.unmapped_drugs),
                "unmapped_pt_terms": len(self.unmapped_pts),
                "top_unmapped_drugs": dict(list(self.unmapped_drugs.items())[:20]),
                "top_unmapped_pts": dict(list(self.unmapped_pts.items())[:20])}


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


# -- mappings ---------------------------------------------------------------------------------


def normalise_drug_name(name: str) -> str:
    """Upper case, control characters to spaces, runs of whitespace to one space."""
    return " ".join(_CONTROL.sub(" ", name).split()).upper()


def normalise_pt(pt: str) -> str:
    """Case-folded, whitespace-collapsed PT text (the key of the HPO map and MEDDRA nodes)."""
    return " ".join(_CONTROL.sub(" ", pt).split()).casefold()


def _read_tsv(path: Path, columns: tuple[str, str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable tab-separated table ({exc})", file=path) from None
    for col in columns:
        if col not in table.columns:
            raise InputError(f"missing column {col!r}: expected a header {chr(9).join(columns)!r}",
                             file=path, line=1, field=col)
    return table


def load_drug_map(source: pd.DataFrame | str | Path) -> pd.DataFrame:
    """Normalised name → ``DRUGBANK:DBnnnnn`` (columns ``name``, ``drug``; a name may map to several).

    ``source`` is a table or a TSV with columns ``name`` and ``drugbank_id`` (``DB00419`` or
    ``DRUGBANK:DB00419``).

    Raises
    ------
    InputError
        Missing file or column, an empty name, or an id that is not a DrugBank accession.
    """
    path = None if isinstance(source, pd.DataFrame) else Path(source)
    table = source if path is None else _read_tsv(path, ("name", "drugbank_id"))
    for col in ("name", "drugbank_id"):
        if col not in table.columns:
            raise InputError(f"drug map has no column {col!r}", file=path, line=1, field=col)
    names = table["name"].astype(str).map(normalise_drug_name)
    ids = table["drugbank_id"].astype(str).str.strip().str.extract(_DRUGBANK, expand=False)
    for col, bad in (("name", names == ""), ("drugbank_id", ids.isna())):
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            what = "a drug name" if col == "name" else "a DrugBank id DBnnnnn"
            raise InputError(f"{table[col].iloc[i]!r} is not {what}",
                             file=path, line=None if path is None else i + 2, field=col)
    return pd.DataFrame({"name": names, "drug": "DRUGBANK:" + ids}).drop_duplicates(ignore_index=True)


def load_pt_map(source: Mapping[str, str] | str | Path | None) -> dict[str, str]:
    """Normalised PT → HPO id, from a dict (e.g. from hp.obo MedDRA xrefs) or a TSV ``pt, hpo_id``.

    Raises
    ------
    InputError
        Missing file or column, a bad HPO id, or one PT mapped to two HPO terms.
    """
    if source is None:
        return {}
    path = None if isinstance(source, Mapping) else Path(source)
    if path is None:
        pairs = [(k, v, None) for k, v in source.items()]
    else:
        table = _read_tsv(path, ("pt", "hpo_id"))
        pairs = [(k, v, i + 2) for i, (k, v) in enumerate(zip(table["pt"], table["hpo_id"]))]
    out: dict[str, str] = {}
    for pt, hpo, line in pairs:
        key, hpo = normalise_pt(str(pt)), str(hpo).strip()
        if not _HPO_ID.match(hpo):
            raise InputError(f"{hpo!r} for PT {pt!r} is not an HPO id HP:nnnnnnn",
                             file=path, line=line, field="hpo_id")
        if out.get(key, hpo) != hpo:
            raise InputError(f"PT {pt!r} maps to both {out[key]} and {hpo}",
                             file=path, line=line, field="pt")
        out[key] = hpo
    return out


# -- statistics -------------------------------------------------------------------------------


def contingency_statistics(a: npt.ArrayLike, b: npt.ArrayLike, c: npt.ArrayLike,
                           d: npt.ArrayLike) -> pd.DataFrame:
    """PRR, Yates χ², ROR with its 95 % CI, and the shrunk IC with IC025 for 2×2 tables.

    ============  =================================================================
    symbol        meaning (counts of reports)
    ============  =================================================================
    a             drug and reaction        b   drug, not reaction
    c             reaction, not drug       d   neither;  N = a + b + c + d
    E             expected a = (a + b)(a + c) / N
    ============  =================================================================

    1. PRR = [a / (a + b)] / [c / (c + d)]  (Evans, Waller & Davis 2001, PDS 10:483).
    2. χ² = N (max(|ad − bc| − N/2, 0))² / [(a + b)(c + d)(a + c)(b + d)], Yates-corrected,
       1 df; the ``max`` stops the correction from overshooting when |ad − bc| < N/2.
    3. ROR = ad / bc, 95 % CI exp(ln ROR ± 1.96 √(1/a + 1/b + 1/c + 1/d)) (Woolf 1955;
       van Puijenbroek et al. 2002, PDS 11:3).
    4. IC = log2((a + 0.5) / (E + 0.5)); IC025 = log2 of the 2.5 % quantile of
       Gamma(shape a + 0.5, rate E + 0.5), the posterior of the observed-to-expected ratio
       under the +0.5 shrinkage (Norén, Hopstadius & Bate 2013, SMMR 22:57; the shrinkage
       of Norén et al. 2006, Stat Med 25:3740).

    Zero cells never raise: c = 0 gives PRR = inf; b·c = 0 gives ROR = inf (NaN when a·d
    = 0 too) and a NaN CI, since Woolf's standard error is infinite; a zero margin gives
    NaN χ². NaN never passes a threshold.

    Parameters
    ----------
    a, b, c, d
        Non-negative counts, scalars or equal-length arrays.

    Returns
    -------
    pandas.DataFrame
        Float columns ``prr, chi2, ror, ror_low, ror_high, ic, ic025``.
    """
    a, b, c, d = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (a, b, c, d))
    n = a + b + c + d
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        prr = (a / (a + b)) / (c / (c + d))
        margins = (a + b) * (c + d) * (a + c) * (b + d)
        excess = np.maximum(np.abs(a * d - b * c) - n / 2.0, 0.0)
        chi2 = np.where(margins > 0, n * excess**2 / np.where(margins > 0, margins, 1.0), np.nan)
        ror = (a * d) / (b * c)
        any_zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
        half_width = 1.96 * np.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
        ror_low = np.where(any_zero, np.nan, np.exp(np.log(ror) - half_width))
        ror_high = np.where(any_zero, np.nan, np.exp(np.log(ror) + half_width))
        expected = np.where(n > 0, (a + b) * (a + c) / np.where(n > 0, n, 1.0), np.nan)
        ic = np.log2((a + 0.5) / (expected + 0.5))
        ic025 = np.log2(gamma.ppf(0.025, a + 0.5, scale=1.0 / (expected + 0.5)))
    return pd.DataFrame({"prr": prr, "chi2": chi2, "ror": ror, "ror_low": ror_low,
                         "ror_high": ror_high, "ic": ic, "ic025": ic025})


def disproportionality(report_drugs: pd.DataFrame, report_reactions: pd.DataFrame, *,
                       n_reports: int, min_a: int = 1) -> pd.DataFrame:
    """2×2 tables and statistics for every (drug, reaction) pair seen together ``min_a``+ times.

    Parameters
    ----------
    report_drugs
        Columns ``report`` and ``drug``; repeats count once.
    report_reactions
        Columns ``report`` and ``reaction``; repeats count once.
    n_reports
        N, the number of reports in the database (at least every report named above).
    min_a
        Pairs with fewer reports in cell a are not computed.

    Returns
    -------
    pandas.DataFrame
        :data:`SIGNAL_COLUMNS`, sorted by drug then reaction.
    """
    rd = report_drugs[["report", "drug"]].drop_duplicates()
    rr = report_reactions[["report", "reaction"]].drop_duplicates()
    seen = pd.concat([rd["report"], rr["report"]]).nunique()
    if n_reports < seen:
        raise ValueError(f"n_reports={n_reports} is below the {seen} distinct reports given")
    if rd.empty or rr.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("drug", "reaction") else
                                          np.int64 if c in "abcd" else np.float64)
                             for c in SIGNAL_COLUMNS})
    # Integer codes keep the report × drug × reaction join small on a full FAERS build.
    drug_code, drugs = pd.factorize(rd["drug"], sort=True)
    reaction_code, reactions = pd.factorize(rr["reaction"], sort=True)
    pairs = pd.DataFrame({"report": rd["report"].to_numpy(), "i": drug_code}).merge(
        pd.DataFrame({"report": rr["report"].to_numpy(), "j": reaction_code}), on="report")
    key, a = np.unique(pairs["i"].to_numpy(np.int64) * len(reactions) + pairs["j"].to_numpy(np.int64),
                       return_counts=True)
    key, a = key[a >= min_a], a[a >= min_a]
    i, j = np.divmod(key, len(reactions))
    b = np.bincount(drug_code, minlength=len(drugs))[i] - a
    c = np.bincount(reaction_code, minlength=len(reactions))[j] - a
    cells = pd.DataFrame({"drug": np.asarray(drugs, dtype=object)[i],
                          "reaction": np.asarray(reactions, dtype=object)[j],
                          "a": a, "b": b, "c": c, "d": n_reports - a - b - c})
    cells = cells.astype({k: np.int64 for k in "abcd"})
    stats = contingency_statistics(cells["a"], cells["b"], cells["c"], cells["d"])
    return pd.concat([cells, stats], axis=1)[list(SIGNAL_COLUMNS)]


# -- the whole pipeline -----------------------------------------------------------------------


def deduplicate_reports(demo: pd.DataFrame) -> pd.DataFrame:
    """Keep one DEMO row per ``caseid``: highest caseversion, then latest fda_dt, then primaryid.

    ``demo`` has string columns ``caseid, caseversion (digits), fda_dt (YYYYMMDD),
    primaryid``; the index of the kept rows is preserved.
    """
    key = demo.assign(_v=demo["caseversion"].astype(np.int64),
                      _p=demo["primaryid"].str.zfill(20))  # numeric order without int overflow
    key = key.sort_values(["caseid", "_v", "fda_dt", "_p"], kind="stable")
    return demo.loc[key.drop_duplicates("caseid", keep="last").index]


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


def _drug_ids(drugs: pd.DataFrame, drug_map: pd.DataFrame) -> pd.DataFrame:
    """(row, drug) for every DrugBank id that a row's drugname or prod_ai (or its parts) names."""
    lookup = drug_map.groupby("name")["drug"].agg(tuple).to_dict()
    names = pd.concat([
        pd.DataFrame({"row": drugs.index, "name": drugs["drugname"]}),
        pd.DataFrame({"row": drugs.index, "name": drugs["prod_ai"]}),
        pd.DataFrame({"row": drugs.index, "name": drugs["prod_ai"].str.split("\\")}).explode("name"),
    ]).dropna()
    unique = pd.Series(names["name"].unique())
    normal = dict(zip(unique, unique.map(normalise_drug_name)))
    names["drug"] = names["name"].map(normal).map(lookup)
    return names.dropna(subset=["drug"]).explode("drug")[["row", "drug"]].drop_duplicates()


def read_faers(
    directories: Sequence[str | Path],
    *,
    drug_map: pd.DataFrame | str | Path,
    pt_to_hpo: Mapping[str, str] | str | Path | None = None,
    thresholds: SignalThresholds = SignalThresholds(),
) -> FaersResult:
    """Read FAERS/AERS quarters and detect drug → reaction signals by disproportionality.

    Parameters
    ----------
    directories
        Quarter folders (each holding the tables, or an ``ascii/`` subfolder with them).
    drug_map
        Name → DrugBank table or TSV (see :func:`load_drug_map`).
    pt_to_hpo
        PT → HPO id, a dict keyed by lower-case PT text or a TSV ``pt, hpo_id`` (see
        :func:`load_pt_map`); None maps every PT to a ``MEDDRA:`` node.
    thresholds
        Which pairs are kept as signals.

    Returns
    -------
    FaersResult
        Signals and counts; see the module docstring for the counting rules.

    Raises
    ------
    InputError
        A missing folder or table, a bad header, delimiter or row, a non-numeric
        caseversion, or a bad mapping table; the message names the file and line.
    """
    if not directories:
        raise ValueError("no quarter folders given")
    drugs_by_name = load_drug_map(drug_map)
    hpo = load_pt_map(pt_to_hpo)
    quarters = [find_quarter_files(d) for d in directories]

    # 1. Reports: the latest version of each case, then without deleted cases.
    demo = pd.concat([_read_demo(q.tables["DEMO"]).assign(q=i) for i, q in enumerate(quarters)],
                     ignore_index=True)
    latest = deduplicate_reports(demo)
    deleted = set().union(*(read_deleted_caseids(p) for q in quarters for p in q.deleted))
    kept = latest[~latest["caseid"].isin(deleted)].reset_index(drop=True)
    kept["report"] = np.arange(len(kept), dtype=np.int64)

    # 2. Suspect drugs and reactions of the kept reports, joined within their own quarter.
    drugs, reactions = [], []
    for i, q in enumerate(quarters):
        keys = kept.loc[kept["q"] == i, ["primaryid", "report"]]
        drug = read_faers_table(q.tables["DRUG"], "DRUG",
                                columns=["primaryid", "role_cod", "drugname", "prod_ai"])
        drug = drug[drug["role_cod"].str.upper().isin(SUSPECT_ROLES)]
        drugs.append(drug.merge(keys, on="primaryid")[["report", "drugname", "prod_ai"]])
        reac = read_faers_table(q.tables["REAC"], "REAC")
        reac = reac[reac["pt"] != ""].merge(keys, on="primaryid")
        reactions.append(reac[["report", "pt"]])
    drug = pd.concat(drugs, ignore_index=True)
    reac = pd.concat(reactions, ignore_index=True)

    # 3. Map drug names to DrugBank and PTs to HPO (or MEDDRA:<text>).
    ids = _drug_ids(drug, drugs_by_name)
    unmapped = drug.loc[~drug.index.isin(ids["row"]), "drugname"].map(normalise_drug_name)
    report_drugs = pd.DataFrame({"report": drug.loc[ids["row"], "report"].to_numpy(),
                                 "drug": ids["drug"].to_numpy()})
    pt_keys = {pt: normalise_pt(pt) for pt in reac["pt"].unique()}
    node = {pt: hpo.get(key, f"MEDDRA:{key}") for pt, key in pt_keys.items()}
    reaction = reac["pt"].map(node)
    report_reactions = pd.DataFrame({"report": reac["report"], "reaction": reaction})
    unmapped_pts = report_reactions.loc[reaction.str.startswith("MEDDRA:")].drop_duplicates()

    # 4. 2×2 tables over reports with at least one reaction; keep pairs passing all thresholds.
    n_reports = int(report_reactions["report"].nunique())
    report_drugs = report_drugs[report_drugs["report"].isin(report_reactions["report"])]
    tables = disproportionality(report_drugs, report_reactions, n_reports=n_reports, min_a=1)
    keep = ((tables["a"] >= thresholds.n) & (tables["prr"] >= thresholds.prr)
            & (tables["chi2"] >= thresholds.chi2))  # NaN PRR or χ² never passes
    signals = tables[keep].reset_index(drop=True)

    counts = FaersCounts(
        reports_read=len(demo), reports_deduplicated=len(latest), reports_after_deletion=len(kept),
        deleted_caseids=len(deleted), reports_with_reactions=n_reports,
        suspect_drug_rows=len(drug), unmapped_drug_rows=len(unmapped),
        pairs_tested=len(tables), signals_kept=len(signals),
    )
    return FaersResult(
        signals=signals, counts=counts,
        unmapped_drugs=_by_count(unmapped),
        unmapped_pts=_by_count(unmapped_pts["reaction"].str.removeprefix("MEDDRA:")),
    )


def _by_count(values: pd.Series) -> dict[str, int]:
    """Value → count, most frequent first, ties alphabetical."""
    counts = values.value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {str(k): int(v) for k, v in order}

