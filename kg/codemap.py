"""The study's code map: local code systems → the graph's codes, cut for one study bundle.

Hospitals code diagnoses in ICD-10 (or ICD-10-CM, ICD-11) or SNOMED CT, drugs in RxNorm
or ATC or write them as names; the graph speaks ORPHA, HPO, DrugBank and LOINC. The bundle carries this table
(``codemap.parquet``, read by :mod:`shared.ehr.codemap`), so every site maps the same way
and no site needs the graph.

Columns (:data:`CODEMAP_COLUMNS`)
---------------------------------
========  ===================================================================================
system    the local code system: one of :data:`SYSTEMS` (``ICD10``, ``SNOMEDCT``, ``RXNORM``...)
code      the local code as the system writes it (``E75.2``, ``52175``, ``C09CA01``); for
          ``NAME`` a drug's generic name, lower case and single-spaced (``velaglucerase alfa``)
target    the graph CURIE (``ORPHA:558``, ``HP:0001166``, ``DRUGBANK:DB00678``)
relation  how the local code relates to the target: ``exact``; ``narrower`` (every patient
          with the local code has the target: usable); ``broader`` (the local code covers the
          target and more: used only when a site asks); ``related`` (overlap of unknown kind:
          only when asked)
source    where the row comes from (``Orphadata product1``, ``hp.obo 2025-01-16``,
          ``curated_drug_codes.tsv``)
========  ===================================================================================

Sources and rules
-----------------
1. ICD-10 / ICD-11 → ORPHA: the graph's Orphadata product1 xrefs. product1 states the
   relation from the ORPHA concept's side (:data:`kg.assembly.crosswalk.ORPHANET_MATCH`): ``E``
   exact; ``NTBT`` "the ORPHA code's narrower term maps to a broader term", so the ICD
   code is *broader* (ICD-10 E75.2 "Other sphingolipidosis" for Gaucher disease);
   ``BTNT`` the ICD code is *narrower*; ``ND`` (not decided) becomes ``related``; ``W``
   (wrong) is never kept.
2. SNOMED CT and UMLS → HPO: ``hp.obo`` ``xref:`` lines of live terms (``SNOMEDCT_US:…``,
   ``UMLS:C…``). hp.obo states no relation for them; HPO curates them as the same
   concept, so they are ``exact``.
3. Curated tables (TSV, :func:`read_code_table`): RxNorm, ATC and generic names (system
   ``NAME``) → DrugBank for the demo drugs, and WHO ICD-10 → ORPHA for the demo diseases,
   each row with its citation.
4. Only what the study needs: a local code is kept when one of its targets is a study
   disease, a vocabulary term or a survey candidate (``candidates.parquet``: a comorbidity a
   site codes in SNOMED CT is counted by the vocabulary survey as its HPO term), and then with
   *all* its targets (at any relation but ``W``), so a site can see that the code is ambiguous
   instead of silently taking the one target the study cares about.
5. One row per (system, code, target): the strongest relation wins (exact > narrower >
   broader > related), then the first source in the order above. Rows are sorted, so the
   same inputs give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from shared.bundle import CODEMAP, CODEMAP_COLUMNS
from shared.ehr.codemap import RELATIONS, SYSTEMS, normalise_code, read_code_table
from shared.signing.keys import sha256_file

CODEMAP_FILE = CODEMAP
#: graph xref kind (Orphadata relation seen from the ORPHA concept) → relation of the local code
XREF_KIND_RELATION = {"exact_match": "exact", "broad_match": "broader", "narrow_match": "narrower",
                      "related_match": "related", "unknown_match": "related"}  # wrong_match (W): never
#: xref prefix in the graph → local system
XREF_SYSTEMS = {"ICD10": "ICD10", "ICD10CM": "ICD10CM", "ICD11": "ICD11", "SNOMEDCT_US": "SNOMEDCT",
                "SNOMEDCT": "SNOMEDCT", "UMLS": "UMLS"}


def default_code_tables() -> list[Path]:
    """The curated tables shipped in ``kg/data`` (demo drugs and diseases)."""
    data = Path(__file__).parent / "data"
    return [data / "curated_drug_codes.tsv", data / "curated_icd10_orpha.tsv"]


def xref_mappings(xrefs: pd.DataFrame, nodes: pd.DataFrame, *, hpo_source: str,
                  orphanet_source: str) -> pd.DataFrame:
    """Mapping rows from the graph's xref table (rules 1 and 2 of the module docstring)."""
    x = xrefs[xrefs["xref"].str.contains(":", regex=False)]
    prefix, code = x["xref"].str.split(":", n=1).str[0], x["xref"].str.split(":", n=1).str[1]
    system = prefix.map(XREF_SYSTEMS)
    live = set(nodes.loc[~nodes["obsolete"].astype(bool), "id"])
    hpo = (x["kind"] == "xref") & x["id"].str.startswith("HP:") & system.isin(["SNOMEDCT", "UMLS"])
    disease = x["kind"].isin(list(XREF_KIND_RELATION)) & x["id"].str.startswith("ORPHA:") & \
        system.isin(["ICD10", "ICD10CM", "ICD11"])
    keep = (hpo | disease) & x["id"].isin(live)
    codes = [normalise_code(s, c) for s, c in zip(system[keep], code[keep])]
    out = pd.DataFrame({"system": system[keep], "code": codes,
                        "target": x.loc[keep, "id"],
                        "relation": x.loc[keep, "kind"].map(XREF_KIND_RELATION).fillna("exact"),
                        "source": [hpo_source if h else orphanet_source for h in hpo[keep]]})
    return out.reset_index(drop=True)


