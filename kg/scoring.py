"""Meta-path scores as sparse matrix products: path count, degree-weighted path count
(DWPC) and PathSim. Paths are never enumerated.

References
----------
- Himmelstein & Baranzini (2015), "Heterogeneous network edge prediction: a data
  integration approach to prioritize disease-associated genes", PLoS Comput Biol 11(7):
  e1004259 — DWPC, Methods "Features" (path degree product with damping w).
- Himmelstein et al. (2017), "Systematic integration of biomedical knowledge prioritizes
  drugs for repurposing", eLife 6:e26726 — DWPC as matrix products (the hetmat method).
- Sun et al. (2011), "PathSim: meta path-based top-k similarity search in heterogeneous
  information networks", PVLDB 4(11) — Definition 4 (PathSim).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp

from kg.metapaths import MetaPath, parse_metapath
from kg.store import KnowledgeGraph, LabeledMatrix

Metric = Literal["pc", "dwpc"]
METRICS: tuple[str, ...] = ("pc", "dwpc")


def metapath_scores(
    graph: KnowledgeGraph,
    metapath: str,
    *,
    metric: Metric = "dwpc",
    damping: float = 0.4,
    sources: Sequence[str] | None = None,
) -> LabeledMatrix:
    """Path count or DWPC from each source node to every target node along ``metapath``.

    ======================  =====================================================
    variable                symbol (Himmelstein & Baranzini 2015)
    ======================  =====================================================
    ``steps[k]``            adjacency A_k of meta-edge k (binary, no self loops)
    ``damping``             w, the degree damping exponent (0.4 in Hetionet)
    ``out_deg``, ``in_deg`` D_out(A_k), D_in(A_k): edges of meta-edge k per node
    result                  PC = Π A_k ; DWPC = Π D_out^-w A_k D_in^-w
    ======================  =====================================================

    1. Each meta-edge becomes a binary sparse matrix (symmetric relations such as is_a
       are walked both ways: A + Aᵀ).
    2. For DWPC every matrix is scaled by its own node degrees raised to -w, so each path
       is weighted by the product of the degrees along it (Eq. in Methods, "DWPC").
    3. The matrices are multiplied left to right, starting from the source rows only.
    4. Walks that revisit a node are not paths. Where a node type repeats at two
       non-adjacent positions, the diagonal of that segment's product is removed
       (exact for disjoint or nested repeats; overlapping repeats raise).

    Parameters
    ----------
    graph
        A built graph.
    metapath
        Abbreviation string, e.g. ``"DaGhP"``.
    metric
        ``"pc"`` path count or ``"dwpc"`` degree-weighted path count.
    damping
        w ≥ 0; only used by DWPC.
    sources
        Source node ids (rows of the result); all nodes of the source type when None.

    Returns
    -------
    LabeledMatrix
        Rows: ``sources`` (in the given order); columns: all nodes of the target type;
        CSR values: the score.

    Raises
    ------
    ValueError
        Unknown metric or meta-path, negative damping, overlapping repeated node types,
        or a source id that is not a node of the source type.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not np.isfinite(damping) or damping < 0:
        raise ValueError(f"damping must be a finite number ≥ 0, got {damping!r}")
    path = parse_metapath(metapath)
    return _SCORERS[metric](graph, path, damping=damping, sources=sources)


def _pc(graph: KnowledgeGraph, path: MetaPath, *, damping: float, sources: Sequence[str] | None) -> LabeledMatrix:
    """Path count (damping unused)."""
    return _product(graph, path, damping=0.0, sources=sources)


def _dwpc(graph: KnowledgeGraph, path: MetaPath, *, damping: float, sources: Sequence[str] | None) -> LabeledMatrix:
    """Degree-weighted path count."""
    return _product(graph, path, damping=damping, sources=sources)


_SCORERS = {"pc": _pc, "dwpc": _dwpc}


def step_matrices(graph: KnowledgeGraph, path: MetaPath) -> list[LabeledMatrix]:
    """Binary adjacency of every meta-edge, oriented along the path."""
    out = []
    for step in path.steps:
        adj = graph.adjacency(step.relation.name)
        m = adj.matrix
        rows, cols = adj.row_ids, adj.col_ids
        if step.relation.symmetric:
            m = ((m + m.T) > 0).astype(np.float64)
            m.setdiag(0)
        elif step.reverse:
            m, rows, cols = m.T, cols, rows
        m = sp.csr_matrix(m)
        m.eliminate_zeros()
        out.append(LabeledMatrix(rows, cols, m))
    return out


