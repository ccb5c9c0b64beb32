"""Ontology work on HPO with networkx: ancestors, descendants.

Only this module uses networkx; bulk computation runs on the sparse matrices in
:mod:`kg.store`. The node type of each term, from its top-level branch, is
:func:`kg.schema.branch_types` (a dict walk, so that ``kg build`` loads no networkx).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import networkx as nx


def is_a_graph(parents: Mapping[str, Iterable[str]]) -> nx.DiGraph:
    """Directed graph with an edge child → parent for each ``is_a``."""
    graph = nx.DiGraph()
    graph.add_nodes_from(parents)
    graph.add_edges_from((child, parent) for child, ps in parents.items() for parent in ps)
    return graph


def ancestors(graph: nx.DiGraph, term: str) -> set[str]:
    """All superclasses of ``term`` (not including itself)."""
    return nx.descendants(graph, term)  # edges point child → parent


def descendants(graph: nx.DiGraph, term: str) -> set[str]:
    """All subclasses of ``term`` (not including itself)."""
    return nx.ancestors(graph, term)
