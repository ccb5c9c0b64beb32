"""Streaming parsers for the Orphadata XML products (``en_product1.xml``, ``en_product4.xml``,
``en_product6.xml``, ``en_product9_prev.xml``, ``en_product9_ages.xml``), published by
Orphanet under CC BY 4.0.

Every product has the same frame::

    <?xml version="1.0" encoding="ISO-8859-1"?>          (UTF-8 from the 2025 releases)
    <JDBOR date="2023-06-22 04:58:24" version="1.3.26 / 4.1.7 [2022-12-15] (orientdb version)"
           copyright="Orphanet (c) 2023" dbserver="jdbc:orient:remote:...">
      <Availability><Licence>...<ShortIdentifier>CC-BY-4.0</ShortIdentifier>...</Licence></Availability>
      <DisorderList count="11086">                       (product4: HPODisorderSetStatusList,
        <Disorder id="17601">                             each HPODisorderSetStatus wraps one Disorder)
          <OrphaCode>166024</OrphaCode>                    (<OrphaNumber> before the 2020 releases)
          <Name lang="en">...</Name>
          <DisorderType id="21394"><Name lang="en">Disease</Name></DisorderType>
          <DisorderGroup id="36547"><Name lang="en">Disorder</Name></DisorderGroup>
          ... the product's own lists ...
        </Disorder>

and differs only in the lists inside ``Disorder``:

==============  ============================================================================
product         path below ``Disorder`` → one output row
==============  ============================================================================
1 (alignments)  ``SynonymList/Synonym``; ``ExternalReferenceList/ExternalReference`` with
                ``Source``, ``Reference``, ``DisorderMappingRelation/Name`` (code E, NTBT,
                BTNT, ND or W first), ``DisorderMappingICDRelation/Name`` (ICD sources only),
                ``DisorderMappingValidationStatus/Name``
4 (phenotypes)  ``HPODisorderAssociationList/HPODisorderAssociation`` with ``HPO/HPOId``,
                ``HPO/HPOTerm``, ``HPOFrequency/Name``, ``DiagnosticCriteria`` (empty or a Name)
6 (genes)       ``DisorderGeneAssociationList/DisorderGeneAssociation`` with ``Gene`` (``Symbol``,
                ``Name``, ``GeneType/Name``, ``ExternalReferenceList/ExternalReference``),
                ``DisorderGeneAssociationType/Name``, ``DisorderGeneAssociationStatus/Name``,
                ``SourceOfValidation``
9 prevalence    ``PrevalenceList/Prevalence`` with ``PrevalenceType``, ``PrevalenceQualification``,
                ``PrevalenceClass``, ``PrevalenceGeographic``, ``PrevalenceValidationStatus``
                (each ``.../Name``), ``ValMoy`` and ``Source``
9 ages          ``AverageAgeOfOnsetList/AverageAgeOfOnset/Name``,
                ``TypeOfInheritanceList/TypeOfInheritance/Name``
==============  ============================================================================

HPO frequency labels become the midpoint of their interval, the same numbers as the HPO
frequency terms in :data:`kg.sources.hpo_annotations.FREQUENCY_TERMS`.

The files are streamed: expat (the parser under ``xml.etree.ElementTree``) is driven
directly because ``iterparse`` does not report line numbers, and only the ``Disorder`` being
read is kept as a tree, so memory does not grow with the file (the output tables do). The
parser honours the encoding in the XML declaration: ISO-8859-1 before 2025, UTF-8 after.
"""

from __future__ import annotations

import math
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from xml.parsers import expat

import pandas as pd

from kg.sources.hpo_annotations import FREQUENCY_TERMS
from shared.errors import InputError

#: Product name → the file name Orphadata publishes it under.
PRODUCT_FILES: dict[str, str] = {
    "product1": "en_product1.xml",
    "product4": "en_product4.xml",
    "product6": "en_product6.xml",
    "product9_prev": "en_product9_prev.xml",
    "product9_ages": "en_product9_ages.xml",
}