def build_codemap(xref_rows: pd.DataFrame, tables: Iterable[pd.DataFrame], *, in_scope: set[str]) -> pd.DataFrame:
    """The study's code map (rules 3–5 of the module docstring).

    Parameters
    ----------
    xref_rows
        From :func:`xref_mappings`.
    tables
        Curated tables from :func:`read_code_table`.
    in_scope
        Study diseases, vocabulary codes and survey candidates.

    Returns
    -------
    DataFrame with :data:`CODEMAP_COLUMNS`, sorted by system, code, relation strength, target.
    """
    rows = pd.concat([*tables, xref_rows], ignore_index=True)
    rows = rows[list(CODEMAP_COLUMNS)].astype(str)
    rank = rows["relation"].map({r: i for i, r in enumerate(RELATIONS)})
    rows = rows.assign(_rank=rank, _order=range(len(rows))).sort_values(["_rank", "_order"], kind="stable")
    rows = rows.drop_duplicates(["system", "code", "target"], keep="first")
    wanted = rows.loc[rows["target"].isin(in_scope), ["system", "code"]].drop_duplicates()
    rows = rows.merge(wanted, on=["system", "code"])
    rows = rows.sort_values(["system", "code", "_rank", "target"], kind="stable", ignore_index=True)
    return rows[list(CODEMAP_COLUMNS)]


def source_labels(graph_sources: Sequence[dict], hpo_release: str) -> tuple[str, str]:
    """(hp.obo label, label for the disease xrefs) from the graph manifest's source files."""
    names = [str(s.get("file", "")) for s in graph_sources]
    labels = [label for label, hit in (("Orphadata product1", any("product1" in n for n in names)),
                                       ("GARD xrefs", any("GARD" in n.upper() for n in names))) if hit]
    return f"hp.obo {hpo_release}".strip(), " / ".join(labels) or "graph xrefs"


def codemap_summary(codemap: pd.DataFrame, tables: Sequence[Path]) -> dict:
    """What the manifest says about the code map: rows per system and relation, the tables used
    (file name and sha256, never a path: the same inputs give the same manifest anywhere)."""
    counts = codemap.groupby(["system", "relation"]).size()
    per_system: dict[str, dict[str, int]] = {}
    for (system, relation), n in counts.items():
        per_system.setdefault(str(system), {})[str(relation)] = int(n)
    return {"rows": int(len(codemap)), "per_system": per_system,
            "tables": [{"file": Path(t).name, "sha256": sha256_file(t)} for t in tables]}


__all__ = ["CODEMAP_COLUMNS", "CODEMAP_FILE", "RELATIONS", "SYSTEMS", "build_codemap", "codemap_summary",
           "default_code_tables", "read_code_table", "source_labels", "xref_mappings"]
