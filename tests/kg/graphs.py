"""Small named graphs for tests, built straight from node and edge tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kg.schema import EDGE_COLUMNS
from kg.store import KnowledgeGraph


def make_graph(nodes: list[tuple[str, str]], edges: list[tuple[str, str, str]]) -> KnowledgeGraph:
    """Graph from (id, type) nodes and (source, relation, target) edges."""
    node_table = pd.DataFrame({"id": [n for n, _ in nodes], "type": [t for _, t in nodes],
                               "name": [n for n, _ in nodes], "source": "test", "obsolete": False})
    edge_table = pd.DataFrame([(s, t, r, 1.0, "test", "", "", "") for s, r, t in edges], columns=list(EDGE_COLUMNS))
    return KnowledgeGraph(
        nodes=node_table, edges=edge_table,
        synonyms=pd.DataFrame(columns=["id", "synonym", "scope"]),
        xrefs=pd.DataFrame(columns=["id", "xref", "kind"]),
        labs=pd.DataFrame(columns=["id", "name", "unit", "low", "high", "citation"]),
    )


def hand_graph() -> KnowledgeGraph:
    """Two diseases, four phenotypes, one gene, one drug; small enough to count by hand.

    D1 –h→ P1, P2, P3      D2 –h→ P3, P4      P1 is_a P3 (P3 is the parent)
    D1 –a→ G1 –h→ P2, P4    C1 –t→ D1        C1 –e→ P4
    """
    nodes = [("D1", "disease"), ("D2", "disease"), ("P1", "phenotype"), ("P2", "phenotype"),
             ("P3", "phenotype"), ("P4", "phenotype"), ("G1", "gene"), ("C1", "drug")]
    edges = [("D1", "has_phenotype", "P1"), ("D1", "has_phenotype", "P2"), ("D1", "has_phenotype", "P3"),
             ("D2", "has_phenotype", "P3"), ("D2", "has_phenotype", "P4"), ("P1", "is_a", "P3"),
             ("D1", "associated_gene", "G1"), ("G1", "gene_phenotype", "P2"), ("G1", "gene_phenotype", "P4"),
             ("C1", "indication", "D1"), ("C1", "drug_effect", "P4")]
    return make_graph(nodes, edges)


def random_graph(seed: int, *, diseases: int = 6, phenotypes: int = 9, genes: int = 4, drugs: int = 3,
                 labs: int = 3, density: float = 0.35) -> KnowledgeGraph:
    """A random typed graph covering every walkable relation (for brute-force agreement)."""
    rng = np.random.default_rng(seed)
    ids = {"disease": [f"D{i}" for i in range(diseases)], "phenotype": [f"P{i}" for i in range(phenotypes)],
           "gene": [f"G{i}" for i in range(genes)], "drug": [f"C{i}" for i in range(drugs)],
           "lab": [f"L{i}" for i in range(labs)]}
    nodes = [(n, t) for t, ns in ids.items() for n in ns]
    edges: list[tuple[str, str, str]] = []
    for rel, src, dst in (("has_phenotype", "disease", "phenotype"), ("associated_gene", "disease", "gene"),
                          ("gene_phenotype", "gene", "phenotype"), ("indication", "drug", "disease"),
                          ("drug_effect", "drug", "phenotype"), ("measured_by", "phenotype", "lab")):
        for s in ids[src]:
            for t in ids[dst]:
                if rng.random() < density:
                    edges.append((s, rel, t))
    ph = ids["phenotype"]
    for i in range(1, len(ph)):  # a random tree plus a few extra parents: a DAG, no self loops
        for j in rng.choice(i, size=min(i, 1 + int(rng.random() < 0.3)), replace=False):
            edges.append((ph[i], "is_a", ph[int(j)]))
    return make_graph(nodes, edges)
