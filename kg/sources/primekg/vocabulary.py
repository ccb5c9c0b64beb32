"""PrimeKG's published vocabulary: file columns, node types, the identifier rule of every
``x_source`` and every relation with its canonical direction (see :mod:`kg.sources.primekg`).
"""

from __future__ import annotations

from dataclasses import dataclass

KG_COLUMNS = (
    "relation", "display_relation", "x_index", "x_id", "x_type", "x_name", "x_source",
    "y_index", "y_id", "y_type", "y_name", "y_source",
)
NODES_COLUMNS = ("node_index", "node_id", "node_type", "node_name", "node_source")
EDGES_COLUMNS = ("relation", "display_relation", "x_index", "y_index")

#: PrimeKG node type → project node type (kg.schema names where the project has the type).
NODE_TYPES: dict[str, str] = {
    "gene/protein": "gene",
    "drug": "drug",
    "effect/phenotype": "phenotype",
    "disease": "disease",
    "biological_process": "biological_process",
    "molecular_function": "molecular_function",
    "cellular_component": "cellular_component",
    "exposure": "exposure",
    "pathway": "pathway",
    "anatomy": "anatomy",
}
_PTYPES = tuple(NODE_TYPES)


@dataclass(frozen=True, slots=True)
class IdRule:
    """How one ``x_source`` spells its ids and which CURIE they become."""

    prefix: str  # CURIE prefix
    pattern: str  # regular expression the published id must match in full
    pad: int  # zero-pad the number to this many digits (0: keep as given)
    types: tuple[str, ...]  # PrimeKG node types this source may carry
    expected: str  # for error messages


ID_RULES: dict[str, IdRule] = {
    "NCBI": IdRule("NCBIGene", r"\d+", 0, ("gene/protein",), "an NCBI Gene number"),
    "DrugBank": IdRule("DRUGBANK", r"DB\d{5}", 0, ("drug",), "a DrugBank id DBnnnnn"),
    "HPO": IdRule("HP", r"\d{1,7}", 7, ("effect/phenotype",), "an HPO number (up to 7 digits)"),
    "MONDO": IdRule("MONDO", r"\d{1,7}", 7, ("disease",), "a MONDO number (up to 7 digits)"),
    "MONDO_grouped": IdRule("MONDO", r"\d{1,7}(?:_\d{1,7})*", 7, ("disease",),
                            "MONDO numbers joined by '_'"),
    "GO": IdRule("GO", r"\d{1,7}", 7, ("biological_process", "molecular_function", "cellular_component"),
                 "a GO number (up to 7 digits)"),
    "REACTOME": IdRule("REACT", r"R-[A-Z]{3}-\d+", 0, ("pathway",), "a Reactome id R-HSA-n"),
    "UBERON": IdRule("UBERON", r"\d{1,7}", 7, ("anatomy",), "an UBERON number (up to 7 digits)"),
    "CTD": IdRule("MESH", r"[CD]\d{6,9}", 0, ("exposure",), "a MeSH id Dnnnnnn or Cnnnnnn"),
}
_SOURCES = tuple(ID_RULES)
_GROUPED = _SOURCES.index("MONDO_grouped")


@dataclass(frozen=True, slots=True)
class PrimeKGRelation:
    """A PrimeKG relation, its canonical direction and the project relation it maps to."""

    name: str  # PrimeKG ``relation``
    source_type: str  # PrimeKG node type at the canonical source
    target_type: str
    project: str | None  # kg.schema.RELATIONS name; None where the project has none (yet)
    displays: tuple[str, ...]  # the ``display_relation`` values of the 2023 release

    @property
    def symmetric(self) -> bool:
        """Same node type at both ends: stored once as (lower code, higher code)."""
        return self.source_type == self.target_type


_G, _C, _P, _D = "gene/protein", "drug", "effect/phenotype", "disease"
_BP, _MF, _CC = "biological_process", "molecular_function", "cellular_component"
_EX, _PW, _AN = "exposure", "pathway", "anatomy"

RELATIONS: dict[str, PrimeKGRelation] = {
    r.name: r
    for r in (
        PrimeKGRelation("protein_protein", _G, _G, None, ("ppi",)),
        PrimeKGRelation("drug_protein", _C, _G, None, ("carrier", "enzyme", "target", "transporter")),
        PrimeKGRelation("contraindication", _C, _D, None, ("contraindication",)),
        PrimeKGRelation("indication", _C, _D, "indication", ("indication",)),
        PrimeKGRelation("off-label use", _C, _D, None, ("off-label use",)),
        PrimeKGRelation("drug_drug", _C, _C, None, ("synergistic interaction",)),
        PrimeKGRelation("phenotype_protein", _G, _P, "gene_phenotype", ("associated with",)),
        PrimeKGRelation("phenotype_phenotype", _P, _P, None, ("parent-child",)),
        PrimeKGRelation("disease_phenotype_negative", _D, _P, "lacks_phenotype", ("phenotype absent",)),
        PrimeKGRelation("disease_phenotype_positive", _D, _P, "has_phenotype", ("phenotype present",)),
        PrimeKGRelation("disease_protein", _D, _G, "associated_gene", ("associated with",)),
        PrimeKGRelation("disease_disease", _D, _D, None, ("parent-child",)),
        PrimeKGRelation("drug_effect", _C, _P, "drug_effect", ("side effect",)),
        PrimeKGRelation("bioprocess_bioprocess", _BP, _BP, None, ("parent-child",)),
        PrimeKGRelation("molfunc_molfunc", _MF, _MF, None, ("parent-child",)),
        PrimeKGRelation("cellcomp_cellcomp", _CC, _CC, None, ("parent-child",)),
        PrimeKGRelation("molfunc_protein", _MF, _G, None, ("interacts with",)),
        PrimeKGRelation("cellcomp_protein", _CC, _G, None, ("interacts with",)),
        PrimeKGRelation("bioprocess_protein", _BP, _G, None, ("interacts with",)),
        PrimeKGRelation("exposure_protein", _EX, _G, None, ("interacts with",)),
        PrimeKGRelation("exposure_disease", _EX, _D, None, ("linked to",)),
        PrimeKGRelation("exposure_exposure", _EX, _EX, None, ("parent-child",)),
        PrimeKGRelation("exposure_bioprocess", _EX, _BP, None, ("interacts with",)),
        PrimeKGRelation("exposure_molfunc", _EX, _MF, None, ("interacts with",)),
        PrimeKGRelation("exposure_cellcomp", _EX, _CC, None, ("interacts with",)),
        PrimeKGRelation("pathway_pathway", _PW, _PW, None, ("parent-child",)),
        PrimeKGRelation("pathway_protein", _PW, _G, None, ("interacts with",)),
        PrimeKGRelation("anatomy_anatomy", _AN, _AN, None, ("parent-child",)),
        PrimeKGRelation("anatomy_protein_present", _AN, _G, None, ("expression present",)),
        PrimeKGRelation("anatomy_protein_absent", _AN, _G, None, ("expression absent",)),
    )
}
_RELS = tuple(RELATIONS)
