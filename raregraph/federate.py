"""``raregraph federate``: federated DP training of simulated sites on Flower's simulation
engine (one virtual SuperNode per site folder), from the command line.

The apps are the same ``client.app`` and ``server.app`` that ``flwr run .`` and the
deployment use; here their configuration is bound in (the simulation engine gives nodes
only a partition id), built from this command's options.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from client.app import make_app as make_client_app
from client.config import NodeConfig
from server.app import make_app as make_server_app
from server.config import RunConfig
from shared import protocol as P
from shared.console import cli_errors, console, err_console, print_json
from shared.atomic import write_bytes_atomic
from shared.privacy.audit.audit import AuditResult, audit_ledgers
from shared.privacy.dp_sgd import DEFAULT_CLIP_NORM
from shared.model.layout import guidance_problem
from shared.errors import InputError, RareGraphError
from shared.evaluation.suite import EVALUATION_DIR
from shared.privacy.ledger import LEDGER_DIR
from shared.signing.keys import new_keypair

SITE_KEYS_DIR = "site-keys"  # RUN/site-keys/<site-id>.pub: the sites' public keys, for the server and auditors


def site_nodes(sites: list[Path], *, state_root: Path, pub: Path, epsilon: float, delta: float, clip_norm: float,
               batch_size: int, noise_multiplicity: int, eval_noise_multiplier: float = 0.0,
               holdouts: list[Path] | None = None) -> list[NodeConfig]:
    """One node config per site folder; state folders under ``state_root``; ``holdouts``, when
    given, one held-out folder per site (its ``holdout-path``), in the same order.

    Each simulated site gets its own Ed25519 identity key in its state folder
    (``STATE/<site>/identity/site.key``), made on first use and kept: the key signs the
    site's ledger across every run over the same state.
    """
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise InputError("site folders must have distinct names (they name the state folders)")
    if holdouts and len(holdouts) != len(sites):
        raise InputError(f"{len(holdouts)} held-out folders for {len(sites)} sites: give one per site, in order, or none")
    nodes = []
    for i, s in enumerate(sites):
        state = (state_root / s.name).resolve()
        key = state / "identity" / "site.key"
        if not key.exists():
            new_keypair(key.with_suffix(""))
        nodes.append(NodeConfig(site_id=s.name, data_path=s.resolve(), state_path=state, coordinator_pub=pub.resolve(),
                                site_key=key, epsilon=epsilon, delta=delta, clip_norm=clip_norm, batch_size=batch_size,
                                noise_multiplicity=noise_multiplicity, threads=1,
                                eval_noise_multiplier=eval_noise_multiplier,
                                holdout_path=holdouts[i].resolve() if holdouts else None))
    return nodes


def publish_site_keys(nodes: list[NodeConfig], folder: Path) -> Path:
    """Copy each site's public key to ``folder/<site-id>.pub`` (what the coordinator and the
    auditor hold); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for node in nodes:
        write_bytes_atomic(folder / f"{node.site_id}.pub", node.site_key.with_suffix(".pub").read_bytes())
    return folder


def run_simulated(run: RunConfig, nodes: list[NodeConfig], *, show_progress: bool, client_app=None,
                  after_round=None) -> dict:
    """Run the federation on the simulation engine; return privacy.json's content.

    ``client_app`` replaces the standard ClientApp (tests use it to play a faulty site);
    ``after_round(row)`` runs after each round's checkpoint (tests use it to stop the
    coordinator mid-run).
    """
    from flwr.simulation import run_simulation

    for key, value in (("FLWR_TELEMETRY_ENABLED", "0"), ("FLWR_DISABLE_UPDATE_CHECK", "1"),
                       ("RAY_DEDUP_LOGS", "0")):
        os.environ.setdefault(key, value)

    def on_round(row: dict, privacy: dict[str, list[dict]]) -> None:
        if after_round is not None:
            after_round(row)
        if not show_progress:
            return
        loss = row["metrics"].get(P.LOSS)
        rows_now = {site: [r for r in rows if r["kind"] == "train"] for site, rows in privacy.items()}
        eps = ", ".join(f"{site} ε={rows[-1]['epsilon']:.2f}{' (sat out)' if rows[-1]['refused'] else ''}"
                        for site, rows in sorted(rows_now.items()) if rows and rows[-1]["round"] == row["round"])
        err_console.print(f"round {row['round']}/{run.rounds}: {row['aggregated']}/{row['replies']} sites averaged"
                          f"{f', loss {loss:.3f}' if loss is not None else ''}; {eps}", highlight=False)

    client = client_app or make_client_app(lambda context: nodes[int(context.node_config["partition-id"])])
    server = make_server_app(run, on_round=on_round)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(server_app=server, client_app=client, num_supernodes=len(nodes),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
                   verbose_logging=False)
    model = run.run_dir / "model" / "model.json"
    if not model.is_file():
        raise RareGraphError(f"{run.run_dir}: the federation ended without a model (see the log above)")
    return json.loads((run.run_dir / "privacy.json").read_text())


