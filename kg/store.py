"""The typed graph store: nodes, edges and side tables in Parquet, plus ``manifest.json``.

Layout of a graph folder::

    manifest.json      sources (file, sha256, bytes, release), table hashes, counts
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

import numpy as np
import pandas as pd
import scipy.sparse as sp

from kg.schema import EDGE_COLUMNS, NODE_COLUMNS, RELATIONS
from shared.errors import InputError
from shared.signing import sha256_file

FORMAT = "raregraph-kg"
FORMAT_VERSION = 1
TABLES = ("nodes", "edges", "synonyms", "xrefs", "labs")


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
    # Memo of built matrices and per-relation edge groups; the tables are never changed
    # after construction, so entries stay valid for the object's life.
    _adjacency_cache: dict = field(default_factory=dict, repr=False)
    _edge_groups: dict | None = field(default=None, repr=False)

    # --- persistence -------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write the tables and ``manifest.json`` (with each table's sha256) into ``folder``."""
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
        return cls(manifest=manifest, **tables)

    # --- indices and matrices ----------------------------------------------------------
    @cached_property
    def _type_ids(self) -> dict[str, tuple[str, ...]]:
        ids: dict[str, tuple[str, ...]] = {}
        for node_type, group in self.nodes.groupby("type", sort=True):
            ids[str(node_type)] = tuple(sorted(group["id"].tolist()))
        return ids

    @cached_property
    def _type_index(self) -> dict[str, dict[str, int]]:
        return {t: {n: i for i, n in enumerate(ids)} for t, ids in self._type_ids.items()}

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
        key = (relation, weight, fill)
        cache = self._adjacency_cache
        if key in cache:
            return cache[key]
        rows_ids, cols_ids = self.ids_of_type(src_type), self.ids_of_type(dst_type)
        src_index, dst_index = self._type_index.get(src_type, {}), self._type_index.get(dst_type, {})
        edges = self.edges_of(relation)
        r = edges["source"].map(src_index)
        c = edges["target"].map(dst_index)
        keep = (r.notna() & c.notna()).to_numpy()
        r = r.to_numpy()[keep].astype(np.int64)
        c = c.to_numpy()[keep].astype(np.int64)
        if weight == "binary":
            data = np.ones(len(r))
        else:
            data = np.nan_to_num(edges["weight"].to_numpy(dtype=np.float64)[keep], nan=fill)
        m = sp.csr_matrix((data, (r, c)), shape=(len(rows_ids), len(cols_ids)))
        m.sum_duplicates()
        if weight == "binary":
            m.data[:] = 1.0
        m.eliminate_zeros()
        cache[key] = LabeledMatrix(rows_ids, cols_ids, m)
        return cache[key]

    def edges_of(self, relation: str) -> pd.DataFrame:
        """The edge rows of one relation."""
        if self._edge_groups is None:
            self._edge_groups = {str(k): g for k, g in self.edges.groupby("relation", sort=False)}
        return self._edge_groups.get(relation, self.edges.iloc[0:0])

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


def empty_nodes() -> pd.DataFrame:
    """An empty node table with the right columns."""
    return pd.DataFrame({c: pd.Series(dtype=bool if c == "obsolete" else str) for c in NODE_COLUMNS})


def empty_edges() -> pd.DataFrame:
    """An empty edge table with the right columns."""
    return pd.DataFrame({c: pd.Series(dtype=float if c == "weight" else str) for c in EDGE_COLUMNS})
