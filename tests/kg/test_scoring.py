"""Meta-path scores: sparse products agree with brute-force path enumeration."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest

from kg.metapaths import FEATURE_METAPATHS, SIMILARITY_METAPATHS, parse_metapath
from kg.scoring import metapath_scores, pathsim
from kg.store import KnowledgeGraph
from tests.kg.graphs import hand_graph, make_graph, random_graph


def _neighbours(graph: KnowledgeGraph, metapath: str) -> list[dict[str, set[str]]]:
    """Per step: node → next nodes, read straight from the edge table."""
    out = []
    for step in parse_metapath(metapath).steps:
        e = graph.edges_of(step.relation.name)
        nbr: dict[str, set[str]] = defaultdict(set)
        for s, t in zip(e["source"], e["target"]):
            if step.relation.symmetric:
                nbr[s].add(t)
                nbr[t].add(s)
            elif step.reverse:
                nbr[t].add(s)
            else:
                nbr[s].add(t)
        out.append(nbr)
    return out


def brute_force(graph: KnowledgeGraph, metapath: str, damping: float) -> dict[tuple[str, str], tuple[int, float]]:
    """Enumerate every path (no repeated node) and sum its degree product, as in Hetionet."""
    steps = _neighbours(graph, metapath)
    indeg = []
    for nbr in steps:
        d: dict[str, int] = defaultdict(int)
        for targets in nbr.values():
            for t in targets:
                d[t] += 1
        indeg.append(d)
    path = parse_metapath(metapath)
    result: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
    for start in graph.ids_of_type(path.source_type):
        frontier = [[start]]
        for nbr in steps:
            frontier = [p + [n] for p in frontier for n in sorted(nbr.get(p[-1], ())) if n not in p]
        for p in frontier:
            w = 1.0
            for k, (u, v) in enumerate(itertools.pairwise(p)):
                w *= (len(steps[k][u]) * indeg[k][v]) ** -damping
            acc = result[(p[0], p[-1])]
            acc[0] += 1
            acc[1] += w
    return {k: (v[0], v[1]) for k, v in result.items()}


def _as_dict(lm) -> dict[tuple[str, str], float]:
    m = lm.matrix.tocoo()
    return {(lm.row_ids[i], lm.col_ids[j]): float(v) for i, j, v in zip(m.row, m.col, m.data)}


ALL_METAPATHS = [*FEATURE_METAPATHS, *SIMILARITY_METAPATHS, "DhPiPiP", "DaGhPhD", "DtCeP", "DhPhDtC"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metapath", ALL_METAPATHS)
def test_sparse_products_match_brute_force(seed: int, metapath: str) -> None:
    graph = random_graph(seed)
    expected = brute_force(graph, metapath, damping=0.4)
    pc = _as_dict(metapath_scores(graph, metapath, metric="pc"))
    dwpc = _as_dict(metapath_scores(graph, metapath, metric="dwpc", damping=0.4))
    assert pc == {k: float(v[0]) for k, v in expected.items() if v[0]}
    assert dwpc.keys() == pc.keys()
    for key, (_, value) in expected.items():
        assert dwpc[key] == pytest.approx(value, rel=1e-9)


def test_hand_counted_values() -> None:
    g = hand_graph()
    pc = _as_dict(metapath_scores(g, "DhPiP", metric="pc"))
    # D1's P1 has parent P3; D1's P3 has child P1; D2's P3 has child P1.
    assert pc == {("D1", "P3"): 1.0, ("D1", "P1"): 1.0, ("D2", "P1"): 1.0}
    dw = _as_dict(metapath_scores(g, "DhP", metric="dwpc", damping=0.5))
    # D1 has 3 phenotypes, P3 has 2 diseases: (3 · 2) ** -0.5
    assert dw[("D1", "P3")] == pytest.approx(1 / math.sqrt(6))
    assert _as_dict(metapath_scores(g, "DtCeP", metric="pc")) == {("D1", "P4"): 1.0}
    assert _as_dict(metapath_scores(g, "DaGhP", metric="pc")) == {("D1", "P2"): 1.0, ("D1", "P4"): 1.0}
    # D1 and D2 share one phenotype (P3): a path; D1 → D1 walks are excluded.
    assert _as_dict(metapath_scores(g, "DhPhD", metric="pc")) == {("D1", "D2"): 1.0, ("D2", "D1"): 1.0}


def test_pathsim_known_values() -> None:
    g = hand_graph()
    sim = pathsim(g, "DhPhD", sources=["D1", "D2"])
    # M = H Hᵀ with |D1| = 3 phenotypes, |D2| = 2, one shared: 2·1 / (3 + 2)
    assert _as_dict(sim) == {("D1", "D2"): pytest.approx(0.4), ("D2", "D1"): pytest.approx(0.4)}
    assert sim.matrix.shape == (2, 2)


@pytest.mark.parametrize("seed", [3, 4])
def test_pathsim_matches_definition_and_top_k(seed: int) -> None:
    g = random_graph(seed, diseases=10)
    diseases = list(g.ids_of_type("disease"))
    h = {d: set(g.edges_of("has_phenotype").query("source == @d")["target"]) for d in diseases}
    sim = _as_dict(pathsim(g, "DhPhD", sources=diseases))
    for x, y in itertools.permutations(diseases, 2):
        denom = len(h[x]) + len(h[y])
        expected = 2 * len(h[x] & h[y]) / denom if denom else 0.0
        assert sim.get((x, y), 0.0) == pytest.approx(expected)
    top = pathsim(g, "DhPhD", sources=diseases, top_k=2)
    assert max(np.diff(top.matrix.indptr)) <= 2
    for i, x in enumerate(diseases):
        row = sorted((v for (a, _), v in sim.items() if a == x), reverse=True)[:2]
        assert sorted(top.matrix.getrow(i).data, reverse=True) == pytest.approx(row)


def test_sources_restrict_rows_and_keep_values() -> None:
    g = random_graph(5)
    full = metapath_scores(g, "DhPhD", metric="dwpc")
    part = metapath_scores(g, "DhPhD", metric="dwpc", sources=["D3", "D1"])
    assert part.row_ids == ("D3", "D1")
    for i, d in enumerate(part.row_ids):
        assert np.allclose(part.matrix.getrow(i).toarray(), full.matrix.getrow(full.row(d)).toarray())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: metapath_scores(g, "DxP"), "not defined"),
        (lambda g: metapath_scores(g, "dhp"), "must alternate"),
        (lambda g: metapath_scores(g, "DhP", metric="wc"), "metric must be one of"),
        (lambda g: metapath_scores(g, "DhP", damping=-1), "damping"),
        (lambda g: metapath_scores(g, "DhPhDhP"), "overlapping"),
        (lambda g: metapath_scores(g, "DhP", sources=["P1"]), "not a disease node"),
        (lambda g: pathsim(g, "DhP", sources=["D1"]), "symmetric"),
        (lambda g: pathsim(g, "DhPhD", sources=["D1"], top_k=0), "top_k"),
    ],
)
def test_bad_arguments_raise_value_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(hand_graph())


REAL_DISEASES = ["ORPHA:558", "ORPHA:355", "ORPHA:324", "ORPHA:905", "ORPHA:586"]


@pytest.mark.parametrize("metapath", ["DhP", "DhPiP", "DaGhP", "DtCeP", "DhPmL"])
def test_real_graph_scores_match_brute_force_for_a_few_diseases(real_graph, metapath: str) -> None:
    expected = brute_force_rows(real_graph, metapath, REAL_DISEASES)
    pc = _as_dict(metapath_scores(real_graph, metapath, metric="pc", sources=REAL_DISEASES))
    assert pc == expected


def brute_force_rows(graph: KnowledgeGraph, metapath: str, sources: list[str]) -> dict[tuple[str, str], float]:
    """Path counts from a few sources only (the real graph is too big to enumerate fully)."""
    steps = _neighbours(graph, metapath)
    path = parse_metapath(metapath)
    types = graph.node_types
    out: dict[tuple[str, str], float] = defaultdict(float)
    for start in sources:
        frontier = [[start]]
        for step, nbr in zip(path.steps, steps):
            frontier = [p + [n] for p in frontier for n in nbr.get(p[-1], ())
                        if n not in p and types.get(n) == step.target_type]
        for p in frontier:
            out[(p[0], p[-1])] += 1.0
    return dict(out)


def test_real_marfan_phenotype_count(real_graph) -> None:
    pc = metapath_scores(real_graph, "DhP", metric="pc", sources=["ORPHA:558"])
    annotated = real_graph.edges_of("has_phenotype").query("source == 'ORPHA:558'")
    assert pc.matrix.nnz == annotated["target"].nunique() > 50
    assert pc.matrix[0, pc.col_ids.index("HP:0001166")] == 1.0  # Arachnodactyly


def _shared_phenotype_graph(n: int) -> KnowledgeGraph:
    """n diseases that all share one phenotype (and each has one of its own): M = H·Hᵀ is full."""
    from tests.kg.graphs import make_graph

    nodes = [(f"D{i:05d}", "disease") for i in range(n)] + [(f"P{i:05d}", "phenotype") for i in range(n + 1)]
    edges = [(f"D{i:05d}", "has_phenotype", f"P{n:05d}") for i in range(n)]
    edges += [(f"D{i:05d}", "has_phenotype", f"P{i:05d}") for i in range(n)]
    return make_graph(nodes, edges)


@pytest.mark.parametrize("budget", [1, 7, 1 << 22])
def test_pathsim_blocks_agree_with_one_block(monkeypatch, budget: int) -> None:
    g = random_graph(6, diseases=25, density=0.5)
    diseases = list(g.ids_of_type("disease"))
    whole = pathsim(g, "DhPhD", sources=diseases, top_k=4)
    monkeypatch.setattr("kg.scoring.PATHSIM_BLOCK_ENTRIES", budget)
    blocked = pathsim(g, "DhPhD", sources=diseases, top_k=4)
    assert _as_dict(blocked) == pytest.approx(_as_dict(whole))
    # without top_k, blocks change nothing either, whatever the row order
    assert _as_dict(pathsim(g, "DhPhD", sources=diseases[::-1])) == pytest.approx(
        _as_dict(pathsim(g, "DhPhD", sources=diseases)))


def test_pathsim_all_against_all_never_forms_the_full_product(monkeypatch) -> None:
    """3,000 diseases sharing a phenotype: all of M would be 9 M entries (> 100 MB as CSR);
    with top_k the blocked computation stays far below that."""
    import tracemalloc

    n = 3_000
    g = _shared_phenotype_graph(n)
    diseases = list(g.ids_of_type("disease"))
    pathsim(g, "DhPhD", sources=diseases[:2], top_k=3)  # warm the adjacency cache outside the measurement
    monkeypatch.setattr("kg.scoring.PATHSIM_BLOCK_ENTRIES", 1 << 16)
    tracemalloc.start()
    try:
        sim = pathsim(g, "DhPhD", sources=diseases, top_k=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sim.matrix.format == "csr" and sim.matrix.shape == (n, n)
    assert max(np.diff(sim.matrix.indptr)) == 3 and sim.matrix.nnz == 3 * n
    # every pair shares exactly the one phenotype: 2·1 / (2 + 2)
    assert np.allclose(sim.matrix.data, 0.5)
    assert peak < 20 * 2**20, f"PathSim peaked at {peak / 2**20:.0f} MiB"


def test_faers_signals_of_a_disease_drugs_score_as_adverse_events() -> None:
    """DtCsP: drug indicated for the disease –FAERS signal→ phenotype (0 where the graph has no FAERS)."""
    g = make_graph([("D1", "disease"), ("D2", "disease"), ("C1", "drug"), ("P1", "phenotype"), ("P2", "phenotype")],
                   [("C1", "indication", "D1"), ("C1", "faers_signal", "P1"), ("C1", "drug_effect", "P2")])
    scores = metapath_scores(g, "DtCsP", metric="pc", sources=["D1", "D2"])
    assert scores.matrix.toarray().tolist() == [[1.0, 0.0], [0.0, 0.0]] and scores.col_ids == ("P1", "P2")
    assert metapath_scores(hand_graph(), "DtCsP", metric="pc", sources=["D1"]).matrix.nnz == 0
