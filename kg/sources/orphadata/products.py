"""One parser per Orphadata product: the lists inside each ``Disorder`` become flat tables
with documented columns, checked with file and line (see :mod:`kg.sources.orphadata`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kg.sources.orphadata.reader import (
    ReleaseInfo,
    _grandchild,
    _items,
    _JdborReader,
    _name,
    _orpha_code,
    _Record,
    _text,
)
from kg.sources.orphadata.vocabulary import (
    _HPO_ID,
    _RELATION_CODE,
    HPO_FREQUENCY_LABELS,
    MAPPING_RELATIONS,
    xref_curie,
)
from shared.errors import InputError

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
