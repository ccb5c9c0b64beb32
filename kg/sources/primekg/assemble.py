"""Assembling parsed PrimeKG rows into the typed graph: node table with ``MONDO_grouped``
split into members, group edges copied to every member, canonical direction, and the
collapsing of duplicate rows (see :mod:`kg.sources.primekg`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from kg.sources.primekg.vocabulary import (
    _GROUPED,
    _PTYPES,
    _RELS,
    _SOURCES,
    ID_RULES,
    NODE_TYPES,
    RELATIONS,
    PrimeKGRelation,
)
from shared.errors import InputError

_MAX_DISPLAYS = 62  # display_relation sets are packed into one int64 bit mask per edge


@dataclass(frozen=True, slots=True)
class PrimeKGStats:
    """What the parser read, expanded and collapsed (``duplicates`` = the three kinds summed)."""

    rows_read: int
    rows_per_relation: dict[str, int]
    edges_per_relation: dict[str, int]
    exact_duplicates: int  # a row repeated verbatim (same direction, same display_relation)
    reverse_duplicates: int  # the other direction of an edge already read
    display_duplicates: int  # same edge, another display_relation (merged into one label)
    grouped_nodes: int  # distinct MONDO_grouped ids
    grouped_members: int  # distinct MONDO ids inside them
    grouped_rows: int  # rows with a MONDO_grouped end
    expansion_rows_added: int  # extra rows made by copying group edges to every member
    self_loops_dropped: int  # rows whose two ends are one node (after expansion)
    nodes_per_type: dict[str, int] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        """All rows dropped as copies of another row's edge."""
        return self.exact_duplicates + self.reverse_duplicates + self.display_duplicates

    def as_dict(self) -> dict:
        """JSON-ready counts."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["duplicates"] = self.duplicates
        return out


@dataclass(frozen=True, slots=True)
class PrimeKG:
    """The parsed graph.

    ``nodes`` (row position = node code): ``id`` (CURIE), ``type`` (project type),
    ``name``, ``source`` (PrimeKG ``x_source``), ``primekg_type``, ``primekg_id`` (the id
    as published; the group id for a member that only appears inside a group). Sorted by id.

    ``edges``: ``source``, ``target`` (int32 node codes), ``relation`` (PrimeKG name),
    ``project_relation`` (kg.schema name or missing) and ``display_relation`` (categoricals).
    One row per edge in canonical direction, sorted by relation, source, target.
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    stats: PrimeKGStats
    files: tuple[Path, ...]

    def edges_by_id(self) -> pd.DataFrame:
        """``edges`` with ``source`` and ``target`` as CURIEs (categoricals over node ids)."""
        ids = pd.Categorical.from_codes(self.edges["source"].to_numpy(), categories=self.nodes["id"])
        out = self.edges.assign(
            source=ids,
            target=pd.Categorical.from_codes(self.edges["target"].to_numpy(), dtype=ids.dtype),
        )
        return out


@dataclass(frozen=True, slots=True)
class _RawNodes:
    """Nodes as published (a MONDO_grouped id is still one node), with where each is seen."""

    source: np.ndarray  # int8 index into _SOURCES
    ident: np.ndarray  # object: published id
    ptype: np.ndarray  # int8 index into _PTYPES
    name: np.ndarray  # object
    file: Path
    line: np.ndarray  # int64 line of first sighting
    field: np.ndarray  # object: column of first sighting


@dataclass(frozen=True, slots=True)
class _Rows:
    """One entry per edge row: relation index, display code, raw node codes of both ends."""

    rel: np.ndarray  # int8 index into _RELS
    disp: np.ndarray  # int16 code into disp_labels
    disp_labels: list[str]
    x: np.ndarray  # int32 raw node code
    y: np.ndarray
    file: Path
    first_line: int  # file line of row 0


@dataclass(frozen=True, slots=True)
class _Members:
    """Final node codes of each raw node's members, as CSR (raw node → member codes)."""

    counts: np.ndarray  # int64 [raw nodes]: members per raw node
    indptr: np.ndarray  # int64 [raw nodes + 1]
    codes: np.ndarray  # int32: final node codes, grouped by raw node
    grouped: int  # distinct MONDO ids inside MONDO_grouped nodes


class _EndRows(NamedTuple):
    """Edge rows with both ends as final node codes (after group expansion)."""

    rel: np.ndarray  # int8 index into _RELS
    disp: np.ndarray  # int16 display code
    forward: np.ndarray  # bool: x is the relation's source type
    x: np.ndarray  # int32 final node code
    y: np.ndarray


