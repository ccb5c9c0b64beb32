"""Turn each parsed external source into the graph's tables (nodes, edges, synonyms, xrefs)
plus the mapping claims the crosswalk reads.

Identifiers here are still the source's own (``MONDO:0007947``, ``GARD:0006975``, an HPO
alt_id); :mod:`kg.assembly.merge` rewrites them to canonical ids, checks them against hp.obo and
merges the sources. Edge weights follow the existing relations: 1.0 for a plain link, the
frequency for phenotype annotations (NaN where the source gives none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kg.assembly.crosswalk import CLAIM_COLUMNS, ORPHANET_MATCH, empty_claims, gene_ids
from kg.schema import EDGE_COLUMNS, NODE_COLUMNS
from kg.sources.faers import FaersResult, load_drug_map
from kg.sources.gard import GardRelease
from kg.sources.orphadata import OrphadataRelease
from kg.sources.primekg import RELATIONS as PRIMEKG_SPEC
from kg.sources.primekg import PrimeKG

#: Orphadata product9_ages inheritance → HPO Mode of inheritance term. "Not applicable",
#: "Unknown" and "No data available" have none (counted as dropped).
ORPHANET_INHERITANCE: dict[str, str] = {
    "Autosomal dominant": "HP:0000006",
    "Autosomal recessive": "HP:0000007",
    "X-linked recessive": "HP:0001419",
    "X-linked dominant": "HP:0001423",
    "Mitochondrial inheritance": "HP:0001427",
    "Multigenic/multifactorial": "HP:0001426",  # Non-Mendelian (formerly Multifactorial) inheritance
    "Y-linked": "HP:0001450",
    "Semi-dominant": "HP:0032113",
    "Oligogenic": "HP:0010983",
}
#: Orphadata average age of onset → HPO Onset term (Clinical course branch). "All ages" and
#: "No data available" have none.
ORPHANET_ONSET: dict[str, str] = {
    "Antenatal": "HP:0030674",
    "Neonatal": "HP:0003623",
    "Infancy": "HP:0003593",
    "Childhood": "HP:0011463",
    "Adolescent": "HP:0003621",
    "Adult": "HP:0003581",
    "Elderly": "HP:0003584",  # Late onset
}
#: PrimeKG relation → kg.schema relation, where PrimeKG's own ``project`` mapping has none.
PRIMEKG_RELATIONS: dict[str, str] = {
    "protein_protein": "ppi",
    "drug_protein": "drug_target",
    "contraindication": "contraindication",
    "off-label use": "off_label_use",
    "drug_drug": "drug_drug",
    "phenotype_phenotype": "phenotype_phenotype",
    "disease_disease": "disease_disease",
}
#: Relations whose weight is an annotation frequency; PrimeKG does not carry it (NaN).
_FREQUENCY_RELATIONS = frozenset({"has_phenotype", "gene_phenotype"})
#: Synonyms without a stated scope are RELATED, the OBO default scope.
_SCOPE = "RELATED"


@dataclass
class SourceTables:
    """One source's contribution, in the graph's columns, before the crosswalk.

    ``edges`` has :data:`kg.schema.EDGE_COLUMNS`; its id and text columns may be
    categoricals (PrimeKG's millions of rows stay codes until the merge).
    """

    name: str  # short key: "orphadata", "gard", "primekg", "faers"
    nodes: pd.DataFrame
    edges: pd.DataFrame
    synonyms: pd.DataFrame
    xrefs: pd.DataFrame
    claims: pd.DataFrame
    rows_read: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # reason → rows
    unmapped: dict[str, int] = field(default_factory=dict)  # namespace → ids (besides diseases)
    extra: dict = field(default_factory=dict)  # source-specific counts for the report


def edges_frame(source, target, relation, *, weight=np.nan, provenance="", qualifier="", onset="",
                sex="") -> pd.DataFrame:
    """An edge table with :data:`EDGE_COLUMNS` from columns or scalars."""
    frame = pd.DataFrame({"source": source, "target": target})
    for name, value in (("relation", relation), ("weight", weight), ("provenance", provenance),
                        ("qualifier", qualifier), ("onset", onset), ("sex", sex)):
        frame[name] = value
    frame["weight"] = frame["weight"].astype(np.float64)
    return frame[list(EDGE_COLUMNS)]


def nodes_frame(ids, node_type, names, source: str) -> pd.DataFrame:
    """A node table with :data:`NODE_COLUMNS`."""
    frame = pd.DataFrame({"id": ids, "type": node_type, "name": names, "source": source, "obsolete": False})
    return frame[list(NODE_COLUMNS)]


def _synonyms(ids: pd.Series, texts: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"id": ids.to_numpy(), "synonym": texts.to_numpy(), "scope": _SCOPE})


def _xrefs(ids: pd.Series, xrefs: pd.Series, match: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"id": ids.to_numpy(), "xref": xrefs.to_numpy(), "kind": (match + "_match").to_numpy()})


def _gene_edges(disease: pd.Series, genes: pd.DataFrame, symbols: Mapping[str, str], *, provenance: str,
                source: str, ncbi: pd.Series | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """Gene nodes and disease → gene edges; rows without any gene id are dropped."""
    ncbi = pd.Series("", index=genes.index) if ncbi is None else ncbi
    ids, how = gene_ids(genes["gene_symbol"], genes["hgnc"], ncbi, symbols)
    keep = (how != "none").to_numpy()
    nodes = nodes_frame(ids[keep].to_numpy(), "gene", genes.loc[keep, "gene_symbol"].to_numpy(), source)
    edges = edges_frame(disease[keep].to_numpy(), ids[keep].to_numpy(), "associated_gene", weight=1.0,
                        provenance=provenance, qualifier=genes.loc[keep, "association_type"].to_numpy())
    dropped = {"gene row without NCBI Gene, HGNC id or known symbol": int((~keep).sum())}
    unmapped = {"HGNC": int(pd.unique(ids[(how == "hgnc").to_numpy()]).size)}
    return nodes.drop_duplicates("id"), edges, dropped, unmapped


# --------------------------------------------------------------------------- Orphadata


def orphadata_tables(release: OrphadataRelease, symbols: Mapping[str, str]) -> SourceTables:
    """Disorders, product1 xrefs and claims, product4 phenotypes, product6 genes, product9 ages.

    product4 ``Excluded (0%)`` becomes ``lacks_phenotype`` (as phenotype.hpoa writes it as
    NOT); a diagnostic criterion is flagged in ``qualifier``. product9 ages become
    ``has_inheritance`` / ``has_clinical_course`` edges through :data:`ORPHANET_INHERITANCE`
    and :data:`ORPHANET_ONSET`. Prevalences have no place in a graph of links and are
    counted as not represented.
    """
    info = release.releases.get("product1") or next(iter(release.releases.values()))
    label = f"Orphadata {info.date[:10]}".strip()
    d = release.disorders
    nodes = nodes_frame(d["orpha_code"].to_numpy(), "disease", d["name"].to_numpy(), label)
    x = release.xrefs
    match = x["relation"].map(ORPHANET_MATCH).fillna("unknown")
    claims = pd.DataFrame({"subject": x["orpha_code"], "object": x["xref"], "match": match,
                           "source": "orphadata", "file": str(release.directory / info.file), "line": pd.NA})
    p = release.phenotypes
    excluded = (p["frequency"] == "Excluded (0%)").to_numpy()
    phen = edges_frame(p["orpha_code"].to_numpy(), p["hpo_id"].to_numpy(),
                       np.where(excluded, "lacks_phenotype", "has_phenotype"),
                       weight=np.where(excluded, 1.0, p["frequency_value"].to_numpy(dtype=np.float64)),
                       provenance="Orphadata product4",
                       qualifier=np.where(p["diagnostic_criteria"].to_numpy(dtype=bool), "diagnostic_criterion", ""))
    gene_nodes, genes, dropped, unmapped = _gene_edges(release.genes["orpha_code"], release.genes, symbols,
                                                      provenance="Orphadata product6", source=label)
    ages, age_dropped = _age_edges(release)
    return SourceTables(
        name="orphadata", nodes=pd.concat([nodes, gene_nodes], ignore_index=True),
        edges=pd.concat([phen, genes, ages], ignore_index=True),
        synonyms=_synonyms(release.synonyms["orpha_code"], release.synonyms["synonym"]),
        xrefs=_xrefs(x["orpha_code"], x["xref"], match), claims=claims[list(CLAIM_COLUMNS)],
        rows_read={f"{product}.{table}": n for product, tables in release.row_counts.items()
                   for table, n in tables.items()},
        dropped={**dropped, **age_dropped,
                 "prevalence (not represented in the graph)": int(len(release.prevalences))},
        unmapped=unmapped,
        extra={"releases": {k: {"file": v.file, "date": v.date, "version": v.version, "licence": v.licence}
                            for k, v in release.releases.items()}},
    )


def _age_edges(release: OrphadataRelease) -> tuple[pd.DataFrame, dict[str, int]]:
    """Inheritance and onset rows → edges to HPO terms; values without a term are counted."""
    frames, dropped = [], {}
    for table, column, mapping, relation in (
        (release.inheritance, "inheritance", ORPHANET_INHERITANCE, "has_inheritance"),
        (release.onsets, "onset", ORPHANET_ONSET, "has_clinical_course"),
    ):
        term = table[column].map(mapping)
        dropped[f"{column} value without an HPO term"] = int(term.isna().sum())
        keep = term.notna().to_numpy()
        frames.append(edges_frame(table.loc[keep, "orpha_code"].to_numpy(), term[keep].to_numpy(), relation,
                                  weight=1.0, provenance="Orphadata product9_ages"))
    return pd.concat(frames, ignore_index=True), dropped


# --------------------------------------------------------------------------- GARD


def gard_tables(release: GardRelease, symbols: Mapping[str, str]) -> SourceTables:
    """GARD diseases, synonyms, xrefs (every match, as claims too) and disease → gene edges."""
    d = release.diseases
    nodes = nodes_frame(d["gard_id"].to_numpy(), "disease", d["name"].to_numpy(), "GARD")
    x = release.xrefs
    claims = pd.DataFrame({"subject": x["gard_id"], "object": x["xref"], "match": x["match"], "source": "gard",
                           "file": str(release.files.get("xrefs", "")), "line": x["line"].astype("Int64")})
    g = release.genes.rename(columns={"hgnc_id": "hgnc"})
    gene_nodes, genes, dropped, unmapped = _gene_edges(g["gard_id"], g, symbols, provenance="GARD", source="GARD",
                                                      ncbi=g["ncbi_gene_id"])
    return SourceTables(
        name="gard", nodes=pd.concat([nodes, gene_nodes], ignore_index=True), edges=genes,
        synonyms=_synonyms(release.synonyms["gard_id"], release.synonyms["synonym"]),
        xrefs=_xrefs(x["gard_id"], x["xref"], x["match"]), claims=claims[list(CLAIM_COLUMNS)],
        rows_read={"diseases": len(d), "synonyms": len(release.synonyms), "xrefs": len(x), "genes": len(g)},
        dropped=dropped, unmapped=unmapped,
        extra={"files": {k: str(v) for k, v in release.files.items()},
               "ignored_files": [p.name for p in release.ignored]},
    )


# --------------------------------------------------------------------------- PrimeKG


def primekg_tables(kg: PrimeKG) -> SourceTables:
    """PrimeKG nodes and edges under project relation names, kept as categoricals.

    ``drug_target`` keeps PrimeKG's display relations (target, enzyme, carrier,
    transporter) in ``qualifier``. PrimeKG carries no annotation frequency, so its
    ``has_phenotype`` and ``gene_phenotype`` weights are NaN (unknown), as phenotype.hpoa
    writes an annotation without one.
    """
    nodes = kg.nodes.assign(source="PrimeKG", obsolete=False)[list(NODE_COLUMNS)]
    e = kg.edges_by_id()
    published = [str(r) for r in e["relation"].cat.categories]
    names = [PRIMEKG_SPEC[r].project or PRIMEKG_RELATIONS.get(r, r) for r in published]
    categories = list(dict.fromkeys(names))
    lookup = np.array([categories.index(n) for n in names], dtype=np.int16)
    relation = pd.Categorical.from_codes(lookup[e["relation"].cat.codes.to_numpy()], categories=categories)
    freq = np.isin(np.asarray(relation.categories, dtype=object), list(_FREQUENCY_RELATIONS))
    codes = relation.codes
    weight = np.where(freq[codes], np.nan, 1.0)
    target_code = list(relation.categories).index("drug_target") if "drug_target" in relation.categories else -1
    display = e["display_relation"].cat.add_categories([""]) if "" not in e["display_relation"].cat.categories \
        else e["display_relation"]
    qualifier = display.where(codes == target_code, "")
    edges = pd.DataFrame({
        "source": e["source"], "target": e["target"], "relation": relation, "weight": weight,
        "provenance": pd.Categorical.from_codes(np.zeros(len(e), dtype=np.int8), categories=["PrimeKG"]),
        "qualifier": qualifier, "onset": pd.Categorical.from_codes(np.zeros(len(e), dtype=np.int8), categories=[""]),
        "sex": pd.Categorical.from_codes(np.zeros(len(e), dtype=np.int8), categories=[""]),
    })
    s = kg.stats
    return SourceTables(
        name="primekg", nodes=nodes, edges=edges, synonyms=_empty_synonyms(), xrefs=_empty_xrefs(),
        claims=empty_claims(), rows_read={"kg rows": s.rows_read},
        dropped={"duplicate rows (reverse direction, verbatim, or another display_relation)": s.duplicates,
                 "self-loops after MONDO_grouped expansion": s.self_loops_dropped},
        extra={"primekg": s.as_dict()},
    )


# --------------------------------------------------------------------------- FAERS


def faers_tables(result: FaersResult, drug_map: pd.DataFrame | str | Path, quarters: list[str]) -> SourceTables:
    """Drug → reaction signal edges: ``faers_signal`` to HPO terms, ``faers_signal_meddra`` to
    ``MEDDRA:`` reaction terms (node type ``adverse_event``).

    The weight is the shrunk information component IC (Norén et al. 2006): unlike PRR it is
    finite when no other drug has the reaction (c = 0), and it shrinks small counts. PRR,
    χ², ROR with its 95 % interval, IC025 and the report count go into ``qualifier``.
    """
    s = result.signals
    is_hpo = s["reaction"].str.startswith("HP:").to_numpy()
    qualifier = ("n=" + s["a"].astype(str) + ";prr=" + s["prr"].round(3).astype(str)
                 + ";chi2=" + s["chi2"].round(3).astype(str) + ";ror=" + s["ror"].round(3).astype(str)
                 + " [" + s["ror_low"].round(3).astype(str) + ", " + s["ror_high"].round(3).astype(str)
                 + "];ic025=" + s["ic025"].round(3).astype(str))
    edges = edges_frame(s["drug"].to_numpy(), s["reaction"].to_numpy(),
                        np.where(is_hpo, "faers_signal", "faers_signal_meddra"),
                        weight=s["ic"].to_numpy(dtype=np.float64), provenance="FAERS " + ",".join(quarters),
                        qualifier=qualifier.to_numpy())
    names = load_drug_map(drug_map).drop_duplicates("drug").set_index("drug")["name"]
    drugs = pd.unique(s["drug"])
    meddra = pd.unique(s.loc[~is_hpo, "reaction"])
    nodes = pd.concat([
        nodes_frame(drugs, "drug", pd.Series(drugs).map(names).fillna("").to_numpy(), "FAERS drug map"),
        nodes_frame(meddra, "adverse_event", pd.Series(meddra).str.removeprefix("MEDDRA:").to_numpy(), "FAERS"),
    ], ignore_index=True)
    c = result.counts
    return SourceTables(
        name="faers", nodes=nodes, edges=edges, synonyms=_empty_synonyms(), xrefs=_empty_xrefs(),
        claims=empty_claims(),
        rows_read={"reports": c.reports_read, "suspect drug rows": c.suspect_drug_rows,
                   "pairs tested": c.pairs_tested},
        dropped={"suspect drug rows without a DrugBank id": c.unmapped_drug_rows,
                 "pairs below the signal thresholds": c.pairs_tested - c.signals_kept},
        unmapped={"drug name": len(result.unmapped_drugs), "MedDRA PT (kept as MEDDRA: node)": len(result.unmapped_pts)},
        extra={"faers": result.summary()},
    )


def _empty_synonyms() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in ("id", "synonym", "scope")})


def _empty_xrefs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in ("id", "xref", "kind")})
