"""Orphadata's codes and labels in the graph's terms: mapping-relation codes, CURIE prefixes
of external references and HPO frequency labels as numbers (see :mod:`kg.sources.orphadata`).
"""

from __future__ import annotations

import re

from kg.sources.hpo_annotations import FREQUENCY_TERMS

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
