"""Assembling parsed PrimeKG rows into the typed graph: node table with ``MONDO_grouped``
split into members, group edges copied to every member, canonical direction, and the
collapsing of duplicate rows (see :mod:`kg.sources.primekg`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    # 1. node table: member CURIEs, sorted; a node seen on its own beats its group copy
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
    member_codes = final[order]

    # 2. orientation per row, from the node types (rows are type-checked against relations)
    spec = [RELATIONS[n] for n in _RELS]
    src_t = np.array([_PTYPES.index(s.source_type) for s in spec], dtype=np.int8)
    dst_t = np.array([_PTYPES.index(s.target_type) for s in spec], dtype=np.int8)
    symmetric = np.array([s.symmetric for s in spec])
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
    del xt, yt, backward

    # 3. final node codes of both ends; a row with a group end is copied to every member pair
    n = len(rows.rel)
    in_group = np.flatnonzero((raw.source[rows.x] == _GROUPED) | (raw.source[rows.y] == _GROUPED))
    first_member = member_codes[indptr[:-1]]
    rel, disp, fwd = rows.rel, rows.disp, forward
    xf, yf = first_member[rows.x], first_member[rows.y]
    if len(in_group):
        keep = np.ones(n, dtype=bool)
        keep[in_group] = False
        g_rel, g_disp, g_fwd, g_x, g_y = (a[in_group] for a in (rel, disp, fwd, rows.x, rows.y))
        rep, offsets = _expand(counts[g_x])
        g_rel, g_disp, g_fwd, g_y = g_rel[rep], g_disp[rep], g_fwd[rep], g_y[rep]
        g_xf = member_codes[indptr[g_x[rep]] + offsets]
        rep, offsets = _expand(counts[g_y])
        g_rel, g_disp, g_fwd, g_xf = g_rel[rep], g_disp[rep], g_fwd[rep], g_xf[rep]
        g_yf = member_codes[indptr[g_y[rep]] + offsets]
        rel, disp, fwd, xf, yf = (np.concatenate([a[keep], b]) for a, b in (
            (rel, g_rel), (disp, g_disp), (fwd, g_fwd), (xf, g_xf), (yf, g_yf)))
        del keep, g_rel, g_disp, g_fwd, g_x, g_y, g_xf, g_yf, rep, offsets
    swap = np.where(symmetric[rel], xf > yf, ~fwd)
    src = np.where(swap, yf, xf)
    dst = np.where(swap, xf, yf)
    del xf, yf, fwd
    loop = src == dst
    loops = int(np.count_nonzero(loop))
    if loops:
        keep = ~loop
        src, dst, rel, disp, swap = src[keep], dst[keep], rel[keep], disp[keep], swap[keep]
    del loop

    # 4. collapse: one in-place sort of a packed key (relation, source, target, display, swapped)
    n_nodes, n_disp = len(nodes), max(len(rows.disp_labels), 1)
    if n_disp > _MAX_DISPLAYS:
        raise InputError(f"{n_disp} distinct display_relation values; at most {_MAX_DISPLAYS} are supported",
                         file=rows.file, field="display_relation")
    bits = int(len(_RELS)).bit_length() + 2 * int(n_nodes).bit_length() + int(n_disp).bit_length() + 1
    if bits > 63:
        raise ValueError(f"graph too large to pack edge keys into 64 bits ({n_nodes} nodes)")
    key = rel.astype(np.int64)
    for factor, value in ((n_nodes, src), (n_nodes, dst), (n_disp, disp), (2, swap)):
        key *= factor
        key += value
    del src, dst, disp, swap, rel
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

    # 5. labels: one string per distinct display set
    masks, mask_code = np.unique(mask, return_inverse=True)
    labels = [";".join(sorted(rows.disp_labels[b] for b in range(n_disp) if (int(m) >> b) & 1)) for m in masks]
    rel_cat = pd.Categorical.from_codes(e_rel.astype(np.int16), categories=list(_RELS))
    projects = sorted({s.project for s in spec if s.project})
    proj_code = np.array([projects.index(s.project) if s.project else -1 for s in spec], dtype=np.int16)
    edges = pd.DataFrame({
        "source": source.astype(np.int32),
        "target": target.astype(np.int32),
        "relation": rel_cat,
        "project_relation": pd.Categorical.from_codes(proj_code[e_rel], categories=projects),
        "display_relation": pd.Categorical.from_codes(mask_code.astype(np.int32), categories=labels),
    })
    rows_per = np.bincount(rows.rel, minlength=len(_RELS))
    edges_per = np.bincount(e_rel, minlength=len(_RELS))
    stats = PrimeKGStats(
        rows_read=n,
        rows_per_relation={r: int(c) for r, c in zip(_RELS, rows_per) if c},
        edges_per_relation={r: int(c) for r, c in zip(_RELS, edges_per) if c},
        exact_duplicates=int(len(key) - len(u3)),
        reverse_duplicates=int(len(u3) - len(u2)),
        display_duplicates=int(len(u2) - len(edge)),
        grouped_nodes=int(np.count_nonzero(raw.source == _GROUPED)),
        grouped_members=int(pd.unique(curie[grouped]).size),
        grouped_rows=len(in_group),
        expansion_rows_added=int(len(key) + loops - n),
        self_loops_dropped=loops,
        nodes_per_type={str(k): int(v) for k, v in nodes["type"].value_counts().sort_index().items()},
    )
    return PrimeKG(nodes=nodes, edges=edges, stats=stats, files=files)


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
