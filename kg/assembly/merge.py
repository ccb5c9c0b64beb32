"""Merge the HPO/curated graph with the external sources into one graph of canonical ids.

Steps, each over whole columns (PrimeKG's millions of edges never pass through a Python
loop; only the distinct identifiers, at most a few hundred thousand, are mapped):

1. **Identifiers.** Every id an external source names is rewritten: an HPO alt_id to its
   primary term, then any disease id to its crosswalk canonical id. An ``HP:`` id that is
   not a term of hp.obo is dropped with every row that names it (sources have their own
   release cycles; the graph's HPO part is hp.obo's). The HPO/curated graph only has its
   disease ids rewritten.
2. **Nodes.** Tables are concatenated in source order (HPO, curated, Orphadata, GARD,
   PrimeKG, FAERS) and the first row of each id is kept: hp.obo types HPO terms by branch,
   phenotype.hpoa names diseases. A source that declares another type for a node than the
   one kept has a *type conflict*, counted per (declared → kept) pair.
3. **Edges.** An external edge is kept only if both ends are nodes and their kept types
   are the ones its relation joins (:data:`kg.schema.RELATIONS`); otherwise it is dropped
   and counted with the reason. A self-loop made by the crosswalk (two merged ids) is
   dropped too.
4. **Duplicates.** Edges with the same (source, target, relation) from several sources, or
   from ids the crosswalk merged, become one edge at the place of the first: the weight
   is the mean of the known weights (as phenotype.hpoa's several references are), and
   provenance, qualifier, onset and sex are the sorted distinct values joined by ``;``, so
   the provenance lists every source that gave the edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kg.assembly.crosswalk import Crosswalk
from kg.schema import EDGE_COLUMNS, NODE_COLUMNS, RELATIONS
from kg.store import KnowledgeGraph

if TYPE_CHECKING:  # annotations only: importing it loads every external source's reader
    from kg.assembly.source_tables import SourceTables

_TEXT = ("provenance", "qualifier", "onset", "sex")
_STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default ``str`` dtype
_INVALID, _ABSENT = -2, -1  # codes of an HP id outside hp.obo, and of an id that is no node
_REASONS = {
    _INVALID: "endpoint HPO id not in hp.obo",
    _ABSENT: "endpoint is no node of any source",
}


@dataclass
class _Edges:
    """One part's edges as global codes, and its text columns as (codes, dictionary)."""

    relation: np.ndarray
    source: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    text: dict[str, tuple[np.ndarray, np.ndarray]]