def _degree_weighted(m: sp.csr_matrix, damping: float) -> sp.csr_matrix:
    """D_out^-w · A · D_in^-w (degrees of zero stay zero)."""
    if damping == 0:
        return m
    out_deg = np.asarray(m.sum(axis=1)).ravel()
    in_deg = np.asarray(m.sum(axis=0)).ravel()
    with np.errstate(divide="ignore"):
        row_w = np.where(out_deg > 0, out_deg ** -damping, 0.0)
        col_w = np.where(in_deg > 0, in_deg ** -damping, 0.0)
    return sp.csr_matrix(sp.diags(row_w) @ m @ sp.diags(col_w))


def _repeat_pairs(types: tuple[str, ...]) -> dict[int, int]:
    """Start → end of each pair of non-adjacent positions with the same node type.

    Raises ValueError for overlapping pairs (e.g. D P D P) or a type seen three times.
    """
    pairs: dict[int, int] = {}
    for i, t in enumerate(types):
        same = [j for j in range(i + 1, len(types)) if types[j] == t]
        for j in same:
            if j > i + 1:
                pairs[i] = j
    spans = sorted(pairs.items())
    for a, (i, j) in enumerate(spans):
        for k, l in spans[a + 1 :]:
            if i < k < j < l:
                raise ValueError("meta-paths with overlapping repeated node types are not supported")
    counts = {t: types.count(t) for t in set(types)}
    for t, n in counts.items():
        positions = [i for i, x in enumerate(types) if x == t]
        if n > 2 and any(b - a > 1 for a, b in zip(positions, positions[1:])):
            raise ValueError(f"node type {t!r} appears {n} times non-adjacently; not supported")
    return pairs


def _product(graph: KnowledgeGraph, path: MetaPath, *, damping: float, sources: Sequence[str] | None) -> LabeledMatrix:
    mats = step_matrices(graph, path)
    weighted = [_degree_weighted(m.matrix, damping) for m in mats]
    first = mats[0]
    if sources is None:
        row_ids = first.row_ids
        rows = np.arange(len(row_ids))
    else:
        index = {n: i for i, n in enumerate(first.row_ids)}
        missing = [s for s in sources if s not in index]
        if missing:
            raise ValueError(f"{missing[0]} is not a {path.source_type} node of the graph")
        row_ids = tuple(sources)
        rows = np.fromiter((index[s] for s in sources), dtype=np.int64, count=len(sources))
    pairs = _repeat_pairs(path.node_types)
    col_ids = mats[-1].col_ids

    def segment(a: int, b: int, row_subset: np.ndarray | None) -> sp.csr_matrix:
        """Product of meta-edges a..b-1 (positions a → b), inner repeats removed."""
        acc: sp.csr_matrix | None = None
        k = a
        while k < b:
            if k in pairs and pairs[k] <= b and (k, pairs[k]) != (a, b):
                part = segment(k, pairs[k], row_subset if acc is None else None)
                k = pairs[k]
            else:
                part = weighted[k]
                if acc is None and row_subset is not None:
                    part = part[row_subset]
                k += 1
            acc = part if acc is None else sp.csr_matrix(acc @ part)
        assert acc is not None  # a < b always holds here
        if pairs.get(a) == b:
            acc = _drop_same_node(acc, mats[a].row_ids if row_subset is None else tuple(mats[a].row_ids[i] for i in row_subset),
                                  mats[b - 1].col_ids)
        return acc

    result = segment(0, len(mats), rows)
    result = sp.csr_matrix(result)
    result.eliminate_zeros()
    return LabeledMatrix(row_ids, col_ids, result)


def _drop_same_node(m: sp.csr_matrix, row_ids: Sequence[str], col_ids: Sequence[str]) -> sp.csr_matrix:
    """Zero the entries whose row and column are the same node (walks that return)."""
    col_index = {n: j for j, n in enumerate(col_ids)}
    pairs = [(i, col_index[n]) for i, n in enumerate(row_ids) if n in col_index]
    if not pairs:
        return m
    rows, cols = (np.array(x, dtype=np.int64) for x in zip(*pairs))
    values = np.asarray(m[rows, cols]).ravel()
    m = sp.csr_matrix(m - sp.csr_matrix((values, (rows, cols)), shape=m.shape))
    m.eliminate_zeros()
    return m


#: Most entries of M = H·Hᵀ that PathSim forms at once (a block of source rows); bounds the
#: memory of the product whatever the number of sources (≈ 16 bytes per entry in flight).
PATHSIM_BLOCK_ENTRIES = 1 << 22


