"""Ontology work on HPO with networkx: ancestors, descendants, branches.

Only this module uses networkx; bulk computation runs on the sparse matrices in
:mod:`kg.store`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

import networkx as nx

from kg.schema import HPO_BRANCHES


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