DISORDER_COLUMNS = ("orpha_code", "name", "disorder_type", "disorder_group")
SYNONYM_COLUMNS = ("orpha_code", "synonym")
XREF_COLUMNS = (
    "orpha_code", "source", "reference", "xref", "relation", "icd_relation", "validation_status",
)
PHENOTYPE_COLUMNS = (
    "orpha_code", "hpo_id", "hpo_term", "frequency", "frequency_value", "diagnostic_criteria",
)
GENE_COLUMNS = (
    "orpha_code", "gene_symbol", "gene_name", "gene_type", "hgnc", "ensembl", "omim",
    "association_type", "association_status", "source_of_validation",
)
PREVALENCE_COLUMNS = (
    "orpha_code", "prevalence_type", "qualification", "prevalence_class", "val_moy",
    "geographic", "validation_status", "source",
)
ONSET_COLUMNS = ("orpha_code", "onset")
INHERITANCE_COLUMNS = ("orpha_code", "inheritance")
_FLOAT_COLUMNS = frozenset({"frequency_value", "val_moy"})
_BOOL_COLUMNS = frozenset({"diagnostic_criteria"})

#: Code that opens a ``DisorderMappingRelation/Name`` → what it says.
MAPPING_RELATIONS: dict[str, str] = {
    "E": "exact mapping: the two concepts are equivalent",
    "NTBT": "the ORPHA code's narrower term maps to a broader term",
    "BTNT": "the ORPHA code's broader term maps to a narrower term",
    "ND": "not yet decided / unable to decide",
    "W": "wrong mapping: the two concepts are different",
}

#: ``ExternalReference/Source`` → CURIE prefix. Any other source is upper-cased with
#: everything but letters and digits dropped (the rule these all follow).
XREF_PREFIXES: dict[str, str] = {
    "OMIM": "OMIM", "ICD-10": "ICD10", "ICD-11": "ICD11", "UMLS": "UMLS", "MeSH": "MESH",
    "MedDRA": "MEDDRA", "MONDO": "MONDO", "GARD": "GARD",
    "HGNC": "HGNC", "Ensembl": "ENSEMBL", "SwissProt": "UNIPROTKB", "Genatlas": "GENATLAS",
    "Reactome": "REACTOME", "IUPHAR": "IUPHAR", "ClinVar": "CLINVAR",
}

#: ``HPOFrequency/Name`` → interval midpoint (same numbers as the HP:00402xx terms).
HPO_FREQUENCY_LABELS: dict[str, float] = {
    "Obligate (100%)": FREQUENCY_TERMS["HP:0040280"],
    "Very frequent (99-80%)": FREQUENCY_TERMS["HP:0040281"],
    "Frequent (79-30%)": FREQUENCY_TERMS["HP:0040282"],
    "Occasional (29-5%)": FREQUENCY_TERMS["HP:0040283"],
    "Very rare (<4-1%)": FREQUENCY_TERMS["HP:0040284"],
    "Excluded (0%)": FREQUENCY_TERMS["HP:0040285"],
}

_RELATION_CODE = re.compile(r"^([A-Za-z]+)")
_HPO_ID = re.compile(r"^HP:\d{7}$")
_CHUNK = 1 << 16  # bytes fed to expat at a time


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    """What the ``JDBOR`` root and its ``Availability`` block say about one file."""

    file: str  # file name, e.g. "en_product1.xml"
    date: str  # JDBOR date, e.g. "2023-06-22 04:58:24"
    version: str  # JDBOR version, e.g. "1.3.26 / 4.1.7 [2022-12-15] (orientdb version)"
    copyright: str
    dbserver: str
    licence: str  # Licence/ShortIdentifier, e.g. "CC-BY-4.0"; "" in releases without one
    encoding: str  # from the XML declaration; "" when none is declared (then UTF-8)
    declared_disorders: int | None  # the count attribute of the top-level list
    disorders_read: int  # Disorder elements actually read