@dataclass(frozen=True, slots=True)
class _Directed:
    """Edge rows in canonical direction, without self-loops."""

    rel: np.ndarray  # int8 index into _RELS
    src: np.ndarray  # int32 final node code
    dst: np.ndarray
    disp: np.ndarray  # int16 display code
    swap: np.ndarray  # bool: the row was read in the other direction


@dataclass(frozen=True, slots=True)
class _Collapsed:
    """Distinct edges and the rows left after dropping each kind of duplicate."""

    relation: np.ndarray  # int64 index into _RELS
    source: np.ndarray  # int64 node code
    target: np.ndarray
    display_mask: np.ndarray  # int64 bit mask of display codes
    rows: int  # rows packed (after expansion, self-loops dropped)
    directed: int  # distinct (edge, display, direction)
    displayed: int  # distinct (edge, display)


# --------------------------------------------------------------------------- assembling


def _curies(raw: _RawNodes) -> tuple[np.ndarray, np.ndarray]:
    """CURIEs of every raw node's members: (member → raw node code, member CURIE).

    Ids are checked and rewritten per source with vectorised string operations.
    """
    owners, curies = [], []
    for s, (name, rule) in enumerate(ID_RULES.items()):
        sel = np.flatnonzero(raw.source == s)
        if not len(sel):
            continue
        ids = pd.Series(raw.ident[sel], dtype=object).astype(str)
        ok = ids.str.fullmatch(rule.pattern).to_numpy(dtype=bool)
        if not ok.all():
            r = sel[int(np.flatnonzero(~ok)[0])]
            raise InputError(f"{raw.ident[r]!r} is not {rule.expected} (source {name})", file=raw.file,
                             line=int(raw.line[r]), field=str(raw.field[r]))
        if s == _GROUPED:
            parts = ids.str.split("_")
            owner = np.repeat(sel, parts.str.len().to_numpy())
            ids = pd.Series(np.concatenate(parts.to_numpy()) if len(parts) else [], dtype=object)
        else:
            owner = sel
        if rule.pad:
            ids = ids.str.zfill(rule.pad)
        owners.append(owner)
        curies.append((rule.prefix + ":" + ids).to_numpy(dtype=object))
    return np.concatenate(owners), np.concatenate(curies)


def _assemble(raw: _RawNodes, rows: _Rows, *, files: tuple[Path, ...]) -> PrimeKG:
    """Node table, group expansion, canonical direction and collapsing (steps 1–5 below)."""
    spec = [RELATIONS[n] for n in _RELS]
    # 1. node table: member CURIEs, sorted; a node seen on its own beats its group copy
    nodes, members = _node_table(raw)
    # 2. orientation per row, from the node types (rows are type-checked against relations)
    forward = _forward(raw, rows, spec)
    # 3. final node codes of both ends; a row with a group end is copied to every member pair
    in_group = np.flatnonzero((raw.source[rows.x] == _GROUPED) | (raw.source[rows.y] == _GROUPED))
    directed, loops = _canonical(_member_rows(rows, forward, in_group, members), spec)
    # 4. collapse: one in-place sort of a packed key (relation, source, target, display, swapped)
    n_disp = max(len(rows.disp_labels), 1)
    key = _packed_keys(directed, n_nodes=len(nodes), n_disp=n_disp, file=rows.file)
    del directed  # as long as the expanded rows (millions in PrimeKG): freed before the sort
    distinct = _collapse(key, n_nodes=len(nodes), n_disp=n_disp)
    # 5. labels: one string per distinct display set
    edges = _edge_table(distinct, rows.disp_labels, spec, n_disp=n_disp)
    stats = _stats(raw, rows, nodes, members, distinct, grouped_rows=len(in_group), loops=loops)
    return PrimeKG(nodes=nodes, edges=edges, stats=stats, files=files)