def pathsim(
    graph: KnowledgeGraph,
    metapath: str,
    *,
    sources: Sequence[str],
    top_k: int | None = None,
) -> LabeledMatrix:
    """PathSim similarity of each source to every node of the same type (Sun et al. 2011).

    s(x, y) = 2·M[x, y] / (M[x, x] + M[y, y]), with M = H·Hᵀ the walk count of a symmetric
    meta-path whose first half has walk-count matrix H.

    ==============  ==========================================
    variable        symbol (Sun et al. 2011, Definition 4)
    ==============  ==========================================
    ``h``           H, walk counts of the first half path
    ``diag``        M[y, y] = |H[y]|², from row norms of H
    ``block``       rows of M for a block of sources, H[rows]·Hᵀ
    ==============  ==========================================

    1. H is formed once (sparse), and the diagonal of M from its row norms.
    2. Sources are split into blocks whose product H[block]·Hᵀ has at most
       :data:`PATHSIM_BLOCK_ENTRIES` entries (an upper bound computed from the column
       counts of H), so even every disease against every disease never forms all of M
       at once, let alone densely.
    3. Per block: similarities, the source itself dropped, and with ``top_k`` only the k
       largest per row kept before the next block starts, so memory stays bounded by the
       block and the k·|sources| kept entries.

    Parameters
    ----------
    metapath
        A symmetric meta-path with an even number of meta-edges, e.g. ``"DhPhD"``.
    sources
        Row node ids.
    top_k
        Keep only the k largest similarities per row (the source itself excluded; ties
        broken by column order).

    Returns
    -------
    LabeledMatrix
        Rows: ``sources``; columns: every node of the source type; CSR, zeros not stored.

    Raises
    ------
    ValueError
        The meta-path is not symmetric with a middle node, top_k < 1, or a bad source.
    """
    path = parse_metapath(metapath)
    if not path.is_symmetric or len(path.steps) % 2:
        raise ValueError(f"PathSim needs a symmetric meta-path with a middle node type (like DhPhD), got {metapath!r}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}")
    half_name = metapath[: len(metapath) // 2 + 1]
    half = _product(graph, parse_metapath(half_name), damping=0.0, sources=None)
    h = sp.csr_matrix(half.matrix)
    index = {n: i for i, n in enumerate(half.row_ids)}
    missing = [s for s in sources if s not in index]
    if missing:
        raise ValueError(f"{missing[0]} is not a {path.source_type} node of the graph")
    rows = np.fromiter((index[s] for s in sources), dtype=np.int64, count=len(sources))
    diag = np.asarray(h.multiply(h).sum(axis=1)).ravel()  # M[y, y] = |H[y]|²
    ht = sp.csr_matrix(h.T)
    # entries of H[x]·Hᵀ are at most Σ_j [H[x, j] ≠ 0] · nnz(column j of H)
    pattern = h[rows]
    pattern.data = np.ones_like(pattern.data)
    bound = pattern @ np.diff(ht.indptr).astype(np.float64)
    parts = []
    for lo, hi in _blocks(bound, PATHSIM_BLOCK_ENTRIES):
        block = sp.csr_matrix(h[rows[lo:hi]] @ ht)
        block.sort_indices()  # column order within rows: ties in top_k go to the lower column
        r = np.repeat(np.arange(hi - lo), np.diff(block.indptr))
        c = block.indices.astype(np.int64)
        denom = diag[rows[lo:hi]][r] + diag[c]
        sim = np.where(denom > 0, 2.0 * block.data / np.where(denom > 0, denom, 1.0), 0.0)
        keep = (c != rows[lo:hi][r]) & (sim != 0)
        r, c, sim = r[keep], c[keep], sim[keep]
        if top_k is not None:
            r, c, sim = _top_k(r, c, sim, top_k)
        parts.append((r + lo, c, sim))
        del block
    if parts:
        r, c, sim = (np.concatenate(x) for x in zip(*parts))
    else:
        r, c, sim = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    out = sp.csr_matrix((sim, (r, c)), shape=(len(rows), h.shape[0]))
    out.eliminate_zeros()
    return LabeledMatrix(tuple(sources), half.row_ids, out)


def _blocks(bound: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) row ranges whose summed ``bound`` stays within ``budget`` (≥ 1 row each)."""
    out, lo, acc = [], 0, 0.0
    for i, b in enumerate(bound):
        if i > lo and acc + b > budget:
            out.append((lo, i))
            lo, acc = i, 0.0
        acc += b
    if lo < len(bound):
        out.append((lo, len(bound)))
    return out


def _top_k(r: np.ndarray, c: np.ndarray, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k largest values per row of a COO triple sorted by (row, column); ties go to the
    lower column. Rows of at most k entries are kept whole; longer rows find their k-th
    largest value with a linear-time partition (no sort of the whole block)."""
    n_rows = int(r[-1]) + 1 if len(r) else 0
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n_rows))])
    keep = np.ones(len(r), dtype=bool)
    for i in np.flatnonzero(np.diff(indptr) > k):
        lo, hi = indptr[i], indptr[i + 1]
        vals = v[lo:hi]
        kth = np.partition(vals, len(vals) - k)[len(vals) - k]  # the k-th largest
        above = vals > kth
        ties = np.flatnonzero(vals == kth)[: k - int(np.count_nonzero(above))]
        row_keep = above
        row_keep[ties] = True
        keep[lo:hi] = row_keep
    return r[keep], c[keep], v[keep]
