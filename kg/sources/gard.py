"""Parser for the GARD tables (NIH/NCATS Genetic and Rare Diseases Information Center), as
exported for the NCATS Rare Disease Alert System (files ``GARD.csv``, ``GARD_xrefs.csv``,
``GARD_genes.csv``).

Three tables, each comma- or tab-separated: the delimiter is the one the header line uses
when it holds only one of the two, otherwise the extension decides (``.tsv``/``.tab`` → tab,
anything else → comma). Comma-separated files may quote fields with ``"``; tab-separated
ones are read unquoted. Tables are told apart by their header, so the file names do not
matter; any other table in the folder (phenotypes, classification) is listed as ignored.

================  ===============================================================
table             required columns (extra columns are ignored)
================  ===============================================================
diseases          ``GardID, ClassificationLevel, DisorderType, Name, Synonym``
                  (``GardName`` is read as ``Name``, ``Synonyms`` as ``Synonym``)
cross-references  ``GardID, XrefSource, SourceID, MapRelationship``
genes             ``GardID, GeneSymbol``; optional ``GeneIdentifier`` (``HGNC:n``),
                  ``GeneID`` (NCBI Gene number), ``AssociationType``,
                  ``AssociationStatus``, ``DataSource``
================  ===============================================================

``GardID`` is ``GARD:0000001`` (7 digits); a plain ``1`` or ``0000001`` is padded to it.

``Synonym`` holds several synonyms: when the field contains ``|`` it is split on ``|``
only (a ``;`` then belongs to a synonym), otherwise on ``;``. Synonyms are stripped;
empty ones and repeats within a disease are dropped.

``XrefSource`` is matched ignoring case and punctuation (``ICD-10`` = ``ICD10``,
``SNOMED-CT`` = ``SNOMEDCT``, ``Orphanet`` = ``ORPHANET``); :data:`XREF_RULES` gives the
CURIE of each (``ORPHANET 558`` → ``ORPHA:558``, ``MONDO 7947`` → ``MONDO:0007947``,
``ICD-10 J17.1*`` → ``ICD10:J17.1``: the dagger/asterisk marks are dropped).
``MapRelationship`` becomes ``match``, read as how the cross-reference relates to the GARD
disease (SKOS ``*Match`` sense):

===================================================  =========  =============================
``MapRelationship``                                  ``match``  meaning
===================================================  =========  =============================
``Exact``, ``E``                                     exact      same concept
``NTBT`` (narrower term → broader term), ``Broader``  broad      the xref is broader than GARD
``BTNT`` (broader term → narrower term), ``Narrower`` narrow     the xref is narrower
``Related``, ``Close``                               related    related, neither wider
``Wrong``, ``W``                                     wrong      flagged as a wrong mapping
``NA``, ``ND …`` (not decided), empty                unknown    not assessed
===================================================  =========  =============================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from shared.errors import InputError

DISEASE_COLUMNS = ("GardID", "ClassificationLevel", "DisorderType", "Name", "Synonym")
XREF_COLUMNS = ("GardID", "XrefSource", "SourceID", "MapRelationship")
GENE_COLUMNS = ("GardID", "GeneSymbol")
GENE_OPTIONAL = ("GeneIdentifier", "GeneID", "AssociationType", "AssociationStatus", "DataSource")
_ALIASES = {"GardName": "Name", "Synonyms": "Synonym"}
_GARD_ID = r"(?:GARD:)?(\d{1,7})"


@dataclass(frozen=True, slots=True)
class XrefRule:
    """How one cross-reference source spells its ids and which CURIE they become."""

    prefix: str
    pattern: str  # full match; group 1 is the local id
    pad: int  # zero-pad the local id to this many digits (0: as given)


#: normalised XrefSource (upper case, letters and digits only) → CURIE rule.
XREF_RULES: dict[str, XrefRule] = {
    "ORPHANET": XrefRule("ORPHA", r"(?:ORPHA(?:NET)?[:_])?(\d+)", 0),
    "OMIM": XrefRule("OMIM", r"(?:OMIM:|MIM:)?((?:PS)?\d{6})", 0),
    "MONDO": XrefRule("MONDO", r"(?:MONDO[:_])?(\d{1,7})", 7),
    "UMLS": XrefRule("UMLS", r"(?:UMLS:)?(C\d{7})", 0),
    "ICD10": XrefRule("ICD10", r"(?:ICD10:)?([A-Z]\d{2}(?:\.\d{1,2})?(?:-[A-Z]\d{2}(?:\.\d{1,2})?)?)[*+]?", 0),
    "ICD10CM": XrefRule("ICD10CM", r"(?:ICD10CM:)?([A-Z]\d{2}(?:\.[0-9A-Z]{1,4})?)", 0),
    "ICD11": XrefRule("ICD11", r"(?:ICD11:)?([0-9A-Z]{4}(?:\.[0-9A-Z]{1,4})?)", 0),
    "MESH": XrefRule("MESH", r"(?:MESH:)?([CD]\d{6,9})", 0),
    "SNOMEDCT": XrefRule("SNOMEDCT", r"(?:SNOMEDCT(?:_US)?:)?(\d{6,18})", 0),
    "NCIT": XrefRule("NCIT", r"(?:NCIT:)?(C\d+)", 0),
    "MEDDRA": XrefRule("MEDDRA", r"(?:MEDDRA:)?(\d{8})", 0),
    "DOID": XrefRule("DOID", r"(?:DOID:)?(\d+)", 0),
    "GENETICALLIANCE": XrefRule("GENETICALLIANCE", r"(\d+)", 0),
    "GHR": XrefRule("GHR", r"(\S+)", 0),
}
_SOURCE_ALIASES = {"ORPHA": "ORPHANET", "DISEASEONTOLOGY": "DOID", "GENETICSHOMEREFERENCE": "GHR",
                   "NCITHESAURUS": "NCIT", "SNOMED": "SNOMEDCT", "ICD10CMCODE": "ICD10CM"}

#: MapRelationship (upper case) → match.
MATCHES: dict[str, str] = {
    "EXACT": "exact", "E": "exact",
    "NTBT": "broad", "BROADER": "broad",
    "BTNT": "narrow", "NARROWER": "narrow",
    "RELATED": "related", "CLOSE": "related",
    "WRONG": "wrong", "W": "wrong",
    "NA": "unknown", "ND": "unknown", "": "unknown",
}


@dataclass(frozen=True, slots=True)
class GardRelease:
    """The parsed GARD tables; every frame has a ``line`` column (file line of its row).

    diseases: gard_id, name, classification_level, disorder_type (as published)
    synonyms: gard_id, synonym (one row per synonym, in file order)
    xrefs: gard_id, xref (CURIE), source (key of :data:`XREF_RULES`), source_id and
    map_relationship (as published), match (see the module docstring)
    genes: gard_id, gene_symbol, hgnc_id (``HGNC:n`` or ""), ncbi_gene_id (``NCBIGene:n``
    or ""), association_type, association_status, data_source ("" where not given)
    """

    diseases: pd.DataFrame
    synonyms: pd.DataFrame
    xrefs: pd.DataFrame
    genes: pd.DataFrame
    files: dict[str, Path]  # "diseases" / "xrefs" / "genes" → file read
    ignored: tuple[Path, ...]  # other tables in the folder


def read_gard(directory: str | Path) -> GardRelease:
    """Find and parse the GARD disease, cross-reference and gene tables of a folder.

    Parameters
    ----------
    directory
        Folder holding the tables (``.csv``, ``.tsv``, ``.tab`` or ``.txt``), recognised by
        their header. The disease table is required; the other two may be absent (empty
        frames).

    Returns
    -------
    GardRelease
        The four frames, the file read for each table and the tables left aside.

    Raises
    ------
    InputError
        No disease table, two tables of one kind, or any error of :func:`parse_gard_diseases`,
        :func:`parse_gard_xrefs`, :func:`parse_gard_genes`; cross-references or genes for a
        GardID that the disease table lacks.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("GARD folder not found", file=directory)
    files: dict[str, Path] = {}
    ignored: list[Path] = []
    for path in sorted(p for p in directory.iterdir() if p.suffix.lower() in (".csv", ".tsv", ".tab", ".txt")):
        columns, _ = _header(path)
        kind = _kind(columns)
        if kind is None:
            ignored.append(path)
            continue
        if kind in files:
            raise InputError(f"a second GARD {kind} table (the first is {files[kind].name})", file=path, line=1)
        files[kind] = path
    if "diseases" not in files:
        raise InputError(f"no GARD disease table (header with {', '.join(DISEASE_COLUMNS)})", file=directory)
    diseases, synonyms = parse_gard_diseases(files["diseases"])
    xrefs = parse_gard_xrefs(files["xrefs"]) if "xrefs" in files else _empty(_XREF_OUT)
    genes = parse_gard_genes(files["genes"]) if "genes" in files else _empty(_GENE_OUT)
    known = set(diseases["gard_id"])
    for kind, frame in (("xrefs", xrefs), ("genes", genes)):
        unknown = ~frame["gard_id"].isin(known)
        if unknown.any():
            row = frame[unknown].iloc[0]
            raise InputError(f"{row['gard_id']} is not in the disease table {files['diseases'].name}",
                             file=files[kind], line=int(row["line"]), field="GardID")
    return GardRelease(diseases=diseases, synonyms=synonyms, xrefs=xrefs, genes=genes, files=files,
                       ignored=tuple(ignored))