def integrate(base: KnowledgeGraph, parts: list[SourceTables], *, crosswalk: Crosswalk,
              alt_ids: dict[str, str], hpo_terms: set[str]) -> tuple[KnowledgeGraph, dict]:
    """Merge ``parts`` into ``base`` (module docstring, steps 1–4).

    Parameters
    ----------
    base
        The graph of the HPO release and the curated layer.
    parts
        External sources in precedence order.
    crosswalk
        Canonical disease ids.
    alt_ids, hpo_terms
        hp.obo's alt_id → primary id map and its term ids (live and obsolete).

    Returns
    -------
    graph, report
        The merged graph and, per part name, ``nodes``, ``edges`` (by relation),
        ``rows_dropped`` (reason → rows) and ``type_conflicts``; plus ``duplicate_edges_merged``.
    """
    resolve_base = _fixer(crosswalk, None, None)
    resolve_ext = _fixer(crosswalk, alt_ids, hpo_terms)
    node_frames = [_fix_nodes(base.nodes, resolve_base)[0]]
    report: dict = {p.name: {} for p in parts}
    for part in parts:
        fixed, invalid = _fix_nodes(part.nodes, resolve_ext)
        node_frames.append(fixed)
        report[part.name]["rows_dropped"] = {"node with an HPO id not in hp.obo": invalid} if invalid else {}
    nodes = pd.concat(node_frames, ignore_index=True).drop_duplicates("id", keep="first")
    nodes = nodes.sort_values("id", ignore_index=True)
    index = pd.Index(nodes["id"].to_numpy(dtype=object))
    type_names, type_code = np.unique(nodes["type"].to_numpy(dtype=str), return_inverse=True)
    relations = list(RELATIONS)
    edges = [_part_edges(base.edges, resolve_base, index, relations)]
    if (np.minimum(edges[0].source, edges[0].target) < 0).any():
        raise ValueError("an edge of the HPO/curated graph names no node; the base build is inconsistent")
    for part, fixed in zip(parts, node_frames[1:]):
        report[part.name]["type_conflicts"] = _type_conflicts(fixed, nodes)
        e = _part_edges(part.edges, resolve_ext, index, relations)
        e, dropped = _check_edges(e, type_code, type_names, relations)
        report[part.name]["rows_dropped"].update(dropped)
        report[part.name]["nodes"] = int(fixed["id"].nunique())
        report[part.name]["edges"] = _by_relation(e.relation, relations)
        edges.append(e)
    table, merged = _merge_edges(edges, index, relations)
    graph = KnowledgeGraph(
        nodes=nodes[list(NODE_COLUMNS)], edges=table,
        synonyms=_side_table([base.synonyms, *(p.synonyms for p in parts)], resolve_base, resolve_ext),
        xrefs=_xrefs([base.xrefs, *(p.xrefs for p in parts)], resolve_base, resolve_ext),
        labs=base.labs, manifest=dict(base.manifest),
    )
    report["duplicate_edges_merged"] = merged
    return graph, report


def _fixer(crosswalk: Crosswalk, alt_ids: dict[str, str] | None,
           hpo_terms: set[str] | None) -> Callable[[np.ndarray], np.ndarray]:
    """Map distinct ids to canonical ids; None for an HP id outside hp.obo (step 1)."""

    def fix(values: np.ndarray) -> np.ndarray:
        s = pd.Series(values, dtype=object)
        if alt_ids is not None:
            hp = pd.Series(values, dtype=_STR).str.startswith("HP:").fillna(False).to_numpy(dtype=bool)
            primary = s.map(alt_ids)
            s = s.where(primary.isna(), primary)
            out = pd.Series(crosswalk.resolve(s), dtype=object)
            return out.where(~(hp & ~out.isin(hpo_terms).to_numpy()), None).to_numpy(dtype=object)
        return crosswalk.resolve(s)

    return fix


def _fix_nodes(nodes: pd.DataFrame, fix) -> tuple[pd.DataFrame, int]:
    """Nodes with fixed ids, and how many were dropped as HP ids outside hp.obo."""
    original = nodes["id"].to_numpy(dtype=object)
    ids = fix(original)
    keep = pd.notna(ids)
    # the canonical id's own row first, so ORPHA:558 keeps its name when OMIM:154700 joins it
    order = np.argsort(ids != original, kind="stable")
    out = nodes.assign(id=ids).iloc[order][keep[order]].drop_duplicates("id")
    return out[list(NODE_COLUMNS)], int((~keep).sum())


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and the distinct values they index (categoricals are used as they are)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), np.asarray(column.cat.categories, dtype=object)
    codes, uniques = pd.factorize(column)
    return codes, np.asarray(uniques, dtype=object)


