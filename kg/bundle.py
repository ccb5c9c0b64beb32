"""Cut the signed study bundle from the graph (format: :mod:`shared.bundle`).

Vocabulary and scores come from public knowledge only; no site data is read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kg.codemap import (
    CODEMAP_FILE,
    build_codemap,
    codemap_summary,
    default_code_tables,
    read_code_table,
    source_labels,
    xref_mappings,
)
from kg.metapaths import FEATURE_METAPATHS, parse_metapath
from kg.ontology import ancestors, is_a_graph
from kg.candidates import build_candidates
from kg.vocabulary import vocabulary_table
from kg.scoring import metapath_scores, pathsim
from kg.store import KnowledgeGraph
from kg.study import Study
from shared.atomic import atomic_dir
from shared.bundle import (CANDIDATES, DOMAINS, FORMAT, FORMAT_VERSION, GROWTH, MANIFEST, NAME_RULE, SIGNATURE,
                           bundle_files, file_name_problem)
from shared.errors import ConfigError
from shared.signing.keys import key_id, public_key_b64, sha256_file, sign

Step = Callable[[str], None]

if TYPE_CHECKING:
    from kg.growth import Growth


def check_study_diseases(graph: KnowledgeGraph, study: Study, *, source: str) -> None:
    """Every study disease must be a disease node of the graph.

    Raises
    ------
    ConfigError
        Names the first unknown code and the study file.
    """
    types = graph.node_types
    for code in study.study.diseases:
        if types.get(code) != "disease":
            raise ConfigError(f"{source}: study.diseases: {code} is not a disease in the knowledge graph")


def _domain_scores(graph: KnowledgeGraph, study: Study, diseases: list[str]) -> dict[str, dict]:
    """Per meta-path: pc and dwpc matrices (diseases × target ids) and the transformed score.

    The transformed score is asinh(DWPC / mean of the non-zero DWPC of that meta-path), as
    Hetionet did, so meta-paths of very different scales can be added.
    """
    damping = study.scoring.damping
    out = {}
    for name in FEATURE_METAPATHS:
        pc = metapath_scores(graph, name, metric="pc", sources=diseases)
        dwpc = metapath_scores(graph, name, metric="dwpc", damping=damping, sources=diseases)
        mean = dwpc.matrix.data.mean() if dwpc.matrix.nnz else 1.0
        transformed = dwpc.matrix.copy()
        transformed.data = np.arcsinh(transformed.data / mean)
        out[name] = {"pc": pc, "dwpc": dwpc, "t": transformed}
    return out


def _raw_scores(graph: KnowledgeGraph, study: Study, diseases: list[str], per_path: dict) -> dict[str, pd.DataFrame]:
    """Raw score per domain as a long table (disease, code, score)."""
    weights = study.scoring.weights
    frames: dict[str, list[pd.DataFrame]] = {d: [] for d in DOMAINS}
    for name, (domain, _) in FEATURE_METAPATHS.items():
        w = weights.get(name, 0.0)
        if w == 0:
            continue
        m = sp.coo_matrix(per_path[name]["t"])
        cols = per_path[name]["dwpc"].col_ids
        frames[domain].append(pd.DataFrame({
            "disease": [diseases[i] for i in m.row], "code": [cols[j] for j in m.col], "score": w * m.data,
        }))
    freq = _frequency_table(graph, diseases, study.scoring.unknown_frequency)
    frames["phenotype"].append(freq.assign(score=study.scoring.frequency_weight * freq["frequency"])[
        ["disease", "code", "score"]])
    out = {}
    for domain, parts in frames.items():
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["disease", "code", "score"])
        out[domain] = table.groupby(["disease", "code"], as_index=False)["score"].sum()
    neg = _negative_table(graph, diseases)
    if len(neg):
        pheno = out["phenotype"].merge(neg.assign(neg=1.0), on=["disease", "code"], how="left")
        pheno["score"] -= study.scoring.not_penalty * pheno["neg"].fillna(0.0)
        out["phenotype"] = pheno[["disease", "code", "score"]]
    return out


def _frequency_table(graph: KnowledgeGraph, diseases: list[str], unknown: float) -> pd.DataFrame:
    e = graph.edges_of("has_phenotype")
    e = e[e["source"].isin(diseases)]
    return pd.DataFrame({"disease": e["source"].to_numpy(), "code": e["target"].to_numpy(),
                         "frequency": e["weight"].fillna(unknown).to_numpy(),
                         "annotated": e["weight"].to_numpy()})


def _negative_table(graph: KnowledgeGraph, diseases: list[str]) -> pd.DataFrame:
    e = graph.edges_of("lacks_phenotype")
    e = e[e["source"].isin(diseases)]
    return pd.DataFrame({"disease": e["source"].to_numpy(), "code": e["target"].to_numpy()})


def _select(raw: pd.DataFrame, diseases: list[str], limit: int, allowed: set[str] | None) -> list[str]:
    """Round-robin over diseases, each taking its best-scored features not yet chosen.

    Only features with a positive score for some disease qualify; every disease gets a
    fair share, so a richly annotated disease cannot crowd out a sparse one.
    """
    raw = raw[raw["score"] > 0]
    if allowed is not None:
        raw = raw[raw["code"].isin(allowed)]
    queues = {
        d: raw[raw["disease"] == d].sort_values(["score", "code"], ascending=[False, True])["code"].tolist()
        for d in diseases
    }
    chosen: list[str] = []
    seen: set[str] = set()
    while len(chosen) < limit and any(queues.values()):
        for d in diseases:
            q = queues[d]
            while q and q[0] in seen:
                q.pop(0)
            if q and len(chosen) < limit:
                code = q.pop(0)
                chosen.append(code)
                seen.add(code)
    return sorted(chosen)


def build_vocabulary(graph: KnowledgeGraph, study: Study, raw: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The feature vocabulary: (index, code, domain, name), domains in :data:`DOMAINS` order."""
    diseases = list(study.study.diseases)
    live_phenotypes = set(graph.nodes.loc[(graph.nodes["type"] == "phenotype") & ~graph.nodes["obsolete"], "id"])
    limits = {
        "phenotype": study.vocabulary.phenotypes,
        "drug": study.vocabulary.drugs,
        "adverse_event": study.vocabulary.adverse_events,
        "lab": study.vocabulary.labs,
    }
    allowed = {"phenotype": live_phenotypes, "adverse_event": live_phenotypes, "drug": None, "lab": None}
    rows = []
    for domain in DOMAINS:
        for code in _select(raw[domain], diseases, limits[domain], allowed[domain]):
            rows.append((code, domain, graph.node_names.get(code, "")))
    return vocabulary_table(rows)


