"""Node types, relations and their one-letter meta-path abbreviations; the node type of each
HPO term, from the top-level branch it sits under (:func:`branch_types`).

A meta-path is written as alternating node and edge letters, hetio style: ``DhPiP`` is
disease –has phenotype→ phenotype –is a– phenotype. The letters are defined here once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: node type → meta-path letter (only types that meta-paths walk through have one).
NODE_ABBREV: dict[str, str] = {
    "disease": "D",
    "phenotype": "P",
    "gene": "G",
    "drug": "C",  # C for compound, as in Hetionet
    "lab": "L",
}
ABBREV_NODE: dict[str, str] = {v: k for k, v in NODE_ABBREV.items()}

#: HPO top-level branches (children of HP:0000001) → node type of the terms below them.
HPO_BRANCHES: dict[str, str] = {
    "HP:0000118": "phenotype",             # Phenotypic abnormality
    "HP:0000005": "inheritance",           # Mode of inheritance
    "HP:0031797": "clinical_course",       # Clinical course
    "HP:0012823": "clinical_modifier",     # Clinical modifier
    "HP:0040279": "frequency",             # Frequency
    "HP:0032443": "past_medical_history",  # Past medical history
    "HP:0032223": "blood_group",           # Blood group
    "HP:0020228": "biospecimen",           # Biospecimen phenotypic feature
}
HPO_ROOT = "HP:0000001"


def branch_types(parents: Mapping[str, Iterable[str]], branches: Mapping[str, str] = HPO_BRANCHES) -> dict[str, str]:
    """Term → node type, from the top-level branch it sits under.

    A breadth-first walk down from each branch root over the inverted ``is_a`` map (a
    plain dict walk: building a networkx graph of all 19 k terms costs ~10× more here).
    A term under two branches (none in HPO 2025-01-16) takes the first in ``branches`` order.
    """
    children: dict[str, list[str]] = {}
    for child, ps in parents.items():
        for parent in ps:
            children.setdefault(parent, []).append(child)
    types: dict[str, str] = {}
    for root, node_type in branches.items():
        if root not in parents:
            continue
        queue = deque([root])
        while queue:
            term = queue.popleft()
            if term in types:
                continue
            types[term] = node_type
            queue.extend(children.get(term, ()))
    return types


@dataclass(frozen=True, slots=True)
class Relation:
    """A typed relation. ``abbrev`` is its edge letter in meta-paths (None: not walkable)."""

    name: str
    source_type: str
    target_type: str
    abbrev: str | None
    symmetric: bool  # walk it both ways under one letter (is_a: parent or child)
    description: str


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        Relation("has_phenotype", "disease", "phenotype", "h", False,
                 "disease shows phenotype (phenotype.hpoa aspect P); weight = frequency, NaN unknown"),
        Relation("lacks_phenotype", "disease", "phenotype", "n", False,
                 "disease explicitly does NOT show phenotype (phenotype.hpoa qualifier NOT)"),
        Relation("has_inheritance", "disease", "inheritance", None, False, "phenotype.hpoa aspect I"),
        Relation("has_clinical_course", "disease", "clinical_course", None, False, "phenotype.hpoa aspect C"),
        Relation("has_modifier", "disease", "clinical_modifier", None, False, "phenotype.hpoa aspect M"),
        Relation("has_past_history", "disease", "past_medical_history", None, False, "phenotype.hpoa aspect H"),
        Relation("is_a", "phenotype", "phenotype", "i", True, "HPO subclass, child → parent (hp.obo is_a)"),
        Relation("associated_gene", "disease", "gene", "a", False,
                 "gene associated with disease (genes_to_phenotype / phenotype_to_genes)"),
        Relation("gene_phenotype", "gene", "phenotype", "h", False,
                 "gene annotated with phenotype (genes_to_phenotype); weight = frequency"),
        Relation("indication", "drug", "disease", "t", False, "drug treats disease (curated layer)"),
        Relation("drug_effect", "drug", "phenotype", "e", False,
                 "adverse effect of drug, as an HPO term (curated layer; PrimeKG drug_effect)"),
        Relation("measured_by", "phenotype", "lab", "m", False,
                 "phenotype is reflected by a lab; qualifier high/low (curated layer)"),
        # --- external sources (kg.assembly.source_tables); new letters only, the ones above unchanged
        Relation("contraindication", "drug", "disease", "c", False, "drug is contraindicated in disease (PrimeKG)"),
        Relation("off_label_use", "drug", "disease", "o", False, "drug used off-label for disease (PrimeKG)"),
        Relation("drug_target", "drug", "gene", "b", False,
                 "drug binds the gene's protein; qualifier target/enzyme/carrier/transporter (PrimeKG drug_protein)"),
        Relation("drug_drug", "drug", "drug", "x", True, "synergistic drug interaction (PrimeKG)"),
        Relation("ppi", "gene", "gene", "p", True, "protein–protein interaction (PrimeKG protein_protein)"),
        Relation("disease_disease", "disease", "disease", "d", True,
                 "MONDO parent–child, direction not kept by PrimeKG (walked both ways)"),
        Relation("faers_signal", "drug", "phenotype", "s", False,
                 "FAERS disproportionality signal, reaction mapped to HPO; weight = shrunk IC, stats in qualifier"),
        Relation("faers_signal_meddra", "drug", "adverse_event", None, False,
                 "FAERS signal to a MedDRA reaction term without an HPO mapping; weight = shrunk IC"),
        Relation("phenotype_phenotype", "phenotype", "phenotype", None, True,
                 "HPO parent–child as PrimeKG stores it, undirected (meta-paths use is_a from hp.obo)"),
        *(Relation(name, src, dst, None, src == dst, f"PrimeKG {name}") for name, src, dst in (
            ("bioprocess_bioprocess", "biological_process", "biological_process"),
            ("molfunc_molfunc", "molecular_function", "molecular_function"),
            ("cellcomp_cellcomp", "cellular_component", "cellular_component"),
            ("molfunc_protein", "molecular_function", "gene"),
            ("cellcomp_protein", "cellular_component", "gene"),
            ("bioprocess_protein", "biological_process", "gene"),
            ("exposure_protein", "exposure", "gene"),
            ("exposure_disease", "exposure", "disease"),
            ("exposure_exposure", "exposure", "exposure"),
            ("exposure_bioprocess", "exposure", "biological_process"),
            ("exposure_molfunc", "exposure", "molecular_function"),
            ("exposure_cellcomp", "exposure", "cellular_component"),
            ("pathway_pathway", "pathway", "pathway"),
            ("pathway_protein", "pathway", "gene"),
            ("anatomy_anatomy", "anatomy", "anatomy"),
            ("anatomy_protein_present", "anatomy", "gene"),
            ("anatomy_protein_absent", "anatomy", "gene"),
        )),
    )
}

NODE_COLUMNS = ("id", "type", "name", "source", "obsolete")
EDGE_COLUMNS = ("source", "target", "relation", "weight", "provenance", "qualifier", "onset", "sex")


def metaedge_relation(src: str, edge: str, dst: str) -> tuple[Relation, bool]:
    """The relation behind a meta-edge and whether it is walked against its direction.

    Raises
    ------
    ValueError
        No relation connects these node letters with this edge letter.
    """
    src_type, dst_type = ABBREV_NODE.get(src), ABBREV_NODE.get(dst)
    for rel in RELATIONS.values():
        if rel.abbrev != edge:
            continue
        if (rel.source_type, rel.target_type) == (src_type, dst_type):
            return rel, False
        if (rel.source_type, rel.target_type) == (dst_type, src_type):
            return rel, True
    known = sorted(
        f"{NODE_ABBREV[r.source_type]}{r.abbrev}{NODE_ABBREV[r.target_type]}"
        for r in RELATIONS.values()
        if r.abbrev and r.source_type in NODE_ABBREV and r.target_type in NODE_ABBREV
    )
    raise ValueError(f"meta-edge {src}{edge}{dst} is not defined; known: {', '.join(known)} (or reversed)")