def _text_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A text column as int32 codes into a dictionary of strings (missing → "")."""
    codes, values = _codes(column)
    if (codes < 0).any():
        values = np.append(values, "")
        codes = np.where(codes < 0, len(values) - 1, codes)
    return codes.astype(np.int32, copy=False), values


def _node_codes(column: pd.Series, fix, index: pd.Index) -> np.ndarray:
    """Global node code per row, or _INVALID / _ABSENT."""
    codes, values = _codes(column)
    fixed = fix(values)
    valid = pd.notna(fixed)
    per_value = np.full(len(values), _INVALID, dtype=np.int64)
    per_value[valid] = index.get_indexer(fixed[valid])  # -1 = _ABSENT
    return per_value[codes]


def _part_edges(edges: pd.DataFrame, fix, index: pd.Index, relations: list[str]) -> _Edges:
    rel_codes, rel_values = _codes(edges["relation"])
    lookup = pd.Index(relations).get_indexer(rel_values)
    if (lookup < 0).any():
        raise ValueError(f"relation {rel_values[lookup < 0][0]!r} is not in kg.schema.RELATIONS")
    return _Edges(
        relation=lookup[rel_codes].astype(np.int64),
        source=_node_codes(edges["source"], fix, index),
        target=_node_codes(edges["target"], fix, index),
        weight=edges["weight"].to_numpy(dtype=np.float64, copy=True),
        text={c: _text_codes(edges[c]) for c in _TEXT},
    )


def _take(e: _Edges, keep: np.ndarray) -> _Edges:
    return _Edges(e.relation[keep], e.source[keep], e.target[keep], e.weight[keep],
                  {c: (codes[keep], values) for c, (codes, values) in e.text.items()})


def _check_edges(e: _Edges, type_code: np.ndarray, type_names: np.ndarray,
                 relations: list[str]) -> tuple[_Edges, dict[str, int]]:
    """Drop edges with a missing end, ends of the wrong type, or a crosswalk self-loop (step 3)."""
    invalid = (e.source == _INVALID) | (e.target == _INVALID)
    absent = ~invalid & ((e.source == _ABSENT) | (e.target == _ABSENT))
    present = ~(invalid | absent)
    names = list(type_names)
    want_src = np.array([names.index(RELATIONS[r].source_type) if RELATIONS[r].source_type in names else -1
                         for r in relations])
    want_dst = np.array([names.index(RELATIONS[r].target_type) if RELATIONS[r].target_type in names else -1
                         for r in relations])
    src, dst = np.where(present, e.source, 0), np.where(present, e.target, 0)
    mistyped = present & ((type_code[src] != want_src[e.relation]) | (type_code[dst] != want_dst[e.relation]))
    loop = present & ~mistyped & (src == dst)
    dropped = {reason: int(mask.sum()) for reason, mask in (
        (_REASONS[_INVALID], invalid), (_REASONS[_ABSENT], absent),
        ("endpoint type conflict (node type is not the relation's)", mistyped),
        ("self-loop after the crosswalk merged its ends", loop),
    ) if mask.any()}
    keep = present & ~mistyped & ~loop
    return (e if keep.all() else _take(e, keep)), dropped


def _type_conflicts(fixed: pd.DataFrame, nodes: pd.DataFrame) -> dict:
    """Nodes a source declares with another type than the one kept: count, pairs, examples."""
    kept = fixed[["id", "type"]].merge(nodes[["id", "type"]], on="id", suffixes=("", "_kept"))
    bad = kept[kept["type"] != kept["type_kept"]]
    pairs = (bad["type"] + " → " + bad["type_kept"]).value_counts().sort_index()
    return {"count": int(len(bad)), "by_types": {str(k): int(v) for k, v in pairs.items()},
            "examples": bad["id"].head(10).tolist()}


def _by_relation(codes: np.ndarray, relations: list[str]) -> dict[str, int]:
    counts = np.bincount(codes, minlength=len(relations))
    return {relations[i]: int(c) for i, c in enumerate(counts) if c}


def _merge_edges(parts: list[_Edges], index: pd.Index, relations: list[str]) -> tuple[pd.DataFrame, int]:
    """Concatenate, merge duplicate (source, target, relation) edges at their first place (step 4)."""
    rel = np.concatenate([p.relation for p in parts])
    src = np.concatenate([p.source for p in parts])
    dst = np.concatenate([p.target for p in parts])
    weight = np.concatenate([p.weight for p in parts])
    text = {c: _concat_codes([p.text[c] for p in parts]) for c in _TEXT}
    n = np.int64(max(len(index), 1))
    group, first, repeated = _groups((rel * n + src) * n + dst)
    if repeated.any():
        text = _combine(group, repeated, first, weight, text)
    table = pd.DataFrame({
        "source": _strings(index.to_numpy(dtype=object), src[first]),
        "target": _strings(index.to_numpy(dtype=object), dst[first]),
        "relation": _strings(np.asarray(relations, dtype=object), rel[first]),
        "weight": weight[first],
        **{c: _strings(values, codes[first]) for c, (codes, values) in text.items()},
    })
    return table[list(EDGE_COLUMNS)], int(len(group) - first.sum())


def _groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group id of each key, whether a row is its group's first, whether its group repeats.

    A stable sort rather than hashing: PrimeKG's edges arrive sorted per relation, and
    timsort runs through sorted stretches in linear time.
    """
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    start = np.ones(len(key), dtype=bool)
    start[1:] = ordered[1:] != ordered[:-1]
    run = np.cumsum(start) - 1
    group = np.empty(len(key), dtype=np.int64)
    group[order] = run
    first = np.zeros(len(key), dtype=bool)
    first[order[start]] = True
    repeated = np.bincount(run)[group] > 1 if len(key) else first
    return group, first, repeated


