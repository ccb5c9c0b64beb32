"""The typed graph store: nodes, edges and side tables in Parquet, plus ``manifest.json``.

Layout of a graph folder::

    manifest.json      sources (file, sha256, bytes, release), table hashes, counts
    build_report.json  what each source gave: rows, nodes, edges, conflicts, drops (kg.report)
    nodes.parquet      id (CURIE), type, name, source, obsolete
    edges.parquet      source, target, relation, weight, provenance, qualifier, onset, sex
    synonyms.parquet   id, synonym, scope
    xrefs.parquet      id, xref, kind (xref | alt_id | replaced_by | consider)
    labs.parquet       id, name, unit, low, high, citation

For computation each relation becomes a scipy.sparse matrix between the sorted ids of its
source and target node types (:meth:`KnowledgeGraph.adjacency`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kg.schema import EDGE_COLUMNS, NODE_COLUMNS, RELATIONS
from shared.errors import InputError
from shared.signing.keys import sha256_file

if TYPE_CHECKING:  # scipy is imported where a matrix is built: building or loading a graph never needs it
    import scipy.sparse as sp

FORMAT = "raregraph-kg"
FORMAT_VERSION = 1
TABLES = ("nodes", "edges", "synonyms", "xrefs", "labs")
REPORT = "build_report.json"


@dataclass(frozen=True, slots=True)
class LabeledMatrix:
    """A matrix that carries its row and column ids (hetmatpy's triple)."""

    row_ids: tuple[str, ...]
    col_ids: tuple[str, ...]
    matrix: sp.csr_matrix

    def row(self, node_id: str) -> int:
        """Index of ``node_id`` among the rows; ValueError if absent."""
        try:
            return self.row_ids.index(node_id)
        except ValueError:
            raise ValueError(f"{node_id} is not a row of this matrix") from None


@dataclass(eq=False)
class KnowledgeGraph:
    """Nodes, edges and side tables of one built graph."""

    nodes: pd.DataFrame
    edges: pd.DataFrame
    synonyms: pd.DataFrame
    xrefs: pd.DataFrame
    labs: pd.DataFrame
    manifest: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # the build report; {} for a graph not built here
    # Memo of built matrices and per-relation edge groups; the tables are never changed
    # after construction, so entries stay valid for the object's life.
    _adjacency_cache: dict = field(default_factory=dict, repr=False)
    _edge_groups: dict | None = field(default=None, repr=False)  # relation → row positions
    _edge_frames: dict = field(default_factory=dict, repr=False)  # relation → its edge rows
    _position_cache: dict = field(default_factory=dict, repr=False)  # node type → pd.Index of ids

    # --- persistence -------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write the tables, ``manifest.json`` (with each table's sha256) and, when there is
        one, the build report ``build_report.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        hashes = {}
        for name in TABLES:
            path = folder / f"{name}.parquet"
            getattr(self, name).to_parquet(path, index=False)
            hashes[path.name] = sha256_file(path)
        self.manifest = {**self.manifest, "format": FORMAT, "format_version": FORMAT_VERSION,
                         "tables": hashes, "counts": self.counts()}
        (folder / "manifest.json").write_text(json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")
        if self.report:
            (folder / REPORT).write_text(json.dumps(self.report, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> KnowledgeGraph:
        """Read a graph folder written by :meth:`save`.

        Raises
        ------
        InputError
            The folder, its manifest or a table is missing, or the manifest is not a graph's.
        """
        folder = Path(folder)
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise InputError("not a graph folder (no manifest.json); build one with `raregraph kg build`",
                             file=folder)
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"manifest is not JSON ({exc.msg})", file=manifest_path, line=exc.lineno) from None
        if manifest.get("format") != FORMAT:
            raise InputError(f"format is {manifest.get('format')!r}, expected {FORMAT!r}", file=manifest_path)
        tables = {}
        for name in TABLES:
            path = folder / f"{name}.parquet"
            if not path.is_file():
                raise InputError("table missing from graph folder", file=path)
            tables[name] = pd.read_parquet(path)
        report_path = folder / REPORT
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        return cls(manifest=manifest, report=report, **tables)

    # --- indices and matrices ----------------------------------------------------------
    @cached_property
    def _type_ids(self) -> dict[str, tuple[str, ...]]:
        ids: dict[str, tuple[str, ...]] = {}
        for node_type, group in self.nodes.groupby("type", sort=True):
            ids[str(node_type)] = tuple(sorted(group["id"].tolist()))
        return ids

    def ids_of_type(self, node_type: str) -> tuple[str, ...]:
        """Sorted ids of all nodes of ``node_type`` (the row/column order of matrices)."""
        return self._type_ids.get(node_type, ())

    @cached_property
    def node_names(self) -> dict[str, str]:
        """id → name."""
        return dict(zip(self.nodes["id"].tolist(), self.nodes["name"].tolist()))

    @cached_property
    def node_types(self) -> dict[str, str]:
        """id → type."""
        return dict(zip(self.nodes["id"].tolist(), self.nodes["type"].tolist()))

    def adjacency(self, relation: str, *, weight: str = "binary", fill: float = 1.0) -> LabeledMatrix:
        """The relation as a sparse matrix, rows = source type ids, columns = target type ids.

        Parameters
        ----------
        relation
            A name from :data:`kg.schema.RELATIONS`.
        weight
            ``"binary"``: 1 per edge. ``"weight"``: the edge weight, NaN replaced by ``fill``.
        fill
            Value for an unknown (NaN) weight when ``weight="weight"``.

        Raises
        ------
        ValueError
            Unknown relation or weight mode.
        """
        if relation not in RELATIONS:
            raise ValueError(f"unknown relation {relation!r}; known: {', '.join(sorted(RELATIONS))}")
        if weight not in ("binary", "weight"):
            raise ValueError(f"weight must be 'binary' or 'weight', got {weight!r}")
        rel = RELATIONS[relation]
        return self._adjacency(rel.name, rel.source_type, rel.target_type, weight, fill)

    def _adjacency(self, relation: str, src_type: str, dst_type: str, weight: str, fill: float) -> LabeledMatrix:
        import scipy.sparse as sp

        key = (relation, weight, fill)
        cache = self._adjacency_cache
        if key in cache:
            return cache[key]
        rows_ids, cols_ids = self.ids_of_type(src_type), self.ids_of_type(dst_type)
        rows = self._relation_rows(relation)
        # positions by hashing each distinct id once (categorical codes, or a vectorised
        # Index lookup), never a per-row Python dict lookup: relations reach millions of rows
        r = _positions(self.edges["source"], rows, self._type_position(src_type))
        c = _positions(self.edges["target"], rows, self._type_position(dst_type))
        keep = (r >= 0) & (c >= 0)
        r, c = r[keep], c[keep]
        if weight == "binary":
            data = np.ones(len(r))
        else:
            w = self.edges["weight"].to_numpy(dtype=np.float64)[rows]
            data = np.nan_to_num(w[keep], nan=fill)
        m = sp.csr_matrix((data, (r, c)), shape=(len(rows_ids), len(cols_ids)))
        m.sum_duplicates()
        if weight == "binary":
            m.data[:] = 1.0
        m.eliminate_zeros()
        cache[key] = LabeledMatrix(rows_ids, cols_ids, m)
        return cache[key]

    def _type_position(self, node_type: str) -> pd.Index:
        """Index over the sorted ids of ``node_type`` (position = matrix row/column)."""
        index = self._position_cache.get(node_type)
        if index is None:
            index = self._position_cache[node_type] = pd.Index(self.ids_of_type(node_type), dtype=object)
        return index

    def _relation_rows(self, relation: str) -> np.ndarray:
        """Positions (row numbers) of the edges of one relation, in table order."""
        if self._edge_groups is None:
            codes, uniques = pd.factorize(self.edges["relation"], sort=False)
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
            self._edge_groups = {str(u): order[bounds[i]:bounds[i + 1]] for i, u in enumerate(uniques)}
        return self._edge_groups.get(relation, np.empty(0, dtype=np.intp))

    def edges_of(self, relation: str) -> pd.DataFrame:
        """The edge rows of one relation (original index labels kept)."""
        frame = self._edge_frames.get(relation)
        if frame is None:
            frame = self._edge_frames[relation] = self.edges.iloc[self._relation_rows(relation)]
        return frame

    # --- summaries ---------------------------------------------------------------------
    def counts(self) -> dict:
        """Counts per node type, identifier namespace and relation; live/obsolete HPO terms."""
        nodes = self.nodes
        hpo = nodes[nodes["id"].str.startswith("HP:")]
        return {
            "nodes": int(len(nodes)),
            "edges": int(len(self.edges)),
            "node_types": {str(k): int(v) for k, v in nodes["type"].value_counts().sort_index().items()},
            "namespaces": {
                str(k): int(v)
                for k, v in nodes["id"].str.split(":", n=1).str[0].value_counts().sort_index().items()
            },
            "relations": {str(k): int(v) for k, v in self.edges["relation"].value_counts().sort_index().items()},
            "hpo_terms": {"live": int((~hpo["obsolete"]).sum()), "obsolete": int(hpo["obsolete"].sum())},
            "synonyms": int(len(self.synonyms)),
            "xrefs": {str(k): int(v) for k, v in self.xrefs["kind"].value_counts().sort_index().items()},
            "labs": int(len(self.labs)),
        }


def _positions(column: pd.Series, rows: np.ndarray, index: pd.Index) -> np.ndarray:
    """Position in ``index`` of ``column[rows]`` (int64; -1 where absent)."""
    values = column.array
    if isinstance(values, pd.Categorical):
        by_category = index.get_indexer(values.categories)
        codes = values.codes[rows]
        return np.where(codes >= 0, by_category[codes], -1).astype(np.int64)
    return index.get_indexer(column.take(rows).to_numpy(dtype=object)).astype(np.int64)


def empty_nodes() -> pd.DataFrame:
    """An empty node table with the right columns."""
    return pd.DataFrame({c: pd.Series(dtype=bool if c == "obsolete" else str) for c in NODE_COLUMNS})


def empty_edges() -> pd.DataFrame:
    """An empty edge table with the right columns."""
    return pd.DataFrame({c: pd.Series(dtype=float if c == "weight" else str) for c in EDGE_COLUMNS})