def _node_table(raw: _RawNodes) -> tuple[pd.DataFrame, _Members]:
    """The node table (one row per member CURIE, sorted) and each raw node's member codes."""
    owner, curie = _curies(raw)
    grouped = raw.source[owner] == _GROUPED
    members = pd.DataFrame({"id": curie, "grouped": grouped, "owner": owner})
    members = members.sort_values(["id", "grouped"], kind="stable")
    best = members.drop_duplicates("id")
    r = best["owner"].to_numpy()
    ptypes = np.asarray(_PTYPES, dtype=object)[raw.ptype[r]]
    nodes = pd.DataFrame({
        "id": best["id"].to_numpy(dtype=object),
        "type": pd.Series(ptypes).map(NODE_TYPES).to_numpy(dtype=object),
        "name": raw.name[r],
        "source": np.asarray(_SOURCES, dtype=object)[raw.source[r]],
        "primekg_type": ptypes,
        "primekg_id": raw.ident[r],
    })
    final = np.searchsorted(nodes["id"].to_numpy(dtype=object), curie).astype(np.int32)
    # CSR of raw node → final member codes
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=len(raw.source))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return nodes, _Members(counts=counts, indptr=indptr, codes=final[order],
                           grouped=int(pd.unique(curie[grouped]).size))


def _forward(raw: _RawNodes, rows: _Rows, spec: list[PrimeKGRelation]) -> np.ndarray:
    """Whether each row runs from its relation's source type to its target type (bool [rows])."""
    src_t = np.array([_PTYPES.index(s.source_type) for s in spec], dtype=np.int8)
    dst_t = np.array([_PTYPES.index(s.target_type) for s in spec], dtype=np.int8)
    xt, yt = raw.ptype[rows.x], raw.ptype[rows.y]
    forward = (xt == src_t[rows.rel]) & (yt == dst_t[rows.rel])
    backward = (xt == dst_t[rows.rel]) & (yt == src_t[rows.rel])
    bad = np.flatnonzero(~(forward | backward))
    if len(bad):
        i = int(bad[0])
        s = spec[rows.rel[i]]
        raise InputError(
            f"relation {s.name!r} joins {s.source_type} and {s.target_type}, not "
            f"{_PTYPES[xt[i]]} and {_PTYPES[yt[i]]}",
            file=rows.file, line=rows.first_line + i, field="relation",
        )
    return forward


def _member_rows(rows: _Rows, forward: np.ndarray, in_group: np.ndarray, members: _Members) -> _EndRows:
    """Rows with both ends as final node codes; the rows ``in_group`` become their member copies, appended."""
    first_member = members.codes[members.indptr[:-1]]
    ends = _EndRows(rows.rel, rows.disp, forward, first_member[rows.x], first_member[rows.y])
    if not len(in_group):
        return ends
    keep = np.ones(len(rows.rel), dtype=bool)
    keep[in_group] = False
    copies = _group_copies(rows, forward, in_group, members)
    return _EndRows._make(np.concatenate([a[keep], b]) for a, b in zip(ends, copies))


def _group_copies(rows: _Rows, forward: np.ndarray, in_group: np.ndarray, members: _Members) -> _EndRows:
    """The rows ``in_group``, one copy per (member of x, member of y) pair."""
    rel, disp, fwd, x, y = (a[in_group] for a in (rows.rel, rows.disp, forward, rows.x, rows.y))
    rep, offsets = _expand(members.counts[x])
    rel, disp, fwd, y = rel[rep], disp[rep], fwd[rep], y[rep]
    xf = members.codes[members.indptr[x[rep]] + offsets]
    rep, offsets = _expand(members.counts[y])
    rel, disp, fwd, xf = rel[rep], disp[rep], fwd[rep], xf[rep]
    yf = members.codes[members.indptr[y[rep]] + offsets]
    return _EndRows(rel, disp, fwd, xf, yf)


def _canonical(ends: _EndRows, spec: list[PrimeKGRelation]) -> tuple[_Directed, int]:
    """Rows in canonical direction (symmetric: lower node code first), self-loops dropped; and their count."""
    symmetric = np.array([s.symmetric for s in spec])
    swap = np.where(symmetric[ends.rel], ends.x > ends.y, ~ends.forward)
    src = np.where(swap, ends.y, ends.x)
    dst = np.where(swap, ends.x, ends.y)
    rel, disp = ends.rel, ends.disp
    loop = src == dst
    loops = int(np.count_nonzero(loop))
    if loops:
        keep = ~loop
        src, dst, rel, disp, swap = src[keep], dst[keep], rel[keep], disp[keep], swap[keep]
    return _Directed(rel=rel, src=src, dst=dst, disp=disp, swap=swap), loops