@dataclass(frozen=True, slots=True)
class Product1:
    """``en_product1.xml``: the nomenclature and its alignments with other terminologies."""

    release: ReleaseInfo
    disorders: pd.DataFrame  # DISORDER_COLUMNS
    synonyms: pd.DataFrame  # SYNONYM_COLUMNS
    xrefs: pd.DataFrame  # XREF_COLUMNS


@dataclass(frozen=True, slots=True)
class Product4:
    """``en_product4.xml``: HPO phenotypes annotated to disorders."""

    release: ReleaseInfo
    disorders: pd.DataFrame  # DISORDER_COLUMNS
    phenotypes: pd.DataFrame  # PHENOTYPE_COLUMNS


@dataclass(frozen=True, slots=True)
class Product6:
    """``en_product6.xml``: genes associated with disorders."""

    release: ReleaseInfo
    disorders: pd.DataFrame  # DISORDER_COLUMNS
    genes: pd.DataFrame  # GENE_COLUMNS


@dataclass(frozen=True, slots=True)
class Product9Prev:
    """``en_product9_prev.xml``: prevalence and incidence estimates."""

    release: ReleaseInfo
    disorders: pd.DataFrame  # DISORDER_COLUMNS
    prevalences: pd.DataFrame  # PREVALENCE_COLUMNS


@dataclass(frozen=True, slots=True)
class Product9Ages:
    """``en_product9_ages.xml``: average ages of onset and types of inheritance."""

    release: ReleaseInfo
    disorders: pd.DataFrame  # DISORDER_COLUMNS
    onsets: pd.DataFrame  # ONSET_COLUMNS
    inheritance: pd.DataFrame  # INHERITANCE_COLUMNS


@dataclass(frozen=True, slots=True)
class OrphadataRelease:
    """The products found in one directory; a product's tables are empty when it is absent."""

    directory: Path
    releases: dict[str, ReleaseInfo]  # product name ("product1", ...) → its file's release
    disorders: pd.DataFrame  # DISORDER_COLUMNS, one row per code: product1's, then codes only others name
    synonyms: pd.DataFrame
    xrefs: pd.DataFrame
    phenotypes: pd.DataFrame
    genes: pd.DataFrame
    prevalences: pd.DataFrame
    onsets: pd.DataFrame
    inheritance: pd.DataFrame
    row_counts: dict[str, dict[str, int]]  # product name → table name → rows (present products)


# --------------------------------------------------------------------------- streaming


@dataclass(slots=True)
class _Record:
    """One finished ``Disorder`` tree and the line each of its elements starts on."""

    elem: ET.Element
    lines: dict[ET.Element, int]

    def line(self, elem: ET.Element | None = None) -> int:
        """Line of ``elem`` (default: the ``Disorder`` itself)."""
        return self.lines[self.elem if elem is None else elem]