def federate(
    bundle: Annotated[Path, typer.Option("--bundle", help="The signed study bundle.")],
    pub: Annotated[Path, typer.Option("--pub", help="Coordinator public key (pinned by every site).")],
    sites: Annotated[list[Path], typer.Option("--sites", help="Site folders, one virtual hospital each (repeat the option).")],
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="Each site's privacy budget ε (lifetime, per dataset).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: model/, privacy.json, checkpoint/, state/.")],
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Federated rounds.")] = 5,
    planned_rounds: Annotated[int, typer.Option("--planned-rounds", min=0, help="Rounds sites calibrate their noise for (0: --rounds); larger when later runs will continue.")] = 0,
    delta: Annotated[float, typer.Option("--delta", help="Each site's δ.")] = 1e-5,
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-round progress.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print privacy.json at the end.")] = False,
) -> None:
    """Federated training with DP-SGD at every site on Flower's simulation engine; ends with
    OUT/model for `raregraph generate` and OUT/privacy.json with every site's rounds and ε.

    Example: raregraph federate --bundle out/bundle --pub keys/coordinator.pub --sites sites/site-1 --sites sites/site-2 --rounds 3 --epsilon 4 --out out/run
    """
    with cli_errors():
        if problem := guidance_problem(guidance, "--guidance"):
            raise InputError(problem)
        nodes = site_nodes(sites, state_root=state_root or out / "state", pub=pub, epsilon=epsilon, delta=delta,
                           clip_norm=clip_norm, batch_size=batch_size, noise_multiplicity=noise_multiplicity,
                           eval_noise_multiplier=eval_noise_multiplier, holdouts=holdouts)
        run = RunConfig(run_dir=out.resolve(), bundle_path=bundle.resolve(), bundle_pub=pub.resolve(), rounds=rounds,
                        guidance=guidance, pretrain_steps=pretrain_steps, local_steps=local_steps, lr=lr, seed=seed,
                        planned_rounds=planned_rounds, min_sites=min(min_sites, len(nodes)),
                        evaluate_fraction=evaluate_fraction, eval_per_disease=eval_per_disease,
                        site_keys=publish_site_keys(nodes, out.resolve() / SITE_KEYS_DIR))
        privacy = run_simulated(run, nodes, show_progress=not (quiet or json_out))
        audit = audit_run(run.run_dir)
    if json_out:
        print_json({**privacy, "audit": audit.to_json()})
        raise typer.Exit(0 if audit.ok else 1)
    table = Table(title=f"privacy spent per site ({out / 'privacy.json'})", show_edge=False)
    for col in ("site", "rounds trained", "sat out", "ε spent", "budget", "σ", "q"):
        table.add_column(col, justify="left" if col == "site" else "right")
    for site, rows in sorted(privacy["sites"].items()):
        train = [r for r in rows if r["kind"] == "train"]
        last = train[-1]
        table.add_row(site, str(sum(not r["refused"] for r in train)), str(sum(bool(r["refused"]) for r in train)),
                      f"{max(r['epsilon'] for r in rows):.3f}", f"{last['budget-epsilon']:.3f}",
                      f"{last['noise-multiplier']:.3f}", f"{last['sample-rate']:.4f}")
    console.print(table)
    print_site_evaluation(run.run_dir)
    console.print(f"model: {out / 'model'} (sample with `raregraph generate {out / 'model'} --bundle {bundle} ...`)")
    print_audit_summary(audit, run.run_dir)
    if not audit.ok:
        raise typer.Exit(1)


def audit_run(run_dir: Path) -> AuditResult:
    """Audit the ledgers the server merged during the run against the published site keys."""
    return audit_ledgers(run_dir / LEDGER_DIR, run_dir / SITE_KEYS_DIR)


def print_audit_summary(audit: AuditResult, run_dir: Path) -> None:
    """One line when every ledger holds; every problem otherwise."""
    command = f"raregraph audit {run_dir / LEDGER_DIR} --keys {run_dir / SITE_KEYS_DIR} --out REPORT"
    if audit.ok:
        console.print(f"privacy ledgers: {len(audit.sites)} sites, chains and signatures verify, ε recomputed "
                      f"independently agrees (full report: `{command}`)")
        return
    for problem in audit.all_problems:
        err_console.print(f"[red]ledger problem[/] {problem.message}", highlight=False)
    err_console.print(f"privacy ledgers do NOT verify; see `{command}`")


def print_site_evaluation(run_dir: Path) -> dict | None:
    """The federated evaluation's table (RUN/evaluation/summary.json), if the run had one."""
    path = run_dir / EVALUATION_DIR / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    table = Table(title=f"synthetic sample evaluated at each site ({path.parent}/<site>/report.md); "
                        "aggregate numbers, not covered by ε", show_edge=False)
    columns = (("patients", "counts.real", ",.0f"), ("held out", "counts.holdout", ",.0f"),
               ("MMD²_u", "fidelity.mmd2", ".4f"), ("real vs held-out MMD²_u", "fidelity.mmd2_baseline_holdout", ".4f"),
               ("prevalence R²", "fidelity.prevalence_r2_identity", ".3f"),
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