def _place(labeled_rows: int, cols: tuple[str, ...], m: sp.spmatrix, vocab: pd.DataFrame, domain: str) -> sp.csr_matrix:
    """Re-index a (diseases × graph ids) matrix onto the vocabulary columns of ``domain``."""
    sub = vocab[vocab["domain"] == domain]
    col_pos = {c: j for j, c in enumerate(cols)}
    src = np.array([col_pos.get(c, -1) for c in sub["code"]], dtype=np.int64)
    keep = src >= 0
    m = sp.csc_matrix(m)[:, src[keep]]
    out = sp.lil_matrix((labeled_rows, len(vocab)))
    out[:, sub["index"].to_numpy()[keep]] = m
    return sp.csr_matrix(out)


def _dense_from_long(table: pd.DataFrame, value: str, diseases: list[str], vocab: pd.DataFrame, domain: str,
                     fill: float) -> np.ndarray:
    out = np.full((len(diseases), len(vocab)), fill, dtype=np.float64)
    sub = vocab[vocab["domain"] == domain]
    col = dict(zip(sub["code"], sub["index"]))
    row = {d: i for i, d in enumerate(diseases)}
    for d, c, v in zip(table["disease"], table["code"], table[value]):
        j = col.get(c)
        if j is not None:
            out[row[d], j] = v
    return out


def _standardize(raw: dict[str, pd.DataFrame], diseases: list[str], vocab: pd.DataFrame, clip: float) -> np.ndarray:
    """z per domain block: (score − mean) / std over all diseases × that domain's features.

    Pairs with no path score 0 before standardizing, so unsupported features get a
    negative z and supported ones a positive z.
    """
    z = np.zeros((len(diseases), len(vocab)), dtype=np.float64)
    for domain in DOMAINS:
        cols = vocab.index[vocab["domain"] == domain].to_numpy()
        if not len(cols):
            continue
        block = _dense_from_long(raw[domain], "score", diseases, vocab, domain, 0.0)[:, cols]
        std = block.std()
        z[:, cols] = (block - block.mean()) / std if std > 0 else 0.0
    return np.clip(z, -clip, clip)


