"""Identifier crosswalk: one node per disease, whichever source names it.

Sources name one disease with different identifiers: phenotype.hpoa uses ``ORPHA:558`` and
``OMIM:154700``, PrimeKG ``MONDO:0007947``, GARD ``GARD:0006975``. Orphadata product1 and
the GARD cross-reference table state how these relate (a *claim*: subject, object, match).
Only ``exact`` claims merge identifiers; every other match (``broad``, ``narrow``,
``related``, ``wrong``, ``unknown``) stays an xref of the node and never joins two nodes.

Rules
-----
1. **Union-find over exact claims**, applied in the order given. The build passes
   Orphadata's claims first (Orphanet is the authority on ORPHA codes), then GARD's, each in
   file order, so the result never depends on hashing or set order.
2. **Contradicted claims do not merge.** A pair that one claim calls exact and another
   calls broad, narrow, related or wrong (in either direction, from any source) is recorded
   as a ``contradicted`` conflict and left apart: merging two concepts wrongly pools their
   phenotypes, while leaving them apart only loses a link that the xrefs still show.
   ``unknown`` (Orphanet ND, GARD NA) is no verdict and contradicts nothing.
3. **One identifier per node namespace.** A cluster may hold at most one id of each
   namespace in :data:`PREFERENCE` (ORPHA, OMIM, MONDO, GARD, DECIPHER): two ORPHA codes
   are two Orphanet concepts, and exactness is transitive, so a chain of exact claims that
   would join them (say through a shared ICD-10 code) is wrong somewhere. The claim that
   would close such a chain is not applied and is recorded as a ``namespace_clash``
   conflict naming both ids; the earlier claims stand (rule 1 fixes which is earlier).
   Terminology namespaces (UMLS, ICD-10, ICD-11, MeSH, MedDRA, ...) may hold several ids
   per cluster: they are coarser than the disease namespaces and are never node ids.
4. **Canonical id** of a cluster: its id of the first namespace in :data:`PREFERENCE`
   (ORPHA > OMIM > MONDO > GARD > DECIPHER), then any other namespace alphabetically. The
   study's diseases are ORPHA codes, so an ORPHA code must win wherever a cluster has one;
   OMIM comes next because phenotype.hpoa annotates OMIM diseases richly; MONDO before
   GARD because PrimeKG's diseases are MONDO. Rule 3 makes the choice unique for these.

Drugs need no clustering here: every source that names drugs (curated layer, PrimeKG,
FAERS through its drug map) already uses DrugBank accessions, which are canonical.
Genes are joined by :func:`gene_ids` (NCBI Gene canonical, HGNC symbols mapped to it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: Node namespaces, most preferred first: at most one id of each per cluster (rule 3).
PREFERENCE: tuple[str, ...] = ("ORPHA", "OMIM", "MONDO", "GARD", "DECIPHER")
#: How a cross-reference relates to its subject (SKOS ``*Match`` sense, as in kg.sources.gard).
MATCHES: tuple[str, ...] = ("exact", "broad", "narrow", "related", "wrong", "unknown")
#: Matches that contradict an exact claim on the same pair (rule 2).
CONTRADICTING = frozenset({"broad", "narrow", "related", "wrong"})
#: Orphadata ``DisorderMappingRelation`` code → match. NTBT (the ORPHA concept is the
#: narrower term) means the xref is broader; BTNT the reverse.
ORPHANET_MATCH: dict[str, str] = {"E": "exact", "NTBT": "broad", "BTNT": "narrow", "ND": "unknown", "W": "wrong"}
CLAIM_COLUMNS = ("subject", "object", "match", "source", "file", "line")
CONFLICT_COLUMNS = ("kind", "namespace", "subject", "object", "detail", "source", "file", "line")


def namespace_of(ids: pd.Series) -> pd.Series:
    """The CURIE prefix of each id (``ORPHA`` for ``ORPHA:558``)."""
    return ids.str.split(":", n=1).str[0]


def _rank(curie: str) -> tuple[int, str, str]:
    ns = curie.split(":", 1)[0]
    return (PREFERENCE.index(ns) if ns in PREFERENCE else len(PREFERENCE), ns, curie)


@dataclass(frozen=True)
class Crosswalk:
    """The result: canonical id of every clustered identifier, and the conflicts met.

    ``canonical`` maps each id of a cluster of two or more ids to the cluster's canonical
    id (an id not in it is its own canonical id). ``conflicts`` has :data:`CONFLICT_COLUMNS`.
    """

    canonical: dict[str, str]
    conflicts: pd.DataFrame
    claims: int = 0  # claims read (all matches)
    exact_claims: int = 0
    members: dict[str, list[str]] = field(default_factory=dict, repr=False)  # canonical → ids

    def resolve(self, ids: pd.Series | np.ndarray | list[str]) -> np.ndarray:
        """Canonical id of each id (object array, same length and order)."""
        s = pd.Series(np.asarray(ids, dtype=object))
        if not self.canonical or not len(s):
            return s.to_numpy(dtype=object)
        mapped = s.map(self.canonical)
        return s.where(mapped.isna(), mapped).to_numpy(dtype=object)

    def unmapped(self, ids: Iterable[str], *, target: str = "ORPHA") -> dict[str, int]:
        """Per namespace, how many distinct ``ids`` did not join a cluster with a ``target`` id.

        ``target`` ids themselves are never counted (they are their own mapping).
        """
        s = pd.Series(pd.unique(pd.Series(list(ids), dtype=object)), dtype=object)
        if not len(s):
            return {}
        resolved = pd.Series(self.resolve(s), dtype=object)
        missing = s[namespace_of(resolved) != target]
        counts = namespace_of(missing).value_counts().sort_index()
        return {str(k): int(v) for k, v in counts.items()}

    def summary(self, *, limit: int | None = None) -> dict:
        """JSON-ready counts and the conflicts (all of them unless ``limit``)."""
        c = self.conflicts
        listed = c if limit is None else c.head(limit)
        return {
            "claims": self.claims,
            "exact_claims": self.exact_claims,
            "clusters": len(self.members),
            "ids_merged": int(sum(len(v) for v in self.members.values()) - len(self.members)),
            "conflicts": int(len(c)),
            "conflicts_by_kind": {str(k): int(v) for k, v in c["kind"].value_counts().sort_index().items()},
            "conflict_list": [
                {k: (None if pd.isna(v) else (int(v) if k == "line" else str(v))) for k, v in row.items()}
                for row in listed.to_dict("records")
            ],
        }


def empty_claims() -> pd.DataFrame:
    """A claim table with no rows."""
    return pd.DataFrame({c: pd.Series(dtype="Int64" if c == "line" else object) for c in CLAIM_COLUMNS})


def build_crosswalk(claims: pd.DataFrame) -> Crosswalk:
    """Cluster identifiers joined by exact claims (rules 1–4 of the module docstring).

    Parameters
    ----------
    claims
        :data:`CLAIM_COLUMNS`: ``subject`` and ``object`` CURIEs, ``match`` one of
        :data:`MATCHES`, and where the claim comes from (``source`` name, ``file``,
        ``line``; ``line`` may be missing). Row order is the order claims are applied.

    Returns
    -------
    Crosswalk

    Raises
    ------
    ValueError
        A column is missing or a ``match`` is not one of :data:`MATCHES`.
    """
    missing = [c for c in CLAIM_COLUMNS if c not in claims.columns]
    if missing:
        raise ValueError(f"claims lack columns {missing}; expected {list(CLAIM_COLUMNS)}")
    bad = sorted(set(claims["match"]) - set(MATCHES))
    if bad:
        raise ValueError(f"unknown match {bad[0]!r}; allowed: {', '.join(MATCHES)}")
    claims = claims[claims["subject"] != claims["object"]].reset_index(drop=True)
    pair = _pair_keys(claims)
    exact = (claims["match"] == "exact").to_numpy()
    contra_keys = set(pair[claims["match"].isin(CONTRADICTING).to_numpy()]) & set(pair[exact])
    contradicted = exact & pair.isin(contra_keys).to_numpy()
    conflicts = [_contradiction_rows(claims, pair, contra_keys)]
    uf = _UnionFind()
    clashes = []
    applicable = claims[exact & ~contradicted]
    for row in applicable.itertuples(index=False):
        clash = uf.union(row.subject, row.object)
        if clash is not None:
            ns, a, b = clash
            clashes.append(("namespace_clash", ns, row.subject, row.object,
                            f"would put {a} and {b} in one cluster", row.source, row.file, row.line))
    conflicts.append(pd.DataFrame(clashes, columns=list(CONFLICT_COLUMNS)))
    members = uf.clusters()
    canonical = {}
    groups = {}
    for ids in members:
        best = min(ids, key=_rank)
        groups[best] = sorted(ids, key=_rank)
        canonical.update((i, best) for i in ids)
    table = pd.concat([c for c in conflicts if len(c)], ignore_index=True) if any(len(c) for c in conflicts) \
        else pd.DataFrame(columns=list(CONFLICT_COLUMNS))
    table["line"] = pd.array(table["line"], dtype="Int64")
    return Crosswalk(canonical=canonical, conflicts=table, claims=len(claims), exact_claims=int(exact.sum()),
                     members=groups)


def _pair_keys(claims: pd.DataFrame) -> pd.Series:
    """An order-free key per (subject, object) pair."""
    a, b = claims["subject"].astype(str), claims["object"].astype(str)
    lo, hi = a.where(a <= b, b), b.where(a <= b, a)
    return lo + "\x00" + hi


def _contradiction_rows(claims: pd.DataFrame, pair: pd.Series, keys: set[str]) -> pd.DataFrame:
    """One ``contradicted`` conflict per pair, at its first exact claim, naming every verdict."""
    if not keys:
        return pd.DataFrame(columns=list(CONFLICT_COLUMNS))
    hit = claims[pair.isin(keys).to_numpy()].assign(pair=pair[pair.isin(keys)].to_numpy())
    rows = []
    for _, group in hit.groupby("pair", sort=True):
        first = group[group["match"] == "exact"].iloc[0]
        verdicts = "; ".join(f"{r.source} says {r.match}" + (f" (line {r.line})" if pd.notna(r.line) else "")
                             for r in group.itertuples(index=False))
        rows.append(("contradicted", first["subject"].split(":", 1)[0], first["subject"], first["object"],
                     f"not merged: {verdicts}", first["source"], first["file"], first["line"]))
    return pd.DataFrame(rows, columns=list(CONFLICT_COLUMNS))


class _UnionFind:
    """Union by size with path halving; each root knows its ids of the node namespaces."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}
        self.unique: dict[str, dict[str, str]] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        if x not in parent:
            parent[x] = x
            self.size[x] = 1
            ns = x.split(":", 1)[0]
            self.unique[x] = {ns: x} if ns in PREFERENCE else {}
            return x
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: str, b: str) -> tuple[str, str, str] | None:
        """Join the clusters of a and b; on a namespace clash return (namespace, id, id) instead."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        ua, ub = self.unique[ra], self.unique[rb]
        for ns, ida in ua.items():
            idb = ub.get(ns)
            if idb is not None and idb != ida:
                return ns, ida, idb
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size.pop(rb)
        self.unique[ra] = {**self.unique.pop(rb), **self.unique[ra]}
        return None

    def clusters(self) -> list[list[str]]:
        """Clusters of two or more ids."""
        groups: dict[str, list[str]] = {}
        for x in self.parent:
            groups.setdefault(self.find(x), []).append(x)
        return [g for g in groups.values() if len(g) > 1]


# --------------------------------------------------------------------------- genes


def gene_symbol_index(genes: pd.DataFrame) -> dict[str, str]:
    """Symbol → ``NCBIGene:`` id from gene nodes (``id``, ``name`` = symbol); ambiguous symbols left out."""
    g = genes[genes["id"].str.startswith("NCBIGene:") & (genes["name"] != "")].drop_duplicates(["id", "name"])
    ambiguous = g["name"].duplicated(keep=False)
    return dict(zip(g.loc[~ambiguous, "name"], g.loc[~ambiguous, "id"]))


def gene_ids(symbol: pd.Series, hgnc: pd.Series, ncbi: pd.Series,
             index: Mapping[str, str]) -> tuple[pd.Series, pd.Series]:
    """Canonical gene id of each row, and how it was found.

    NCBI Gene is the canonical gene namespace (HPO and PrimeKG use it). Orphadata and GARD
    give HGNC ids and symbols instead; an HGNC approved symbol names one current gene, so a
    symbol that exactly one ``NCBIGene:`` node of the graph carries is that gene. A row with
    an NCBI id keeps it; a row matched by neither keeps its ``HGNC:`` id (an unmapped gene
    node, counted by the caller); a row with none of the three ids gets "".

    Returns
    -------
    ids, how
        ``how`` is ``ncbi``, ``symbol``, ``hgnc`` or ``none`` per row.
    """
    by_symbol = symbol.map(index)
    ids = ncbi.where(ncbi != "", by_symbol)
    how = pd.Series(np.where(ncbi != "", "ncbi", np.where(by_symbol.notna(), "symbol", "hgnc")), index=symbol.index)
    ids = ids.where(ids.notna(), hgnc).fillna("")
    how = how.where(ids != "", "none")
    return ids, how