def _packed_keys(directed: _Directed, *, n_nodes: int, n_disp: int, file: Path) -> np.ndarray:
    """One int64 per row: (relation, source, target, display, swapped) in mixed radix."""
    if n_disp > _MAX_DISPLAYS:
        raise InputError(f"{n_disp} distinct display_relation values; at most {_MAX_DISPLAYS} are supported",
                         file=file, field="display_relation")
    bits = int(len(_RELS)).bit_length() + 2 * int(n_nodes).bit_length() + int(n_disp).bit_length() + 1
    if bits > 63:
        raise ValueError(f"graph too large to pack edge keys into 64 bits ({n_nodes} nodes)")
    key = directed.rel.astype(np.int64)
    for factor, value in ((n_nodes, directed.src), (n_nodes, directed.dst), (n_disp, directed.disp),
                          (2, directed.swap)):
        key *= factor
        key += value
    return key


def _collapse(key: np.ndarray, *, n_nodes: int, n_disp: int) -> _Collapsed:
    """Distinct edges of the packed keys (sorted in place), each with its display bit mask."""
    key.sort()
    u3 = key[_starts(key)]
    u2 = u3 >> 1
    u2 = u2[_starts(u2)]
    edge, d = np.divmod(u2, n_disp)
    starts = np.flatnonzero(_starts(edge))
    mask = np.bitwise_or.reduceat(np.left_shift(np.int64(1), d), starts) if len(d) else d
    edge = edge[starts]
    rest, target = np.divmod(edge, n_nodes)
    e_rel, source = np.divmod(rest, n_nodes)
    return _Collapsed(relation=e_rel, source=source, target=target, display_mask=mask,
                      rows=len(key), directed=len(u3), displayed=len(u2))


def _edge_table(distinct: _Collapsed, disp_labels: list[str], spec: list[PrimeKGRelation], *,
                n_disp: int) -> pd.DataFrame:
    """The edges frame: node codes, relation, project relation and one label per display set."""
    masks, mask_code = np.unique(distinct.display_mask, return_inverse=True)
    labels = [";".join(sorted(disp_labels[b] for b in range(n_disp) if (int(m) >> b) & 1)) for m in masks]
    rel_cat = pd.Categorical.from_codes(distinct.relation.astype(np.int16), categories=list(_RELS))
    projects = sorted({s.project for s in spec if s.project})
    proj_code = np.array([projects.index(s.project) if s.project else -1 for s in spec], dtype=np.int16)
    return pd.DataFrame({
        "source": distinct.source.astype(np.int32),
        "target": distinct.target.astype(np.int32),
        "relation": rel_cat,
        "project_relation": pd.Categorical.from_codes(proj_code[distinct.relation], categories=projects),
        "display_relation": pd.Categorical.from_codes(mask_code.astype(np.int32), categories=labels),
    })


def _stats(raw: _RawNodes, rows: _Rows, nodes: pd.DataFrame, members: _Members, distinct: _Collapsed, *,
           grouped_rows: int, loops: int) -> PrimeKGStats:
    """What was read, expanded and collapsed."""
    n = len(rows.rel)
    rows_per = np.bincount(rows.rel, minlength=len(_RELS))
    edges_per = np.bincount(distinct.relation, minlength=len(_RELS))
    return PrimeKGStats(
        rows_read=n,
        rows_per_relation={r: int(c) for r, c in zip(_RELS, rows_per) if c},
        edges_per_relation={r: int(c) for r, c in zip(_RELS, edges_per) if c},
        exact_duplicates=int(distinct.rows - distinct.directed),
        reverse_duplicates=int(distinct.directed - distinct.displayed),
        display_duplicates=int(distinct.displayed - len(distinct.relation)),
        grouped_nodes=int(np.count_nonzero(raw.source == _GROUPED)),
        grouped_members=members.grouped,
        grouped_rows=grouped_rows,
        expansion_rows_added=int(distinct.rows + loops - n),
        self_loops_dropped=loops,
        nodes_per_type={str(k): int(v) for k, v in nodes["type"].value_counts().sort_index().items()},
    )


def _starts(sorted_values: np.ndarray) -> np.ndarray:
    """Boolean mask of the first element of every run of equal values."""
    out = np.ones(len(sorted_values), dtype=bool)
    if len(sorted_values) > 1:
        np.not_equal(sorted_values[1:], sorted_values[:-1], out=out[1:])
    return out


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry ``i`` repeated ``counts[i]`` times, and the position 0 … counts[i]-1 of each copy."""
    rep = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return rep, np.arange(len(rep)) - starts[rep]