def build_prior_graph(graph: KnowledgeGraph, study: Study, vocab: pd.DataFrame) -> pd.DataFrame:
    """Feature–feature prior edges between vocabulary entries.

    Kinds: ``drug_effect`` (drug → adverse event), ``measured_by`` (phenotype or adverse
    event → lab; weight +1 high, −1 low), ``is_a`` (phenotype → ancestor phenotype in the
    vocabulary), ``shared_diseases`` (phenotype ↔ phenotype by PathSim on PhDhP over the
    whole graph; top-k per phenotype above a floor).
    """
    index = {(d, c): i for i, d, c in zip(vocab["index"], vocab["domain"], vocab["code"])}
    rows: list[tuple[int, int, str, float]] = []
    for s, t in zip(graph.edges_of("drug_effect")["source"], graph.edges_of("drug_effect")["target"]):
        if ("drug", s) in index and ("adverse_event", t) in index:
            rows.append((index[("drug", s)], index[("adverse_event", t)], "drug_effect", 1.0))
    mb = graph.edges_of("measured_by")
    for s, t, q in zip(mb["source"], mb["target"], mb["qualifier"]):
        for domain in ("phenotype", "adverse_event"):
            if (domain, s) in index and ("lab", t) in index:
                rows.append((index[(domain, s)], index[("lab", t)], "measured_by", 1.0 if q == "high" else -1.0))
    phenos = vocab[vocab["domain"] == "phenotype"]
    types = graph.node_types
    codes = [c for c in phenos["code"] if types.get(c) == "phenotype"]  # a grown bundle's codes the graph lacks: none
    if codes:
        isa = graph.edges_of("is_a")
        parents: dict[str, list[str]] = {}
        for child, parent in zip(isa["source"], isa["target"]):
            parents.setdefault(child, []).append(parent)
        onto = is_a_graph(parents)
        code_set = set(codes)
        for code in codes:
            if code in onto:
                for anc in sorted(ancestors(onto, code) & code_set):
                    rows.append((index[("phenotype", code)], index[("phenotype", anc)], "is_a", 1.0))
        sim = pathsim(graph, "PhDhP", sources=codes)
        col = {c: j for j, c in enumerate(sim.col_ids)}
        in_vocab = np.array([col[c] for c in codes if c in col], dtype=np.int64)
        sub = sp.csr_matrix(sim.matrix[:, in_vocab])
        k, floor = study.prior_graph.top_k, study.prior_graph.min_pathsim
        for i, code in enumerate(codes):
            lo, hi = sub.indptr[i], sub.indptr[i + 1]
            vals, js = sub.data[lo:hi], sub.indices[lo:hi]
            order = np.lexsort((js, -vals))[:k]
            for v, j in zip(vals[order], js[order]):
                if v >= floor:
                    rows.append((index[("phenotype", code)], index[("phenotype", codes[j])], "shared_diseases", float(v)))
    prior = pd.DataFrame(rows, columns=["source", "target", "kind", "weight"])
    return prior.sort_values(["kind", "source", "target"], ignore_index=True)


def build_study_codemap(graph: KnowledgeGraph, vocab: pd.DataFrame, diseases: list[str],
                        tables: Sequence[Path], candidates: Iterable[str] = ()) -> pd.DataFrame:
    """The bundle's code map (:mod:`kg.codemap`): graph xrefs plus curated tables, cut to the
    study's diseases, vocabulary and survey candidates (so a comorbidity a site codes in SNOMED CT
    reaches the survey as the HPO term it is, and a grown bundle can hold it)."""
    hpo_label, disease_label = source_labels(graph.manifest.get("sources", []), graph.manifest.get("hpo_release", ""))
    xrefs = xref_mappings(graph.xrefs, graph.nodes, hpo_source=hpo_label, orphanet_source=disease_label)
    return build_codemap(xrefs, [read_code_table(t) for t in tables],
                         in_scope=set(vocab["code"]) | set(diseases) | set(candidates))


