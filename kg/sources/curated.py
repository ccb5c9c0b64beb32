"""The curated layer: drugs, indications, adverse events and labs for the demo's study
diseases, shipped as two tab-separated files with a citation per row (see
``kg/data/CURATED.md``).

``curated_edges.tsv``: subject, subject_name, relation, object, object_name, qualifier, citation
  relation ``indication``  DRUGBANK drug → ORPHA disease
  relation ``drug_effect`` DRUGBANK drug → HP adverse effect (PrimeKG's drug_effect)
  relation ``measured_by`` HP phenotype → LOINC lab, qualifier ``high`` or ``low``
``curated_labs.tsv``: lab_id, name, unit (UCUM), low, high, citation (adult reference interval);
  the labs ``measured_by`` uses and a routine panel (citation ends "(routine panel)"): survey
  candidates with a public reference interval, with no edge
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from shared.errors import InputError

EDGE_COLUMNS = ("subject", "subject_name", "relation", "object", "object_name", "qualifier", "citation")
LAB_COLUMNS = ("lab_id", "name", "unit", "low", "high", "citation")

_DRUG = re.compile(r"^DRUGBANK:DB\d{5}$")
_DISEASE = re.compile(r"^ORPHA:\d+$")
_HPO = re.compile(r"^HP:\d{7}$")
_LOINC = re.compile(r"^LOINC:\d{1,7}-\d$")

#: relation → (subject pattern, object pattern, allowed qualifiers)
_RULES: dict[str, tuple[re.Pattern, re.Pattern, frozenset[str]]] = {
    "indication": (_DRUG, _DISEASE, frozenset({""})),
    "drug_effect": (_DRUG, _HPO, frozenset({""})),
    "measured_by": (_HPO, _LOINC, frozenset({"high", "low"})),
}


@dataclass(frozen=True, slots=True)
class CuratedLayer:
    """The parsed curated files."""

    edges: pd.DataFrame  # EDGE_COLUMNS plus "line"
    labs: pd.DataFrame  # lab_id, name, unit, low (float), high (float), citation
    edges_path: Path
    labs_path: Path


def default_curated_dir() -> Path:
    """The folder of the curated files shipped with the package."""
    return Path(str(resources.files("kg") / "data"))


def _rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    try:
        fh = open(path, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    with fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(header) != columns:
            raise InputError(f"wrong header: expected {', '.join(columns)}", file=path, line=1)
        rows = []
        for fields in reader:
            lineno = reader.line_num
            if not fields or all(not f for f in fields):
                continue
            if len(fields) != len(columns):
                raise InputError(f"expected {len(columns)} fields, got {len(fields)}", file=path, line=lineno)
            rows.append((lineno, [f.strip() for f in fields]))
    if not rows:
        raise InputError("no data rows", file=path)
    return rows


def parse_curated(folder: str | Path | None = None) -> CuratedLayer:
    """Read and check ``curated_edges.tsv`` and ``curated_labs.tsv`` from ``folder``.

    Raises
    ------
    InputError
        Missing file, wrong header, an id in the wrong form for its relation, a bad
        qualifier, an empty citation, a non-numeric or inverted reference range, a lab
        used by ``measured_by`` but not defined, or a duplicate row (file, line, column).
    """
    folder = default_curated_dir() if folder is None else Path(folder)
    edges_path, labs_path = folder / "curated_edges.tsv", folder / "curated_labs.tsv"

    lab_rows = []
    seen_labs: set[str] = set()
    for lineno, (lab_id, name, unit, low, high, citation) in _rows(labs_path, LAB_COLUMNS):
        if not _LOINC.match(lab_id):
            raise InputError(f"{lab_id!r} is not LOINC:nnnn-n", file=labs_path, line=lineno, field="lab_id")
        if lab_id in seen_labs:
            raise InputError(f"duplicate lab {lab_id}", file=labs_path, line=lineno, field="lab_id")
        seen_labs.add(lab_id)
        bounds = []
        for field_name, value in (("low", low), ("high", high)):
            try:
                number = float(value)
            except ValueError:
                raise InputError(f"{value!r} is not a number", file=labs_path, line=lineno, field=field_name) from None
            if not math.isfinite(number):
                raise InputError(f"{value!r} is not finite", file=labs_path, line=lineno, field=field_name)
            bounds.append(number)
        if bounds[0] >= bounds[1]:
            raise InputError(f"low {low} is not below high {high}", file=labs_path, line=lineno, field="low")
        for field_name, value in (("name", name), ("unit", unit), ("citation", citation)):
            if not value:
                raise InputError("empty", file=labs_path, line=lineno, field=field_name)
        lab_rows.append((lab_id, name, unit, bounds[0], bounds[1], citation))

    edge_rows = []
    seen_edges: set[tuple[str, str, str]] = set()
    for lineno, fields in _rows(edges_path, EDGE_COLUMNS):
        subject, _, relation, obj, _, qualifier, citation = fields
        if relation not in _RULES:
            raise InputError(f"unknown relation {relation!r}; expected one of {', '.join(_RULES)}",
                             file=edges_path, line=lineno, field="relation")
        subject_re, object_re, qualifiers = _RULES[relation]
        if not subject_re.match(subject):
            raise InputError(f"{subject!r} is not a valid subject for {relation}",
                             file=edges_path, line=lineno, field="subject")
        if not object_re.match(obj):
            raise InputError(f"{obj!r} is not a valid object for {relation}",
                             file=edges_path, line=lineno, field="object")
        if qualifier not in qualifiers:
            raise InputError(f"qualifier {qualifier!r} not allowed for {relation}; allowed: "
                             f"{', '.join(repr(q) for q in sorted(qualifiers))}",
                             file=edges_path, line=lineno, field="qualifier")
        if not citation:
            raise InputError("every curated fact needs a citation", file=edges_path, line=lineno, field="citation")
        if relation == "measured_by" and obj not in seen_labs:
            raise InputError(f"lab {obj} is not defined in {labs_path.name}", file=edges_path, line=lineno,
                             field="object")
        key = (subject, relation, obj)
        if key in seen_edges:
            raise InputError(f"duplicate fact {subject} {relation} {obj}", file=edges_path, line=lineno)
        seen_edges.add(key)
        edge_rows.append((*fields, lineno))

    edges = pd.DataFrame(edge_rows, columns=[*EDGE_COLUMNS, "line"])
    labs = pd.DataFrame(lab_rows, columns=["id", "name", "unit", "low", "high", "citation"])
    return CuratedLayer(edges=edges, labs=labs, edges_path=edges_path, labs_path=labs_path)