def _concat_codes(columns: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One (codes, dictionary) from several, dictionaries stacked."""
    offsets = np.cumsum([0] + [len(values) for _, values in columns[:-1]])
    codes = np.concatenate([c.astype(np.int64) + o for (c, _), o in zip(columns, offsets)])
    return codes, np.concatenate([values for _, values in columns])


def _strings(values: np.ndarray, codes: np.ndarray) -> pd.Series:
    """``values[codes]`` as a ``str`` column, gathered by Arrow (no per-row Python objects)."""
    dictionary = pa.array(values, type=pa.large_string())
    taken = pc.take(dictionary, pa.array(codes, type=pa.int64()))
    return pd.Series(pd.arrays.ArrowStringArray(taken, dtype=_STR))


def _combine(group: np.ndarray, repeated: np.ndarray, first: np.ndarray, weight: np.ndarray,
             text: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Merged weight (in place) and text codes for the first row of every repeated group."""
    rows = np.flatnonzero(repeated)
    sub = pd.DataFrame({"group": group[rows], "weight": weight[rows],
                        **{c: values[codes[rows]] for c, (codes, values) in text.items()}})
    targets = np.flatnonzero(repeated & first)
    at = group[targets]
    weight[targets] = sub.groupby("group", sort=False)["weight"].mean().reindex(at).to_numpy()
    out = {}
    for column, (codes, values) in text.items():
        t = sub.loc[sub[column] != "", ["group", column]].drop_duplicates().sort_values(["group", column])
        joined = t.groupby("group", sort=False)[column].agg(";".join).reindex(at).fillna("")
        codes = codes.copy()
        codes[targets] = len(values) + np.arange(len(targets))
        out[column] = (codes, np.concatenate([values, joined.to_numpy(dtype=object)]))
    return out


def _side_table(frames: list[pd.DataFrame], fix_base, fix_ext) -> pd.DataFrame:
    """Synonym-like tables with ids rewritten (rows with an invalid id dropped), deduplicated."""
    out = []
    for i, frame in enumerate(frames):
        ids = (fix_base if i == 0 else fix_ext)(frame["id"].to_numpy(dtype=object))
        out.append(frame.assign(id=ids)[pd.notna(ids)])
    return pd.concat(out, ignore_index=True).drop_duplicates(ignore_index=True)


def _xrefs(frames: list[pd.DataFrame], fix_base, fix_ext) -> pd.DataFrame:
    """Cross-references under canonical ids, without the ones that now name the node itself."""
    table = _side_table(frames, fix_base, fix_ext)
    return table[table["id"] != table["xref"]].reset_index(drop=True)