class _JdborReader:
    """Drive expat over one file; yield each outermost ``Disorder`` as a small tree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root: dict[str, str] = {}
        self.encoding = ""
        self.licence = ""
        self.declared: int | None = None
        self.count = 0
        self.first_line: int | None = None
        self._depth = 0
        self._builder: ET.TreeBuilder | None = None
        self._lines: dict[ET.Element, int] = {}
        self._record_depth = 0
        self._capture: list[str] | None = None
        self._done: list[_Record] = []
        self._parser = expat.ParserCreate()  # no encoding argument: the declaration decides
        self._parser.buffer_text = True
        self._parser.XmlDeclHandler = self._xml_decl
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        # Text goes straight to the current record's TreeBuilder (or to the licence capture)
        # and is not reported at all elsewhere: most calls then never enter Python.
        self._parser.CharacterDataHandler = None

    def records(self) -> Iterator[_Record]:
        """Yield the ``Disorder`` records in file order.

        Raises
        ------
        InputError
            Missing file, malformed XML (with expat's line and column) or a root that is
            not ``JDBOR``.
        """
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            raise InputError("file not found", file=self.path) from None
        except OSError as exc:
            raise InputError(f"cannot read the file ({exc.strerror})", file=self.path) from None
        with fh:
            while True:
                chunk = fh.read(_CHUNK)
                self._feed(chunk, final=not chunk)
                yield from self._done
                self._done.clear()
                if not chunk:
                    break

    def release(self) -> ReleaseInfo:
        """The release facts (complete once :meth:`records` is exhausted)."""
        get = self.root.get
        return ReleaseInfo(
            file=self.path.name, date=get("date", ""), version=get("version", ""),
            copyright=get("copyright", ""), dbserver=get("dbserver", ""), licence=self.licence,
            encoding=self.encoding, declared_disorders=self.declared, disorders_read=self.count,
        )

    def _feed(self, chunk: bytes, *, final: bool) -> None:
        try:
            self._parser.Parse(chunk, final)
        except expat.ExpatError as exc:
            raise InputError(
                f"malformed XML: {expat.ErrorString(exc.code)} (column {exc.offset + 1})",
                file=self.path, line=exc.lineno,
            ) from None

    def _xml_decl(self, version: str, encoding: str | None, standalone: int) -> None:
        self.encoding = encoding or ""

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if self._builder is not None:
            self._lines[self._builder.start(tag, attrs)] = self._parser.CurrentLineNumber
        elif tag == "Disorder" and self._depth > 1:
            self._builder, self._lines, self._record_depth = ET.TreeBuilder(), {}, self._depth
            self._lines[self._builder.start(tag, attrs)] = self._parser.CurrentLineNumber
            self._parser.CharacterDataHandler = self._builder.data
        elif self._depth == 1:
            if tag != "JDBOR":
                raise InputError(
                    f"root element is <{tag}>, expected <JDBOR> (not an Orphadata XML product)",
                    file=self.path, line=self._parser.CurrentLineNumber,
                )
            self.root = dict(attrs)
        elif self._depth == 2 and tag.endswith("List") and "count" in attrs:
            self.declared = int(attrs["count"]) if attrs["count"].isdigit() else None
        elif tag == "ShortIdentifier":
            self._capture = []
            self._parser.CharacterDataHandler = self._capture.append

    def _end(self, tag: str) -> None:
        if self._builder is not None:
            self._builder.end(tag)
            if self._depth == self._record_depth:
                elem = self._builder.close()
                self._done.append(_Record(elem, self._lines))
                self.count += 1
                if self.first_line is None:
                    self.first_line = self._lines[elem]
                self._builder = None
                self._parser.CharacterDataHandler = None
        elif self._capture is not None:
            self._parser.CharacterDataHandler = None
            self.licence, self._capture = "".join(self._capture).strip(), None
        self._depth -= 1


# --------------------------------------------------------------------------- element helpers


def _text(elem: ET.Element | None) -> str:
    """Stripped text of ``elem``; "" when it is missing or empty."""
    return "" if elem is None or elem.text is None else elem.text.strip()


def _grandchild(parent: ET.Element, tag: str, sub: str) -> ET.Element | None:
    """``parent/tag/sub`` or None."""
    # Plain-tag find() runs in C; a path such as "tag/sub" would go through ElementPath.
    child = parent.find(tag)
    return None if child is None else child.find(sub)


def _name(parent: ET.Element, tag: str) -> str:
    """Text of ``parent/tag/Name`` (the labelled-term pattern Orphadata uses everywhere)."""
    return sys.intern(_text(_grandchild(parent, tag, "Name")))


def _items(parent: ET.Element, list_tag: str, item_tag: str) -> list[ET.Element]:
    """The ``item_tag`` children of ``parent/list_tag``."""
    child = parent.find(list_tag)
    return [] if child is None else child.findall(item_tag)


def _orpha_code(rec: _Record, path: Path) -> str:
    """``ORPHA:n`` from ``OrphaCode`` (or the older ``OrphaNumber``)."""
    code = rec.elem.find("OrphaCode")
    if code is None:
        code = rec.elem.find("OrphaNumber")
    if code is None:
        raise InputError(
            "<Disorder> has no <OrphaCode> (or, before 2020, <OrphaNumber>)",
            file=path, line=rec.line(), field="OrphaCode",
        )
    text = _text(code)
    if not (text.isascii() and text.isdigit()):
        raise InputError(
            f"ORPHAcode {text!r} is not a number", file=path, line=rec.line(code), field=code.tag
        )
    return f"ORPHA:{int(text)}"


def xref_curie(source: str, reference: str) -> str:
    """CURIE for an external reference: ``("ICD-10", "Q77.3")`` → ``"ICD10:Q77.3"``.

    The reference is kept as published (MONDO's and GARD's leading zeros included); a bare
    MONDO number shorter than seven digits is left-padded to the seven a MONDO id has. A
    reference that already carries the prefix (``HGNC:30497``) is not prefixed twice.
    """
    prefix = XREF_PREFIXES.get(source) or re.sub(r"[^A-Za-z0-9]", "", source).upper()
    if reference.upper().startswith(prefix + ":"):
        reference = reference[len(prefix) + 1:]
    if prefix == "MONDO" and reference.isdigit():
        reference = reference.zfill(7)
    return f"{prefix}:{reference}"


class _Table:
    """Column lists filled row by row, turned into a DataFrame once at the end."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self.data: dict[str, list] = {c: [] for c in columns}
        self._lists = tuple(self.data.values())

    def add(self, *values: object) -> None:
        for column, value in zip(self._lists, values, strict=True):
            column.append(value)

    def frame(self) -> pd.DataFrame:
        def dtype(c: str) -> str:
            return "float64" if c in _FLOAT_COLUMNS else "bool" if c in _BOOL_COLUMNS else "str"

        return pd.DataFrame({c: pd.Series(self.data[c], dtype=dtype(c)) for c in self.columns})


def _read(path: str | Path, tables: dict[str, tuple[str, ...]],
          rows: Callable[[_Record, str, Path, dict[str, _Table]], None],
          expect: tuple[str, ...]) -> tuple[ReleaseInfo, dict[str, pd.DataFrame]]:
    """Stream ``path``; ``rows`` adds each record's rows; ``expect`` are the product's lists."""
    path = Path(path)
    reader = _JdborReader(path)
    out = {name: _Table(cols) for name, cols in {"disorders": DISORDER_COLUMNS, **tables}.items()}
    seen_expected = False
    for rec in reader.records():
        code = _orpha_code(rec, path)
        d = rec.elem
        out["disorders"].add(code, _text(d.find("Name")), _name(d, "DisorderType"), _name(d, "DisorderGroup"))
        seen_expected = seen_expected or any(d.find(tag) is not None for tag in expect)
        rows(rec, code, path, out)
    if reader.count and not seen_expected:
        # A product file handed to the wrong parser would otherwise give empty tables.
        raise InputError(
            f"none of the {reader.count} <Disorder> elements has a <{'> or <'.join(expect)}>: "
            f"wrong Orphadata product for this parser?",
            file=path, line=reader.first_line,
        )
    return reader.release(), {name: table.frame() for name, table in out.items()}


# --------------------------------------------------------------------------- products


def _product1_rows(rec: _Record, code: str, path: Path, out: dict[str, _Table]) -> None:
    """Synonyms and external references of one disorder."""
    for syn in _items(rec.elem, "SynonymList", "Synonym"):
        out["synonyms"].add(code, _text(syn))
    for ref in _items(rec.elem, "ExternalReferenceList", "ExternalReference"):
        source, reference = sys.intern(_text(ref.find("Source"))), _text(ref.find("Reference"))
        if not source or not reference:
            raise InputError(
                "<ExternalReference> without a <Source> and a <Reference>",
                file=path, line=rec.line(ref), field="ExternalReference",
            )
        relation = ""
        label_elem = _grandchild(ref, "DisorderMappingRelation", "Name")
        if label := _text(label_elem):
            m = _RELATION_CODE.match(label)
            relation = m.group(1) if m else ""
            if relation not in MAPPING_RELATIONS:
                raise InputError(
                    f"mapping relation {label!r} does not start with one of "
                    f"{', '.join(MAPPING_RELATIONS)}",
                    file=path, line=rec.line(label_elem), field="DisorderMappingRelation",
                )
        out["xrefs"].add(
            code, source, reference, xref_curie(source, reference), sys.intern(relation),
            _name(ref, "DisorderMappingICDRelation"), _name(ref, "DisorderMappingValidationStatus"),
        )


def _product4_rows(rec: _Record, code: str, path: Path, out: dict[str, _Table]) -> None:
    """HPO annotations of one disorder."""
    for assoc in _items(rec.elem, "HPODisorderAssociationList", "HPODisorderAssociation"):
        hpo = _grandchild(assoc, "HPO", "HPOId")
        hpo_id = _text(hpo)
        if not _HPO_ID.match(hpo_id):
            raise InputError(
                f"{hpo_id!r} is not an HPO id HP:nnnnnnn", file=path,
                line=rec.line(assoc if hpo is None else hpo), field="HPOId",
            )
        label_elem = _grandchild(assoc, "HPOFrequency", "Name")
        label = _text(label_elem)
        if label == "":
            value = math.nan
        elif (value := HPO_FREQUENCY_LABELS.get(label)) is None:
            raise InputError(
                f"HPO frequency {label!r} is none of {', '.join(HPO_FREQUENCY_LABELS)}",
                file=path, line=rec.line(label_elem), field="HPOFrequency",
            )
        criteria = _name(assoc, "DiagnosticCriteria") != ""
        out["phenotypes"].add(
            code, sys.intern(hpo_id), sys.intern(_text(_grandchild(assoc, "HPO", "HPOTerm"))),
            sys.intern(label), value, criteria,
        )


def _product6_rows(rec: _Record, code: str, path: Path, out: dict[str, _Table]) -> None:
    """Gene associations of one disorder."""
    for assoc in _items(rec.elem, "DisorderGeneAssociationList", "DisorderGeneAssociation"):
        gene = assoc.find("Gene")
        if gene is None:
            raise InputError(
                "<DisorderGeneAssociation> without a <Gene>", file=path, line=rec.line(assoc), field="Gene"
            )
        refs: dict[str, list[str]] = {}
        for ref in _items(gene, "ExternalReferenceList", "ExternalReference"):
            source, reference = _text(ref.find("Source")), _text(ref.find("Reference"))
            if source and reference:
                refs.setdefault(source, []).append(xref_curie(source, reference))
        out["genes"].add(
            code, _text(gene.find("Symbol")), _text(gene.find("Name")), _name(gene, "GeneType"),
            "|".join(refs.get("HGNC", ())), "|".join(refs.get("Ensembl", ())),
            "|".join(refs.get("OMIM", ())), _name(assoc, "DisorderGeneAssociationType"),
            _name(assoc, "DisorderGeneAssociationStatus"), _text(assoc.find("SourceOfValidation")),
        )


def _product9_prev_rows(rec: _Record, code: str, path: Path, out: dict[str, _Table]) -> None:
    """Prevalence estimates of one disorder."""
    for prev in _items(rec.elem, "PrevalenceList", "Prevalence"):
        val_elem = prev.find("ValMoy")
        raw = _text(val_elem)
        try:
            val_moy = float(raw) if raw else math.nan
        except ValueError:
            val_moy = -1.0
        if raw and not (math.isfinite(val_moy) and val_moy >= 0):
            raise InputError(
                f"ValMoy {raw!r} is not a non-negative number", file=path,
                line=rec.line(val_elem), field="ValMoy",
            )
        out["prevalences"].add(
            code, _name(prev, "PrevalenceType"), _name(prev, "PrevalenceQualification"),
            _name(prev, "PrevalenceClass"), val_moy, _name(prev, "PrevalenceGeographic"),
            _name(prev, "PrevalenceValidationStatus"), _text(prev.find("Source")),
        )


def _product9_ages_rows(rec: _Record, code: str, path: Path, out: dict[str, _Table]) -> None:
    """Ages of onset and types of inheritance of one disorder."""
    for onset in _items(rec.elem, "AverageAgeOfOnsetList", "AverageAgeOfOnset"):
        out["onsets"].add(code, sys.intern(_text(onset.find("Name"))))
    for inheritance in _items(rec.elem, "TypeOfInheritanceList", "TypeOfInheritance"):
        out["inheritance"].add(code, sys.intern(_text(inheritance.find("Name"))))


def parse_product1(path: str | Path) -> Product1:
    """Parse ``en_product1.xml``: disorders, synonyms and external references.

    Parameters
    ----------
    path
        The XML file (ISO-8859-1 or UTF-8, as its declaration says).

    Returns
    -------
    Product1
        ``disorders`` (:data:`DISORDER_COLUMNS`), ``synonyms`` (:data:`SYNONYM_COLUMNS`) and
        ``xrefs`` (:data:`XREF_COLUMNS`: ``relation`` is the code E, NTBT, BTNT, ND or W, ""
        when the release gives none; ``xref`` is the CURIE from :func:`xref_curie`).

    Raises
    ------
    InputError
        Missing file, malformed XML, a root other than ``JDBOR``, a ``Disorder`` without a
        numeric ``OrphaCode``/``OrphaNumber``, an external reference without source or
        reference, or a mapping relation with an unknown code. The message names the line.
    """
    release, t = _read(path, {"synonyms": SYNONYM_COLUMNS, "xrefs": XREF_COLUMNS}, _product1_rows,
                       ("SynonymList", "ExternalReferenceList"))
    return Product1(release, t["disorders"], t["synonyms"], t["xrefs"])


def parse_product4(path: str | Path) -> Product4:
    """Parse ``en_product4.xml``: HPO phenotypes of disorders.

    Returns
    -------
    Product4
        ``phenotypes`` (:data:`PHENOTYPE_COLUMNS`): ``frequency`` is the published label,
        ``frequency_value`` its interval midpoint in [0, 1] (NaN when the label is empty),
        ``diagnostic_criteria`` whether the annotation is flagged as a diagnostic criterion.

    Raises
    ------
    InputError
        As :func:`parse_product1`, and a malformed HPO id or an unknown frequency label.
    """
    release, t = _read(path, {"phenotypes": PHENOTYPE_COLUMNS}, _product4_rows,
                       ("HPODisorderAssociationList",))
    return Product4(release, t["disorders"], t["phenotypes"])


def parse_product6(path: str | Path) -> Product6:
    """Parse ``en_product6.xml``: genes of disorders.

    Returns
    -------
    Product6
        ``genes`` (:data:`GENE_COLUMNS`): one row per disorder–gene association; ``hgnc``,
        ``ensembl`` and ``omim`` are CURIEs (``HGNC:30497``), ``|``-joined when a gene has
        several, "" when it has none.

    Raises
    ------
    InputError
        As :func:`parse_product1`, and an association without a ``Gene``.
    """
    release, t = _read(path, {"genes": GENE_COLUMNS}, _product6_rows, ("DisorderGeneAssociationList",))
    return Product6(release, t["disorders"], t["genes"])


def parse_product9_prev(path: str | Path) -> Product9Prev:
    """Parse ``en_product9_prev.xml``: one row per prevalence estimate.

    Returns
    -------
    Product9Prev
        ``prevalences`` (:data:`PREVALENCE_COLUMNS`): ``val_moy`` is the published mean value
        as a float (0.0 where published as ``0.0``, NaN where empty); the other columns are
        the published labels.

    Raises
    ------
    InputError
        As :func:`parse_product1`, and a ``ValMoy`` that is not a non-negative number.
    """
    release, t = _read(path, {"prevalences": PREVALENCE_COLUMNS}, _product9_prev_rows, ("PrevalenceList",))
    return Product9Prev(release, t["disorders"], t["prevalences"])


def parse_product9_ages(path: str | Path) -> Product9Ages:
    """Parse ``en_product9_ages.xml``: ages of onset and types of inheritance.

    Returns
    -------
    Product9Ages
        ``onsets`` (:data:`ONSET_COLUMNS`) and ``inheritance`` (:data:`INHERITANCE_COLUMNS`),
        one row per published label.

    Raises
    ------
    InputError
        As :func:`parse_product1`.
    """
    release, t = _read(path, {"onsets": ONSET_COLUMNS, "inheritance": INHERITANCE_COLUMNS},
                       _product9_ages_rows, ("AverageAgeOfOnsetList", "TypeOfInheritanceList"))
    return Product9Ages(release, t["disorders"], t["onsets"], t["inheritance"])


def read_orphadata(directory: str | Path) -> OrphadataRelease:
    """Parse every Orphadata product present in ``directory`` (see :data:`PRODUCT_FILES`).

    Parameters
    ----------
    directory
        Folder holding any subset of ``en_product1.xml``, ``en_product4.xml``,
        ``en_product6.xml``, ``en_product9_prev.xml`` and ``en_product9_ages.xml``.

    Returns
    -------
    OrphadataRelease
        The tables of the products found (empty tables with the documented columns for the
        others), each file's :class:`ReleaseInfo` and the rows per product and table.

    Raises
    ------
    InputError
        ``directory`` is not a folder or holds none of the five files, or a file is bad
        (see the ``parse_product*`` functions).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("not a directory", file=directory)
    parsers: dict[str, Callable[[Path], Product1 | Product4 | Product6 | Product9Prev | Product9Ages]] = {
        "product1": parse_product1, "product4": parse_product4, "product6": parse_product6,
        "product9_prev": parse_product9_prev, "product9_ages": parse_product9_ages,
    }
    parsed = {name: parsers[name](directory / file) for name, file in PRODUCT_FILES.items()
              if (directory / file).is_file()}
    if not parsed:
        raise InputError(f"no Orphadata product here; expected any of {', '.join(PRODUCT_FILES.values())}",
                         file=directory)

    empty = {
        "synonyms": SYNONYM_COLUMNS, "xrefs": XREF_COLUMNS, "phenotypes": PHENOTYPE_COLUMNS,
        "genes": GENE_COLUMNS, "prevalences": PREVALENCE_COLUMNS, "onsets": ONSET_COLUMNS,
        "inheritance": INHERITANCE_COLUMNS,
    }
    tables = {name: _Table(cols).frame() for name, cols in empty.items()}
    row_counts: dict[str, dict[str, int]] = {}
    disorders = []
    for name, product in parsed.items():
        frames = {f.name: getattr(product, f.name) for f in fields(product) if f.name != "release"}
        row_counts[name] = {f: len(frame) for f, frame in frames.items()}
        disorders.append(frames.pop("disorders"))
        tables.update(frames)
    # product1 first: its names and types win for codes other products also name.
    all_disorders = pd.concat(disorders, ignore_index=True).drop_duplicates("orpha_code", ignore_index=True)
    return OrphadataRelease(
        directory=directory, releases={n: p.release for n, p in parsed.items()},
        disorders=all_disorders, row_counts=row_counts, **tables,
    )
