"""``raregraph federate``: federated DP training of simulated sites on Flower's simulation
engine (one virtual SuperNode per site folder), from the command line.

The engine is driven by :mod:`deploy.simulation`; this module holds the command (its
options become the sites' node configs and the run config) and the tables it prints. The
command imports the engine (Flower, torch, Opacus) when it runs, not when the command line
loads (issue 23). Its options may also come from the ``[federate]`` table of a ``--config``
file (:mod:`shared.cli_config`; documented by ``deploy/run.example.toml``); what the run used
is written to ``RUN/run-config.resolved.toml``. ``--method`` fits a baseline instead (each site
under its own budget, pooled: :mod:`raregraph.api.baseline_run`) and ``--epsilon inf`` trains
without DP (:mod:`raregraph.api.nonprivate_client`); both end in the same run folder layout.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from raregraph.api.federation import parse_sites, plan_federation, run_federation
from server.config import RunConfig
from shared.cli_config import resolved_config, site_path_value, with_config_file
from shared.console import cli_errors, console, err_console, print_json
from shared.errors import InputError
from shared.privacy.audit.cli import print_audit_summary
from shared.privacy.settings import DEFAULT_CLIP_NORM
from shared.runs import RunFolder

__all__ = ["federate", "parse_sites", "print_site_evaluation"]  # parse_sites: raregraph.api's, kept here for callers


@with_config_file("federate", path_values={"sites": site_path_value})
def federate(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Option("--bundle", help="The signed study bundle.")],
    pub: Annotated[Path, typer.Option("--pub", help="Coordinator public key (pinned by every site).")],
    sites: Annotated[list[str], typer.Option("--sites", help="Site folders, one virtual hospital each (repeat the option): PATH (the folder's name is the site id) or ID=PATH (e.g. site-1=hospitals/a/train).")],
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="Each site's privacy budget ε (lifetime, per dataset); inf: no DP at all, a reference for evaluation (nothing is charged; never release it).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: model/, privacy.json, checkpoint/, state/.")],
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Federated rounds.")] = 5,
    planned_rounds: Annotated[int, typer.Option("--planned-rounds", min=0, help="Rounds sites calibrate their noise for (0: --rounds); larger when later runs will continue.")] = 0,
    delta: Annotated[float, typer.Option("--delta", help="Each site's δ.")] = 1e-5,
    method: Annotated[str, typer.Option("--method", help="diffusion (ours, federated with Flower; --guidance picks the variant), or a baseline fitted at every site under its own (ε, δ) and pooled: marginals (independent per-disease marginals), dpgan (a conditional GAN, FedAvg) or prior (the bundle's public knowledge alone, nothing spent).")] = "diffusion",
    guidance: Annotated[str, typer.Option("--guidance", help="kg (knowledge-guided), none (plain diffusion) or learned (learned schedule, no graph).")] = "kg",
    pretrain_steps: Annotated[int, typer.Option("--pretrain-steps", min=0, help="Coordinator pretraining steps on patients drawn from the bundle's public knowledge (kg guidance only; no privacy cost).")] = 1000,
    local_steps: Annotated[int, typer.Option("--local-steps", min=1, help="DP-SGD steps per site per round.")] = 50,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Expected Poisson batch per site.")] = 32,
    clip_norm: Annotated[float, typer.Option("--clip-norm", min=0.0, help="Per-patient gradient clip norm.")] = DEFAULT_CLIP_NORM,
    noise_multiplicity: Annotated[int, typer.Option("--noise-multiplicity", min=1, help="Diffusion noise draws per patient and step.")] = 4,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Site learning rate.")] = 2e-3,
    state_root: Annotated[Path | None, typer.Option("--state-root", help="Per-site state folders [default: OUT/state]; reuse it to keep composing ε across runs.")] = None,
    min_sites: Annotated[int, typer.Option("--min-sites", min=1, help="Replies a round needs.")] = 1,
    evaluate_fraction: Annotated[float, typer.Option("--evaluate-fraction", min=0.0, max=1.0, help="Share of sites asked for a DP evaluation of the global model after each round.")] = 0.0,
    eval_noise_multiplier: Annotated[float, typer.Option("--eval-noise-multiplier", min=0.0, help="σ of each site's DP evaluation release (charged to its budget); 0: sites decline.")] = 0.0,
    holdouts: Annotated[list[Path] | None, typer.Option("--holdout", help="Each site's held-out patients (repeat, in --sites order): the evaluation suite's membership and utility tests.")] = None,
    eval_per_disease: Annotated[int, typer.Option("--eval-per-disease", min=0, help="Synthetic patients per disease each site evaluates at the end (0: no federated evaluation).")] = RunConfig.eval_per_disease,
    seed: Annotated[int, typer.Option("--seed", help="Initial weights and site randomness.")] = 0,
    serve_port: Annotated[int | None, typer.Option("--serve-port", min=1, max=65535, help="Also serve the live view of the run (as `raregraph serve`) on 127.0.0.1:PORT while it runs \\[default: not served].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-round progress.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print privacy.json at the end.")] = False,
) -> None:
    """Federated training with DP-SGD at every site on Flower's simulation engine; ends with
    OUT/model for `raregraph generate` and OUT/privacy.json with every site's rounds and ε.
    --method runs a baseline the same way (its model in OUT/model, its spending in the sites'
    ledgers); --epsilon inf trains without DP, for reference.

    Example: raregraph federate --bundle out/bundle --pub keys/coordinator.pub --sites sites/site-1 --sites site-2=hospitals/b/train --rounds 3 --epsilon 4 --out out/run

    A baseline: raregraph federate --method marginals --bundle out/bundle --pub keys/coordinator.pub --sites sites/site-1 --sites sites/site-2 --epsilon 4 --out out/run-marginals

    Or with the settings in a file, one of them overridden: raregraph federate --config run.toml --rounds 5
    """
    from server.dashboard.beside import serve_beside

    with cli_errors():
        # everything is checked before the first file is written (site keys, the run folder)
        settings = resolved_config(ctx)
        if serve_port and method != "diffusion":
            raise InputError(f"{settings.label('serve-port')}: the live view follows a federation's rounds; "
                             f"method {method!r} fits in one step")
        plan = plan_federation(bundle, pub, sites, out=out, epsilon=epsilon, rounds=rounds,
                               planned_rounds=planned_rounds, delta=delta, guidance=guidance,
                               pretrain_steps=pretrain_steps, local_steps=local_steps, batch_size=batch_size,
                               clip_norm=clip_norm, noise_multiplicity=noise_multiplicity, lr=lr,
                               state_root=state_root, min_sites=min_sites, evaluate_fraction=evaluate_fraction,
                               eval_noise_multiplier=eval_noise_multiplier, holdouts=holdouts,
                               eval_per_disease=eval_per_disease, seed=seed, method=method, label=settings.label)
        run = plan.run
        settings.write(RunFolder(run.run_dir).resolved_config)
        with serve_beside(run.run_dir, port=serve_port) if serve_port else nullcontext() as url:
            if url and not (quiet or json_out):
                err_console.print(f"live view: {url} (while the run goes; `raregraph serve {out}` afterwards)",
                                  highlight=False)
            result = run_federation(plan, show_progress=not (quiet or json_out))
        privacy, audit = result.privacy, result.audit
    if json_out:
        print_json({**privacy, "audit": audit.to_json() if audit is not None else None})
        raise typer.Exit(0 if result.ok else 1)
    table = Table(title=f"privacy spent per site ({out / 'privacy.json'})", show_edge=False)
    for col in ("site", "rounds trained" if method == "diffusion" else "fits", "sat out", "ε spent",
                "budget", "σ", "q"):
        table.add_column(col, justify="left" if col == "site" else "right")
    for site, rows in sorted(privacy["sites"].items()):
        train = [r for r in rows if r["kind"] == "train"]
        last = train[-1] if train else None  # a site may have released its disease mix and then no round
        table.add_row(site, str(sum(not r["refused"] for r in train)), str(sum(bool(r["refused"]) for r in train)),
                      f"{max(r['epsilon'] for r in rows):.3f}", f"{last['budget-epsilon']:.3f}" if last else "–",
                      f"{last['noise-multiplier']:.3f}" if last else "–", f"{last['sample-rate']:.4f}" if last else "–")
    console.print(table)
    print_site_evaluation(run.run_dir)
    if not plan.private:
        err_console.print("[bold red]NOT differentially private[/] (--epsilon inf): the model and its samples may "
                          "reveal training patients; a reference for evaluation only, never release it", highlight=False)
    if note := privacy.get("note"):
        console.print(f"privacy record ({method}): {note}", highlight=False)
    console.print(f"model: {out / 'model'} (sample with `raregraph generate {out / 'model'} --bundle {bundle} ...`)")
    if audit is None:
        console.print("privacy ledgers: none (nothing was charged, so there is nothing for `raregraph audit` to check)")
        return
    print_audit_summary(audit, run.run_dir)
    if not audit.ok:
        raise typer.Exit(1)


def print_site_evaluation(run_dir: Path) -> dict | None:
    """The federated evaluation's table (RUN/evaluation/summary.json), if the run had one."""
    path = RunFolder(run_dir).evaluation_summary
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    table = Table(title=f"synthetic sample evaluated at each site ({path.parent}/<site>/report.md); "
                        "aggregate numbers, not covered by ε", show_edge=False)
    columns = (("patients", "counts.real", ",.0f"), ("held out", "counts.holdout", ",.0f"),
               ("MMD²_u", "fidelity.mmd2", ".4f"), ("real vs held-out MMD²_u", "fidelity.mmd2_baseline_holdout", ".4f"),
               ("prevalence R²", "fidelity.prevalence_r2_identity", ".3f"),
               ("prevalence R², all recorded codes", "recorded.prevalence_r2_identity", ".3f"),
               ("ceiling", "recorded.round_trip.prevalence_r2_identity", ".3f"),
               ("phenotype pairs supported", "plausibility.phenotype_pairs_supported", ".1%"),
               ("DCR membership AUROC", "privacy.dcr_membership_auroc", ".3f"),
               ("DOMIAS AUROC", "privacy.domias_auroc", ".3f"))
    table.add_column("site")
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    rows = [*summary["sites"].items(), ("pooled", summary["pooled"])]
    for site, values in rows:
        table.add_row(site, *(format(values[key], fmt) if values.get(key) is not None else "—" for _, key, fmt in columns))
    console.print(table)
    for site, reason in {**summary["declined"], **summary["failed"]}.items():
        err_console.print(f"[yellow]evaluation[/] {site}: {reason}", highlight=False)
    return summary