def make_bundle(
    graph: KnowledgeGraph,
    study: Study,
    *,
    sign_key: Ed25519PrivateKey,
    out: str | Path,
    study_source: str = "<study>",
    overwrite: bool = False,
    code_tables: Sequence[str | Path] | None = None,
    candidate_lists: Sequence[str | Path] = (),
    growth: Growth | None = None,
    step: Step = lambda _: None,
) -> dict:
    """Compute, write and sign a study bundle; return its manifest.

    Parameters
    ----------
    code_tables
        Curated local-code mapping tables (:func:`kg.codemap.read_code_table`); None: the
        demo tables in ``kg/data``. Their rows join the graph's xrefs in ``codemap.parquet``.
    candidate_lists
        Public code lists (:func:`kg.candidates.read_candidate_list`) whose codes a vocabulary
        survey may also ask sites about, beside the graph's own (``candidates.parquet``).
    growth
        A grown bundle (:mod:`kg.growth`): its vocabulary, the consortium prevalence of codes the
        graph does not annotate and the provenance replace the graph's own choice; the study's time
        grid is the caller's (already grown).

    Raises
    ------
    ConfigError
        A study disease is not in the graph.
    InputError
        A code mapping table is missing or malformed.
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    ValueError
        A file name sites would refuse (:func:`shared.bundle.file_name_problem`); nothing is signed.
    """
    check_study_diseases(graph, study, source=study_source)
    diseases = list(study.study.diseases)
    tables = [Path(t) for t in (default_code_tables() if code_tables is None else code_tables)]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        step("scoring meta-paths")
        per_path = _domain_scores(graph, study, diseases)
        raw = _raw_scores(graph, study, diseases, per_path)
        step("choosing the vocabulary")
        vocab = build_vocabulary(graph, study, raw) if growth is None else growth.vocabulary
        step("writing score matrices")
        (tmp / "scores").mkdir()
        metric_dirs = {"pc": "pc", "dwpc": f"dwpc-{study.scoring.damping:g}"}
        for name, (domain, _) in FEATURE_METAPATHS.items():
            for metric, folder in metric_dirs.items():
                lm = per_path[name][metric]
                placed = _place(len(diseases), lm.col_ids, lm.matrix, vocab, domain)
                (tmp / "scores" / folder).mkdir(exist_ok=True)
                sp.save_npz(tmp / "scores" / folder / f"{name}.npz", placed.astype(np.float64), compressed=True)
        z = _standardize(raw, diseases, vocab, study.scoring.clip)
        unknown = ~vocab["code"].isin(graph.node_types.keys()).to_numpy()
        z[:, unknown] = 0.0  # a code the graph does not know: no evidence either way, not evidence against
        np.save(tmp / "scores" / "combined.npy", z.astype(np.float32), allow_pickle=False)
        freq = _frequency_table(graph, diseases, study.scoring.unknown_frequency)
        freq_dense = _dense_from_long(freq, "annotated", diseases, vocab, "phenotype", np.nan)
        if growth is not None:
            growth.fill_frequency(freq_dense, vocab)
        np.save(tmp / "scores" / "frequency.npy", freq_dense.astype(np.float32), allow_pickle=False)
        neg = _negative_table(graph, diseases).assign(flag=1.0)
        sp.save_npz(tmp / "negative.npz",
                    sp.csr_matrix(np.nan_to_num(_dense_from_long(neg, "flag", diseases, vocab, "phenotype", 0.0))),
                    compressed=True)
        step("building the prior graph")
        build_prior_graph(graph, study, vocab).to_parquet(tmp / "prior_graph.parquet", index=False)
        vocab.to_parquet(tmp / "vocabulary.parquet", index=False)
        pd.DataFrame({"index": np.arange(len(diseases)), "id": diseases,
                      "name": [graph.node_names.get(d, "") for d in diseases]}).to_parquet(
            tmp / "diseases.parquet", index=False)
        labs = graph.labs[graph.labs["id"].isin(vocab.loc[vocab["domain"] == "lab", "code"])]
        labs.rename(columns={"id": "code"}).sort_values("code").to_parquet(tmp / "labs.parquet", index=False)
        step("listing survey candidates")
        candidates = build_candidates(graph, vocab, candidate_lists)
        if growth is not None:  # the parent's public lists stay candidates of a later survey
            candidates = pd.concat([candidates, growth.parent_candidates[list(candidates.columns)]], ignore_index=True)
            candidates = candidates.drop_duplicates("code").sort_values("code", ignore_index=True)
        candidates.to_parquet(tmp / CANDIDATES, index=False)
        step("mapping local codes")
        codemap = build_study_codemap(graph, vocab, diseases, tables, candidates["code"])
        codemap.to_parquet(tmp / CODEMAP_FILE, index=False)
        if growth is not None:
            (tmp / GROWTH).write_text(json.dumps(growth.provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "study.json").write_text(json.dumps(study.model_dump(by_alias=True, mode="json"), indent=2,
                                                   sort_keys=True) + "\n")
        step("signing")
        names = bundle_files(tmp)
        for name in names:  # sites refuse any other name (shared.bundle, "File names"): never sign one
            if (problem := file_name_problem(name)) is not None:
                raise ValueError(f"bundle file name {name!r} {problem}; {NAME_RULE}")
        public = sign_key.public_key()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "study": study.study.name,
            "diseases": diseases,
            "vocabulary": {d: int((vocab["domain"] == d).sum()) for d in DOMAINS},
            "metapaths": {name: {"domain": d, "weight": study.scoring.weights.get(name, 0.0)}
                          for name, (d, _) in FEATURE_METAPATHS.items()},
            "graph": {
                "hpo_release": graph.manifest.get("hpo_release", ""),
                "sources": graph.manifest.get("sources", []),
                "tables": graph.manifest.get("tables", {}),
            },
            "codemap": codemap_summary(codemap, tables),
            **({"grown_from": growth.provenance["parent"]} if growth is not None else {}),
            "signer_key_id": key_id(public),
            "signer_public_key": public_key_b64(public),
            "files": {name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                      for name in names},
        }
        raw_manifest = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        (tmp / MANIFEST).write_bytes(raw_manifest)
        (tmp / SIGNATURE).write_text(sign(sign_key, raw_manifest) + "\n", encoding="ascii")
    return manifest


__all__ = ["build_prior_graph", "build_study_codemap", "build_vocabulary", "check_study_diseases", "make_bundle", "parse_metapath"]