def parse_gard_diseases(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse the GARD disease list into (diseases, synonyms).

    Parameters
    ----------
    path
        The disease table (columns :data:`DISEASE_COLUMNS`).

    Returns
    -------
    tuple of DataFrame
        ``diseases`` and ``synonyms`` as described on :class:`GardRelease`.

    Raises
    ------
    InputError
        Missing file, a header without the required columns, a truncated row, a GardID
        that is not ``GARD:nnnnnnn`` or a number, a GardID listed twice, an empty name.
    """
    path = Path(path)
    t = _read(path, DISEASE_COLUMNS)
    gard = _gard_ids(t, path)
    repeated = gard.duplicated().to_numpy()
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        raise InputError(f"{gard.iat[i]} is listed twice", file=path, line=int(t["line"].iat[i]), field="GardID")
    name = t["Name"].str.strip()
    _fail_first(name == "", t, path, "Name", "empty disease name")
    diseases = pd.DataFrame({
        "gard_id": gard, "name": name, "classification_level": t["ClassificationLevel"].str.strip(),
        "disorder_type": t["DisorderType"].str.strip(), "line": t["line"],
    })
    syn = t["Synonym"]
    piped = syn.str.contains("|", regex=False)
    parts = pd.concat([syn[piped].str.split("|", regex=False), syn[~piped].str.split(";", regex=False)]).sort_index()
    exploded = parts.explode()
    synonyms = pd.DataFrame({"gard_id": gard.loc[exploded.index], "synonym": exploded.str.strip(),
                             "line": t["line"].loc[exploded.index]})
    synonyms = synonyms[synonyms["synonym"] != ""].drop_duplicates(["gard_id", "synonym"]).reset_index(drop=True)
    return diseases.reset_index(drop=True), synonyms


def parse_gard_xrefs(path: str | Path) -> pd.DataFrame:
    """Parse the GARD cross-reference table into CURIEs (see :data:`XREF_RULES`).

    Parameters
    ----------
    path
        The cross-reference table (columns :data:`XREF_COLUMNS`).

    Returns
    -------
    DataFrame
        ``xrefs`` as described on :class:`GardRelease`.

    Raises
    ------
    InputError
        Missing file, wrong header, truncated row, a bad GardID, an XrefSource not in
        :data:`XREF_RULES`, a SourceID that does not fit its source, a MapRelationship not
        in :data:`MATCHES`. Verbatim repeats of a row are dropped.
    """
    path = Path(path)
    t = _read(path, XREF_COLUMNS)
    gard = _gard_ids(t, path)
    key = t["XrefSource"].str.upper().str.replace(r"[^0-9A-Z]", "", regex=True)
    key = key.replace(_SOURCE_ALIASES)
    unknown = ~key.isin(list(XREF_RULES))
    _fail_first(unknown, t, path, "XrefSource",
                lambda v: f"unknown XrefSource {v!r}; known: {', '.join(XREF_RULES)}")
    source_id = t["SourceID"].str.strip()
    xref = pd.Series("", index=t.index, dtype=object)
    for name, rule in XREF_RULES.items():
        sel = key == name
        if not sel.any():
            continue
        local = source_id[sel].str.extract(f"^{rule.pattern}$", flags=re.IGNORECASE)[0]
        failed = pd.Series(False, index=t.index)
        failed[sel] = local.isna()
        _fail_first(failed, t, path, "SourceID", lambda v, n=name: f"{v!r} is not a valid {n} identifier")
        if rule.pad:
            local = local.str.zfill(rule.pad)
        xref[sel] = rule.prefix + ":" + (local if name == "GHR" else local.str.upper())
    relation = t["MapRelationship"].str.strip().str.upper()
    relation = relation.where(~relation.str.startswith("ND"), "ND")
    _fail_first(~relation.isin(list(MATCHES)), t, path, "MapRelationship",
                lambda v: f"unknown MapRelationship {v!r}; known: Exact, NTBT, BTNT, Broader, Narrower, Related, "
                          "Wrong, NA, ND")
    out = pd.DataFrame({
        "gard_id": gard, "xref": xref.astype(str), "source": key, "source_id": source_id,
        "map_relationship": t["MapRelationship"].str.strip(), "match": relation.map(MATCHES), "line": t["line"],
    })
    return out.drop_duplicates([c for c in out.columns if c != "line"]).reset_index(drop=True)


def parse_gard_genes(path: str | Path) -> pd.DataFrame:
    """Parse the GARD gene table (one row per disease–gene association).

    Parameters
    ----------
    path
        The gene table (columns :data:`GENE_COLUMNS`, optionally :data:`GENE_OPTIONAL`).

    Returns
    -------
    DataFrame
        ``genes`` as described on :class:`GardRelease`.

    Raises
    ------
    InputError
        Missing file, wrong header, truncated row, a bad GardID, an empty GeneSymbol, a
        GeneIdentifier that is not ``HGNC:n``, a GeneID that is not a number.
    """
    path = Path(path)
    t = _read(path, GENE_COLUMNS, optional=GENE_OPTIONAL)
    gard = _gard_ids(t, path)
    symbol = t["GeneSymbol"].str.strip()
    _fail_first(symbol == "", t, path, "GeneSymbol", "empty gene symbol")
    hgnc = t["GeneIdentifier"].str.strip().str.upper()
    _fail_first((hgnc != "") & ~hgnc.str.fullmatch(r"HGNC:\d+"), t, path, "GeneIdentifier",
                lambda v: f"{v!r} is not an HGNC id HGNC:n")
    ncbi = t["GeneID"].str.strip().str.removeprefix("NCBIGene:")
    _fail_first((ncbi != "") & ~ncbi.str.fullmatch(r"\d+"), t, path, "GeneID",
                lambda v: f"{v!r} is not an NCBI Gene number")
    return pd.DataFrame({
        "gard_id": gard, "gene_symbol": symbol, "hgnc_id": hgnc,
        "ncbi_gene_id": ncbi.where(ncbi == "", "NCBIGene:" + ncbi),
        "association_type": t["AssociationType"].str.strip(),
        "association_status": t["AssociationStatus"].str.strip(),
        "data_source": t["DataSource"].str.strip(), "line": t["line"],
    }).reset_index(drop=True)


# --------------------------------------------------------------------------- helpers

_XREF_OUT = ("gard_id", "xref", "source", "source_id", "map_relationship", "match", "line")
_GENE_OUT = ("gard_id", "gene_symbol", "hgnc_id", "ncbi_gene_id", "association_type", "association_status",
             "data_source", "line")


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.int64 if c == "line" else str) for c in columns})


def _header(path: Path) -> tuple[list[str], str]:
    """Column names (aliases resolved) and the delimiter, from the extension and header line."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            first = fh.readline().rstrip("\r\n")
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    if ("\t" in first) != ("," in first):  # the header uses exactly one of the two
        delimiter = "\t" if "\t" in first else ","
    else:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    names = [c.strip().strip('"').strip() for c in first.split(delimiter)]
    return [_ALIASES.get(c, c) for c in names], delimiter


def _kind(columns: list[str]) -> str | None:
    have = set(columns)
    if set(XREF_COLUMNS) <= have:
        return "xrefs"
    if set(GENE_COLUMNS) <= have:
        return "genes"
    if "GardID" in have and "Name" in have:
        return "diseases"
    return None


def _read(path: Path, required: tuple[str, ...], *, optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """The required and optional columns as strings (absent optional ones: ""), plus ``line``.

    ``line`` is the row's file line (header = 1), assuming no quoted field spans lines.
    """
    columns, delimiter = _header(path)
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(f"wrong header: missing column(s) {', '.join(missing)}; expected {', '.join(required)}",
                         file=path, line=1)
    bad: list[pa_csv.InvalidRow] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    wanted = [c for c in (*required, *optional) if c in columns]
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=columns, skip_rows=1, use_threads=False),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char='"' if delimiter == "," else False,
                                              invalid_row_handler=on_invalid),
            convert_options=pa_csv.ConvertOptions(include_columns=wanted,
                                                  column_types={c: pa.string() for c in wanted},
                                                  strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        raise InputError(f"not a readable table ({exc})", file=path) from None
    if bad:
        row = bad[0]
        raise InputError(f"expected {row.expected_columns} fields, got {row.actual_columns} "
                         "(truncated or malformed row)", file=path, line=row.number)
    if table.num_rows == 0:
        raise InputError("no data rows (empty or truncated file)", file=path)
    frame = table.to_pandas().astype(object)
    for c in optional:
        if c not in frame:
            frame[c] = ""
    frame["line"] = np.arange(len(frame), dtype=np.int64) + 2
    return frame


def _gard_ids(t: pd.DataFrame, path: Path) -> pd.Series:
    number = t["GardID"].str.strip().str.extract(f"^{_GARD_ID}$", flags=re.IGNORECASE)[0]
    _fail_first(number.isna(), t, path, "GardID", lambda v: f"{v!r} is not a GARD id GARD:nnnnnnn or a number")
    return "GARD:" + number.str.zfill(7)


def _fail_first(bad: pd.Series, t: pd.DataFrame, path: Path, column: str, problem) -> None:
    """Raise InputError for the first row where ``bad`` holds (``problem``: text or value → text)."""
    hits = np.flatnonzero(bad.fillna(False).to_numpy(dtype=bool))
    if len(hits):
        i = int(hits[0])
        text = problem(t[column].iat[i]) if callable(problem) else problem
        raise InputError(text, file=path, line=int(t["line"].iat[i]), field=column)
