"""The build report (``build_report.json`` in the graph folder): what each source gave.

Per source (``sources.<name>``)::

    files              [{file, sha256, bytes, release, publisher}], as in manifest.json
    rows_read          table → rows the parser read
    nodes              distinct node ids the source contributes (after the crosswalk)
    edges              relation → edges kept from this source (before cross-source merging)
    rows_dropped       reason → rows left out (never silently)
    mapping_conflicts  {count, by_kind}: crosswalk conflicts raised by this source's claims
    unmapped           namespace → ids that did not reach an ORPHA code (diseases), plus
                       genes kept as HGNC ids, FAERS drug names and PTs without a mapping
    type_conflicts     {count, by_types, examples}: nodes declared with another type
    details            source-specific counts (PrimeKG duplicates, FAERS reports, releases)

and, over all sources, ``crosswalk`` (:meth:`kg.assembly.crosswalk.Crosswalk.summary`, with the
full conflict list), ``duplicate_edges_merged`` and the graph's totals.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from kg.assembly.crosswalk import Crosswalk, build_crosswalk, empty_claims
from kg.sources.curated import CuratedLayer
from kg.sources.hpo_annotations import HpoaFile
from kg.sources.obo import OboOntology
from kg.store import KnowledgeGraph

if TYPE_CHECKING:  # annotations only: importing it loads every external source's reader
    from kg.assembly.source_tables import SourceTables

FORMAT = "raregraph-kg-build-report"
FORMAT_VERSION = 1


def base_report_entries(graph: KnowledgeGraph, files: list[Path], manifest_sources: list[dict], hpoa: HpoaFile,
                        g2p: pd.DataFrame, p2g: pd.DataFrame, obo: OboOntology,
                        curated: CuratedLayer) -> dict[str, dict]:
    """Report entries of the HPO release and the curated layer (the graph before merging)."""
    curated_dir = curated.edges_path.parent
    by_source = {"hpo": [], "curated": []}
    for f, entry in zip(files, manifest_sources):
        by_source["curated" if f.parent == curated_dir else "hpo"].append(entry)
    curated_edges = _counts(curated.edges["relation"])
    all_edges = _counts(graph.edges["relation"])
    hpo_edges = {r: n - curated_edges.get(r, 0) for r, n in all_edges.items() if n - curated_edges.get(r, 0)}
    is_curated = graph.nodes["source"] == "curated layer"
    return {
        "hpo": {"files": by_source["hpo"], "nodes": int((~is_curated).sum()), "edges": hpo_edges,
                "rows_read": {"hp.obo terms": len(obo.terms), "phenotype.hpoa": len(hpoa.table),
                              "genes_to_phenotype.txt": len(g2p), "phenotype_to_genes.txt": len(p2g)},
                "rows_dropped": {}},
        "curated": {"files": by_source["curated"], "nodes": int(is_curated.sum()), "edges": curated_edges,
                    "rows_read": {"curated_edges.tsv": len(curated.edges), "curated_labs.tsv": len(curated.labs)},
                    "rows_dropped": {}},
    }


def build_report(base: dict[str, dict], base_nodes: pd.DataFrame, graph: KnowledgeGraph, *,
                 parts: list[SourceTables] = (), crosswalk: Crosswalk | None = None,
                 merged: dict | None = None, files: dict[str, list[dict]] | None = None) -> dict:
    """Assemble the report (module docstring) from the base entries and the merged sources."""
    crosswalk = crosswalk if crosswalk is not None else build_crosswalk(empty_claims())
    merged = merged or {}
    sources = {}
    diseases = base_nodes.loc[base_nodes["type"] == "disease", "id"]
    for name, entry in base.items():
        ids = diseases if name == "hpo" else diseases.iloc[0:0]
        sources[name] = {**entry, "mapping_conflicts": _conflicts(crosswalk, name),
                         "unmapped": crosswalk.unmapped(ids), "type_conflicts": _no_type_conflicts()}
    for part in parts:
        m = merged.get(part.name, {})
        ids = part.nodes.loc[part.nodes["type"] == "disease", "id"]
        sources[part.name] = {
            "files": (files or {}).get(part.name, []),
            "rows_read": part.rows_read,
            "nodes": m.get("nodes", 0),
            "edges": m.get("edges", {}),
            "rows_dropped": {k: v for k, v in {**part.dropped, **m.get("rows_dropped", {})}.items() if v},
            "mapping_conflicts": _conflicts(crosswalk, part.name),
            "unmapped": {**crosswalk.unmapped(ids), **{k: v for k, v in part.unmapped.items() if v}},
            "type_conflicts": m.get("type_conflicts", _no_type_conflicts()),
            "details": {k: v for k, v in part.extra.items() if k != "files"},
        }
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "sources": sources,
        "crosswalk": crosswalk.summary(), "duplicate_edges_merged": int(merged.get("duplicate_edges_merged", 0)),
        "graph": {"nodes": int(len(graph.nodes)), "edges": int(len(graph.edges))},
    }


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.value_counts().sort_index().items()}


def _conflicts(crosswalk: Crosswalk, source: str) -> dict:
    c = crosswalk.conflicts
    mine = c[c["source"] == source]
    return {"count": int(len(mine)), "by_kind": _counts(mine["kind"])}


def _no_type_conflicts() -> dict:
    return {"count": 0, "by_types": {}, "examples": []}


def summary_rows(report: dict) -> list[dict]:
    """One line per source for the terminal: rows read, nodes, edges, conflicts, unmapped, dropped."""
    rows = []
    for name, s in report.get("sources", {}).items():
        rows.append({
            "source": name, "rows_read": int(sum(s.get("rows_read", {}).values())), "nodes": int(s.get("nodes", 0)),
            "edges": int(sum(s.get("edges", {}).values())),
            "mapping_conflicts": int(s.get("mapping_conflicts", {}).get("count", 0)),
            "type_conflicts": int(s.get("type_conflicts", {}).get("count", 0)),
            "unmapped": int(sum(s.get("unmapped", {}).values())),
            "rows_dropped": int(sum(s.get("rows_dropped", {}).values())),
        })
    return rows
