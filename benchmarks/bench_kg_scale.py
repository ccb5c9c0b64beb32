"""Benchmark the knowledge graph at PrimeKG size: parse, store, the bundle's meta-path
scores, time and peak memory; and the naive networkx baseline, extrapolated.

Usage::

    .venv/bin/python benchmarks/bench_kg_scale.py [--scale 1.0] [--repeat 3] [--workdir /tmp/kg-scale]
                                                  [--naive-scale 0.01] [--skip-naive] [--json]

Targets (issue 5): full build + the bundle's meta-path scores ≤ 60 s, parse included, and
peak memory ≤ 4 GiB, on 2 cores. The script measures and compares; it does not fail.

How it measures
---------------
1. ``benchmarks/primekg_shape.py`` writes a PrimeKG-shaped ``kg.csv`` (8,100,498 rows at
   scale 1) into ``--workdir`` (never into the repository).
2. Every stage runs in a fresh Python process (this script with ``--child``), so imports
   and caches start cold and one stage's memory cannot hide another's. A child runs the
   pipeline up to its stage and prints, per stage, the wall time (``time.perf_counter``
   after imports) and the process's peak RSS so far (``getrusage(RUSAGE_SELF).ru_maxrss``,
   which only grows: the peak of a later stage includes the earlier ones, which is the
   peak of the build up to there). Each child is run ``--repeat`` times; the table shows
   medians (and min–max).
3. Stages: (a) generate ``kg.csv`` (not part of the target); (b) ``parse_kg_csv``;
   (c) the graph store: ``build_graph(Sources.default(primekg=...))`` when
   ``kg.assembly.pipeline.Sources`` has a ``primekg`` field (the real build: PrimeKG merged with the
   embedded HPO data and curated layer; it parses ``kg.csv`` itself), otherwise the
   *direct path*: the embedded ``build_graph(Sources.default())`` plus the parsed PrimeKG
   merged into one :class:`~kg.store.KnowledgeGraph` by :func:`merge_primekg`; (d) the
   bundle's meta-path scores: every meta-path of ``FEATURE_METAPATHS``, ``pc`` and
   ``dwpc`` (the study's damping), from the demo study's diseases plus their MONDO ids
   (:data:`benchmarks.primekg_shape.STUDY_MONDO`; without the identifier crosswalk the
   ORPHA nodes do not touch PrimeKG's edges), exactly the calls ``make_bundle`` makes; (e)
   the target: (b) + (c) + (d), or (c) + (d) on the real build path; then, on the same
   graph, two more rows: PathSim ``DhPhD`` top 10 from *every* disease (the symmetric
   disease–disease meta-path, computed in row blocks) and ``make_bundle`` for the demo
   study (adjacency cache warm from (d)).
4. Naive baseline (as the issue asks): a ``networkx.MultiGraph`` read row by row from a
   ``--naive-scale`` sample ``kg.csv`` and explicit depth-first path enumeration (no node
   repeated, pc and DWPC) for the meta-paths PrimeKG alone can walk (``DhP``, ``DaGhP``,
   ``DhPiP``, ``DtC``, ``DtCeP``; the lab ones need the curated layer) from the study's
   MONDO diseases. Extrapolation to full size: building the graph is linear in rows, so
   its time and its memory above the interpreter's baseline are multiplied by
   rows(full) / rows(sample). Path enumeration costs one step per partial path, and the
   number of partial paths grows with the product of the degrees along the path, not
   with the rows: so its time is multiplied by (partial paths at full size) / (partial
   paths in the sample), where the full-size count is exact, computed with sparse path
   counts of every prefix of every meta-path on the full PrimeKG-only graph. That ratio
   assumes the same cost per partial path at both sizes (optimistic for the naive side:
   bigger dicts are slower), and the baseline skips the HPO layer our graph carries, so
   the ratios we report are lower bounds.

Timings on a shared machine vary; medians of ``--repeat`` runs are the figures to quote.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_kg import machine  # noqa: E402

TARGET_S = 60.0  # issue 5: full build + the bundle's meta-path scores, parse included
TARGET_MIB = 4 * 1024.0  # issue 5: peak memory
TOP_K = 10
NAIVE_METAPATHS: dict[str, tuple[tuple[str, str], ...]] = {  # meta-path → (PrimeKG relation, next node type)
    "DhP": (("disease_phenotype_positive", "effect/phenotype"),),
    "DaGhP": (("disease_protein", "gene/protein"), ("phenotype_protein", "effect/phenotype")),
    "DhPiP": (("disease_phenotype_positive", "effect/phenotype"), ("phenotype_phenotype", "effect/phenotype")),
    "DtC": (("indication", "drug"),),
    "DtCeP": (("indication", "drug"), ("drug_effect", "effect/phenotype")),
}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def real_build_path() -> bool:
    """True when ``kg.assembly.pipeline.Sources`` takes a PrimeKG file (the real build path exists)."""
    from kg.assembly.pipeline import Sources

    return "primekg" in {f.name for f in fields(Sources)}


# --------------------------------------------------------------------------- the direct path

_UNDIRECTED_PROJECT = {"phenotype_phenotype": "is_a"}


def merge_primekg(base, primekg):
    """One KnowledgeGraph from a built graph (embedded HPO + curated) and a parsed PrimeKG.

    Stand-in for the real build until ``build_graph`` reads PrimeKG itself: nodes already in
    ``base`` keep their row (HPO terms, genes, drugs); PrimeKG relations that the project
    has (:attr:`PrimeKGRelation.project`) take the project name, the others keep PrimeKG's;
    ``display_relation`` becomes the edge qualifier. Edge columns are categoricals over the
    merged node ids, so 4 M edges cost a few bytes each.
    """
    from kg.sources.primekg import RELATIONS as PRIMEKG_RELATIONS
    from kg.store import KnowledgeGraph

    pn, pe = primekg.nodes, primekg.edges
    prime_nodes = pd.DataFrame({"id": pn["id"].to_numpy(dtype=object), "type": pn["type"].to_numpy(dtype=object),
                                "name": pn["name"].to_numpy(dtype=object), "source": "PrimeKG kg.csv",
                                "obsolete": False})
    nodes = pd.concat([base.nodes.astype({c: object for c in ("id", "type", "name", "source")}), prime_nodes],
                      ignore_index=True)
    nodes = nodes.drop_duplicates("id", keep="first").sort_values("id", ignore_index=True)
    ids = pd.Index(nodes["id"].to_numpy(dtype=object))
    prime_pos = ids.get_indexer(pn["id"].to_numpy(dtype=object))
    be = base.edges
    source = np.concatenate([ids.get_indexer(be["source"].to_numpy(dtype=object)), prime_pos[pe["source"].to_numpy()]])
    target = np.concatenate([ids.get_indexer(be["target"].to_numpy(dtype=object)), prime_pos[pe["target"].to_numpy()]])
    # phenotype_phenotype is HPO is_a without its direction, which is how meta-paths walk is_a
    names = {r: (PRIMEKG_RELATIONS[r].project or _UNDIRECTED_PROJECT.get(r, r))
             for r in pe["relation"].cat.categories}
    relation = pe["relation"].cat.rename_categories(names)

    def column(base_values, prime_values) -> pd.Categorical:
        from pandas.api.types import union_categoricals

        prime = pd.Categorical(prime_values)
        prime = pd.Categorical.from_codes(prime.codes, categories=pd.Index(prime.categories, dtype=object))
        return union_categoricals([pd.Categorical(np.asarray(base_values, dtype=object)), prime], ignore_order=True)

    n_prime = len(pe)
    edges = pd.DataFrame({
        "source": pd.Categorical.from_codes(source, categories=ids),
        "target": pd.Categorical.from_codes(target, categories=ids),
        "relation": column(be["relation"], relation),
        "weight": np.concatenate([be["weight"].to_numpy(dtype=np.float64), np.full(n_prime, np.nan)]),
        "provenance": column(be["provenance"], pd.Categorical.from_codes(np.zeros(n_prime, np.int8),
                                                                         categories=["PrimeKG kg.csv"])),
        "qualifier": column(be["qualifier"], pe["display_relation"]),
        "onset": column(be["onset"], pd.Categorical.from_codes(np.zeros(n_prime, np.int8), categories=[""])),
        "sex": column(be["sex"], pd.Categorical.from_codes(np.zeros(n_prime, np.int8), categories=[""])),
    })
    return KnowledgeGraph(nodes=nodes, edges=edges, synonyms=base.synonyms, xrefs=base.xrefs, labs=base.labs,
                          manifest=dict(base.manifest))


# --------------------------------------------------------------------------- children


def _study_sources(graph, study) -> list[str]:
    from benchmarks.primekg_shape import STUDY_MONDO

    types = graph.node_types
    wanted = list(study.study.diseases) + [f"MONDO:{m:07d}" for m, _ in STUDY_MONDO.values()]
    return [d for d in wanted if types.get(d) == "disease"]


def child(stage: str, csv: Path, workdir: Path, scale: float, seed: int) -> None:
    """Run the pipeline up to ``stage`` in this fresh process; print one JSON line."""
    times: dict[str, float] = {}
    rss: dict[str, float] = {}
    info: dict[str, object] = {}

    def timed(name: str, fn):
        start = time.perf_counter()
        value = fn()
        times[name] = time.perf_counter() - start
        rss[name] = peak_rss_mib()
        return value

    if stage == "generate":
        from benchmarks.primekg_shape import generate

        info["generated"] = timed("generate", lambda: generate(csv, scale=scale, seed=seed, quiet=True))
        print(json.dumps({"times": times, "rss": rss, "info": info}))
        return
    if stage == "naive":
        info.update(naive(csv, times, rss))
        print(json.dumps({"times": times, "rss": rss, "info": info}))
        return
    if stage == "work":  # untimed, for the naive extrapolation
        from benchmarks.primekg_shape import STUDY_MONDO

        info["naive_work"] = primekg_partial_paths(csv, [f"MONDO:{m:07d}" for m, _ in STUDY_MONDO.values()])
        print(json.dumps({"times": times, "rss": rss, "info": info}))
        return
    from kg.assembly.pipeline import Sources, build_graph
    from kg.metapaths import FEATURE_METAPATHS
    from kg.scoring import metapath_scores, pathsim
    from kg.sources.primekg import parse_kg_csv
    from kg.embedded import default_study
    from kg.study import load_study

    rss["start"] = peak_rss_mib()
    real = real_build_path()
    info["path"] = "real" if real else "direct"
    if stage == "parse" or not real:
        primekg = timed("parse", lambda: parse_kg_csv(csv))
    if stage == "parse":
        info["rows"] = primekg.stats.rows_read
        print(json.dumps({"times": times, "rss": rss, "info": info}))
        return
    if real:
        graph = timed("store", lambda: build_graph(Sources.default(primekg=csv)))
    else:
        graph = timed("store", lambda: merge_primekg(build_graph(Sources.default()), primekg))
        del primekg
    info["nodes"], info["edges"] = len(graph.nodes), len(graph.edges)
    if stage == "store":
        print(json.dumps({"times": times, "rss": rss, "info": info}))
        return
    study = load_study(default_study())  # the demo study (kg.embedded imports no torch)
    sources = _study_sources(graph, study)
    info["sources"] = sources
    damping = study.scoring.damping

    def scores() -> dict[str, int]:
        nnz = {}
        for name in FEATURE_METAPATHS:
            for metric in ("pc", "dwpc"):
                lm = metapath_scores(graph, name, metric=metric, damping=damping, sources=sources)
                nnz[f"{name} {metric}"] = int(lm.matrix.nnz)
        return nnz

    info["nnz"] = timed("scores", scores)
    diseases = list(graph.ids_of_type("disease"))
    info["diseases"] = len(diseases)
    sim = timed("pathsim_all", lambda: pathsim(graph, "DhPhD", sources=diseases, top_k=TOP_K))
    info["pathsim_nnz"] = int(sim.matrix.nnz)
    del sim
    from kg.bundle import make_bundle
    from shared.signing.keys import load_private_key, new_keypair

    with tempfile.TemporaryDirectory(prefix="bench-kg-scale-", dir=workdir) as tmp:
        key = load_private_key(new_keypair(Path(tmp) / "key")[0])
        manifest = timed("bundle", lambda: make_bundle(graph, study, sign_key=key, out=Path(tmp) / "bundle"))
        info["vocabulary"] = manifest["vocabulary"]
    print(json.dumps({"times": times, "rss": rss, "info": info}))


def primekg_partial_paths(csv: Path, sources: list[str]) -> dict[str, int]:
    """Per naive meta-path: partial paths (every prefix, no repeated node) from ``sources``
    on the PrimeKG-only graph, by sparse path counts (what the naive DFS would visit)."""
    from kg.metapaths import parse_metapath
    from kg.scoring import metapath_scores
    from kg.sources.primekg import parse_kg_csv
    from kg.store import KnowledgeGraph, empty_edges, empty_nodes

    empty = KnowledgeGraph(nodes=empty_nodes(), edges=empty_edges(),
                           synonyms=pd.DataFrame(columns=["id", "synonym", "scope"]),
                           xrefs=pd.DataFrame(columns=["id", "xref", "kind"]),
                           labs=pd.DataFrame(columns=["id", "name", "unit", "low", "high", "citation"]))
    graph = merge_primekg(empty, parse_kg_csv(csv))
    types = graph.node_types
    sources = [s for s in sources if types.get(s) == "disease"]
    work = {}
    for name in NAIVE_METAPATHS:
        total = len(sources)
        for end in range(3, len(name) + 1, 2):
            prefix = name[:end]
            parse_metapath(prefix)
            total += int(metapath_scores(graph, prefix, metric="pc", sources=sources).matrix.sum())
        work[name] = total
    return work


def naive(csv: Path, times: dict, rss: dict) -> dict:
    """networkx graph from kg.csv, then explicit path enumeration (pc and DWPC)."""
    import csv as csv_module

    import networkx as nx

    from benchmarks.primekg_shape import STUDY_MONDO

    rss["start"] = peak_rss_mib()

    def build() -> tuple[nx.MultiGraph, int]:
        g = nx.MultiGraph()
        n = 0
        with open(csv, newline="", encoding="utf-8") as fh:
            reader = csv_module.reader(fh)
            next(reader)
            for row in reader:
                x = (row[4], row[3])
                y = (row[9], row[8])
                g.add_node(x, name=row[5], source=row[6])
                g.add_node(y, name=row[10], source=row[11])
                g.add_edge(x, y, key=row[0], display=row[1])
                n += 1
        return g, n

    g, rows = timed_into(times, rss, "naive_build", build)
    sources = [("disease", str(m)) for m, _ in STUDY_MONDO.values() if ("disease", str(m)) in g]
    degree_memo: dict = {}

    def degree(node, relation: str, other_type: str) -> int:
        key = (node, relation, other_type)
        if key not in degree_memo:
            degree_memo[key] = sum(1 for _, v, k in g.edges(node, keys=True) if k == relation and v[0] == other_type)
        return degree_memo[key]

    def enumerate_paths() -> tuple[dict, int]:
        scores: dict = {}
        visits = 0
        for name, steps in NAIVE_METAPATHS.items():
            for s in sources:
                stack = [(s, (s,), 1.0)]
                while stack:
                    node, path, w = stack.pop()
                    visits += 1
                    depth = len(path) - 1
                    if depth == len(steps):
                        acc = scores.setdefault((name, s, node), [0, 0.0])
                        acc[0] += 1
                        acc[1] += w
                        continue
                    relation, next_type = steps[depth]
                    prev_type = node[0]
                    for _, v, k in g.edges(node, keys=True):
                        if k != relation or v[0] != next_type or v in path:
                            continue
                        dw = (degree(node, relation, next_type) * degree(v, relation, prev_type)) ** -0.4
                        stack.append((v, path + (v,), w * dw))
        return scores, visits

    scores, visits = timed_into(times, rss, "naive_enumerate", enumerate_paths)
    return {"rows": rows, "visits": visits, "pairs": len(scores), "nodes": g.number_of_nodes(),
            "edges": g.number_of_edges(), "sources": [f"MONDO:{int(i):07d}" for _, i in sources]}


def timed_into(times: dict, rss: dict, name: str, fn):
    start = time.perf_counter()
    value = fn()
    times[name] = time.perf_counter() - start
    rss[name] = peak_rss_mib()
    return value


# --------------------------------------------------------------------------- parent


def run_child(stage: str, csv: Path, workdir: Path, scale: float, seed: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--csv", str(csv),
           "--workdir", str(workdir), "--scale", str(scale), "--seed", str(seed)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"benchmark stage {stage!r} failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def cell(s: dict, digits: int = 1) -> str:
    med, lo, hi = (f"{s[k]:,.{digits}f}" for k in ("median", "min", "max"))
    return med if s["n"] == 1 else f"{med} ({lo}–{hi})"


def run(args: argparse.Namespace) -> dict:
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    csv = workdir / "kg.csv"
    runs: dict[str, list[dict]] = {s: [] for s in ("generate", "parse", "store", "scores")}
    for i in range(args.repeat):
        for stage in runs:
            print(f"  run {i + 1}/{args.repeat}: {stage}", file=sys.stderr)
            runs[stage].append(run_child(stage, csv, workdir, args.scale, args.seed))
    result: dict = {"scale": args.scale, "seed": args.seed, "repeat": args.repeat, "machine": machine(),
                    "path": runs["scores"][0]["info"]["path"], "runs": runs}
    if not args.skip_naive:
        sample = workdir / "kg_sample.csv"
        print(f"  naive: generating the {args.naive_scale:g} sample", file=sys.stderr)
        result["naive_generate"] = run_child("generate", sample, workdir, args.naive_scale, args.seed)
        result["naive_work"] = run_child("work", csv, workdir, args.scale, args.seed)["info"]["naive_work"]
        result["naive"] = []
        for i in range(args.repeat):
            print(f"  naive run {i + 1}/{args.repeat}", file=sys.stderr)
            result["naive"].append(run_child("naive", sample, workdir, args.naive_scale, args.seed))
    return result


def table(r: dict) -> str:
    runs = r["runs"]
    t = lambda stage, key: summary([x["times"][key] for x in runs[stage]])  # noqa: E731
    m = lambda stage, key: summary([x["rss"][key] for x in runs[stage]])  # noqa: E731
    real = r["path"] == "real"
    info = runs["scores"][0]["info"]
    gen = runs["generate"][0]["info"]["generated"]
    total = summary([x["times"]["store"] + x["times"]["scores"] + (0.0 if real else x["times"]["parse"])
                     for x in runs["scores"]])
    title = ("real build path: build_graph(Sources.default(primekg=kg.csv))" if real else
             "direct path: Sources has no primekg field yet, so parse_kg_csv + build_graph(Sources.default()) "
             "merged by merge_primekg")
    lines = [
        f"## Knowledge graph at PrimeKG scale ({title})",
        "",
        f"- kg.csv: scale {r['scale']:g}, seed {r['seed']}: {gen['rows']:,} rows, {gen['nodes']:,} nodes; "
        f"merged graph {info['nodes']:,} nodes, {info['edges']:,} edges",
        f"- {r['machine']['cpus_usable']} usable CPUs ({r['machine']['cpu']}), Python {r['machine']['python']}; "
        f"each stage in a fresh process; medians of {r['repeat']} run(s), (min–max)",
        f"- scores from {len(info['sources'])} sources: {', '.join(info['sources'])}",
        "",
        "| stage | wall (s) | peak RSS (MiB) | target |",
        "|---|---:|---:|---|",
        f"| (a) generate kg.csv (not part of the target) | {cell(t('generate', 'generate'))} "
        f"| {cell(m('generate', 'generate'), 0)} | |",
        f"| (b) parse kg.csv (`parse_kg_csv`) | {cell(t('parse', 'parse'))} | {cell(m('parse', 'parse'), 0)} | |",
        f"| (c) build the graph store{' (parse included)' if real else ' (embedded HPO build + merge)'} "
        f"| {cell(t('store', 'store'))} | {cell(m('store', 'store'), 0)} | |",
        f"| (d) the bundle's meta-path scores (7 meta-paths × pc, dwpc) | {cell(t('scores', 'scores'), 2)} "
        f"| {cell(m('scores', 'scores'), 0)} | |",
        f"| (e) total: {'(c) + (d)' if real else '(b) + (c) + (d)'}, per run, then the median | {cell(total)} | {cell(m('scores', 'scores'), 0)} "
        f"| ≤ {TARGET_S:.0f} s: {'met' if total['median'] <= TARGET_S else 'NOT met'}; "
        f"≤ {TARGET_MIB / 1024:.0f} GiB: {'met' if m('scores', 'scores')['median'] <= TARGET_MIB else 'NOT met'} |",
        f"| PathSim `DhPhD` top {TOP_K}, all {info['diseases']:,} diseases (after (d)) "
        f"| {cell(t('scores', 'pathsim_all'), 2)} | {cell(m('scores', 'pathsim_all'), 0)} | |",
        f"| `make_bundle`, demo study (after the above, warm matrices) | {cell(t('scores', 'bundle'), 2)} "
        f"| {cell(m('scores', 'bundle'), 0)} | |",
    ]
    if r.get("naive"):
        nv = r["naive"]
        ninfo = nv[0]["info"]
        rows_ratio = gen["rows"] / ninfo["rows"]
        work_full = sum(r["naive_work"].values())
        work_ratio = work_full / ninfo["visits"]
        build = summary([x["times"]["naive_build"] for x in nv])
        enum = summary([x["times"]["naive_enumerate"] for x in nv])
        base_rss = statistics.median([x["rss"]["start"] for x in nv])
        peak = statistics.median([x["rss"]["naive_enumerate"] for x in nv])
        ext_build = build["median"] * rows_ratio
        ext_enum = enum["median"] * work_ratio
        ext_rss = base_rss + (peak - base_rss) * rows_ratio
        ext_total = ext_build + ext_enum
        lines += [
            "",
            f"### Naive baseline: networkx + path enumeration (sample scale {r['naive_generate']['info']['generated']['scale']:g})",
            "",
            f"- sample: {ninfo['rows']:,} rows ({ninfo['edges']:,} multigraph edges, {ninfo['nodes']:,} nodes); "
            f"meta-paths {', '.join(NAIVE_METAPATHS)} from {len(ninfo['sources'])} study MONDO diseases; "
            f"{ninfo['visits']:,} partial paths visited",
            f"- extrapolation: build × rows ratio {rows_ratio:,.1f}; enumeration × partial-path ratio "
            f"{work_ratio:,.1f} ({work_full:,} partial paths at full size, exact sparse counts); "
            f"memory above the interpreter baseline × rows ratio",
            "",
            "| | sample wall (s) | sample peak RSS (MiB) | extrapolated wall (s) | extrapolated RSS (MiB) |",
            "|---|---:|---:|---:|---:|",
            f"| networkx graph from kg.csv | {cell(build, 2)} | {statistics.median([x['rss']['naive_build'] for x in nv]):,.0f} "
            f"| {ext_build:,.0f} | {ext_rss:,.0f} |",
            f"| path enumeration (pc + DWPC) | {cell(enum, 3)} | {peak:,.0f} | {ext_enum:,.1f} | |",
            f"| naive total | | | {ext_total:,.0f} | {ext_rss:,.0f} |",
            f"| **ratio naive / ours (e)** | | | **{ext_total / total['median']:,.1f}× slower** "
            f"| **{ext_rss / m('scores', 'scores')['median']:,.1f}× more memory** |",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="size of the generated kg.csv (1.0 = PrimeKG)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs per stage (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "raregraph-kg-scale",
                        help="where kg.csv files are written (outside the repository)")
    parser.add_argument("--naive-scale", type=float, default=0.01, help="sample size for the networkx baseline")
    parser.add_argument("--skip-naive", action="store_true", help="no networkx baseline")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--child", choices=["generate", "parse", "store", "scores", "naive", "work"], help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.csv, args.workdir, args.scale, args.seed)
        return
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if ROOT in args.workdir.resolve().parents or args.workdir.resolve() == ROOT:
        parser.error("--workdir must be outside the repository (kg.csv is ~1 GB)")
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
