"""``raregraph audit``: check the privacy ledgers of a run and write the auditor's report;
``raregraph audit empirical``: bound ε from below with canaries planted in one training;
``raregraph audit carry-forward``: sign the acknowledgement that carries a lost ledger's ε forward.

``audit_app`` is a group whose default command is the ledger audit, so both
``raregraph audit LEDGER_DIR --keys ...`` and ``raregraph audit empirical SITE ...`` work
(a ledger folder literally named ``empirical`` is reached as ``./empirical`` or through
``raregraph audit ledger empirical``).

Each command imports the code it drives when it runs: the ledger audit loads dp-accounting but
never Opacus or torch, and only ``audit empirical``, which trains, loads torch (issue 23).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from shared.atomic import write_bytes_atomic
from shared.console import QuietAccepted, cli_errors, console, err_console, load_bundle, print_json, steps
from shared.errors import InputError, OutputExistsError
from shared.evaluation.canary_config import EmpiricalAuditConfig
from shared.model.settings import TrainConfig, guidance_problem
from shared.privacy.settings import DEFAULT_CLIP_NORM
from shared.runs import RunFolder
from shared.signing.keys import load_private_key, load_public_key

if TYPE_CHECKING:
    from shared.evaluation.canary_audit import EmpiricalAudit
    from shared.privacy.audit.audit import AuditResult

LEDGER_COMMAND = "ledger"


def print_audit_summary(audit: AuditResult, run_dir: Path) -> None:
    """After a federated run: one line when every ledger holds; every problem otherwise."""
    run = RunFolder(run_dir)
    command = f"raregraph audit {run.ledger} --keys {run.site_keys} --out REPORT"
    if audit.ok:
        console.print(f"privacy ledgers: {len(audit.sites)} sites, chains and signatures verify, ε recomputed "
                      f"independently agrees (full report: `{command}`)")
        return
    for problem in audit.all_problems:
        err_console.print(f"[red]ledger problem[/] {problem.message}", highlight=False)
    err_console.print(f"privacy ledgers do NOT verify; see `{command}`")


def audit(
    ledger_dir: Annotated[Path, typer.Argument(help="Folder of site ledgers <site_id>.jsonl (the run's ledger/ folder).")],
    keys: Annotated[Path, typer.Option("--keys", help="Folder of the sites' public keys <site_id>.pub.")],
    budget_file: Annotated[Path | None, typer.Option(
        "--budget-file", help="TOML or JSON {site_id: {epsilon, delta}}; wins over the budgets in the ledgers.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write audit.json and report.html into this folder.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the audit as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    auditor_pub: Annotated[Path | None, typer.Option(
        "--auditor-pub", help="The auditor's public key: checks the acknowledgement of a ledger carried forward.")] = None,
) -> None:
    """Verify every site's signed, hash-chained privacy ledger and recompute ε independently.

    Checks signatures against the sites' keys, gaps, forks, reordering and replays; recomputes ε
    from the recorded mechanisms with Google's dp-accounting (RDP for RDP entries, PLD for PRV
    entries) and flags a recorded ε more than 1 % off (plus 0.02 for PRV); flags ε past the
    budget and mechanism changes within a run. Exits 0 only when everything holds, 1 otherwise.

    Example: raregraph audit runs/demo/ledger --keys deploy/keys/sites --budget-file budgets.toml --out audit-report
    """
    with cli_errors(), steps("audit", quiet=quiet or json_out) as step:
        result, written = audit_folder(ledger_dir, keys, budget_file=budget_file, out=out, overwrite=overwrite,
                                       auditor_pub=auditor_pub, progress=step)
    if json_out:
        print_json(result.to_json())
    else:
        table = Table(title="privacy ledgers")
        table.add_column("site", no_wrap=True)  # names are what people search the output for
        for name in ("entries", "recorded ε", "independent ε", "budget"):
            table.add_column(name, justify="right")
        table.add_column("key id", overflow="fold")
        table.add_column("status", no_wrap=True)
        for site in result.sites:
            budget = "–" if site.budget is None else f"{site.budget.epsilon:g} at δ {site.budget.delta:g}"
            indep = site.independent_epsilon
            table.add_row(site.site_id, str(len(site.entries)), f"{site.epsilon:.4g}",
                          "–" if indep is None else f"{indep:.4g}", budget, site.key_id or "missing",
                          "[green]ok[/]" if site.ok else f"[red]{len(site.problems)} problem(s)[/]")
        console.print(table)
        for problem in result.all_problems:
            console.print(f"[red]{problem.kind}[/]: {problem.message}", highlight=False, soft_wrap=True)
        if out is not None:
            json_path, html_path = written
            console.print(f"report: {html_path}\njson:   {json_path}", highlight=False, soft_wrap=True)
        console.print("[green]audit passed[/]" if result.ok else
                      f"[red]audit failed[/]: {len(result.all_problems)} problem(s)", highlight=False)
    if not result.ok and json_out:
        err_console.print(f"[red]audit failed[/]: {len(result.all_problems)} problem(s)", highlight=False)
    raise typer.Exit(0 if result.ok else 1)


def audit_folder(ledger_dir: Path, keys: Path, *, budget_file: Path | None = None, out: Path | None = None,
                 overwrite: bool = False, auditor_pub: Path | None = None,
                 progress: Callable[[str], None] = lambda _description: None,
                 ) -> tuple[AuditResult, tuple[Path, Path] | None]:
    """The ledger audit step, shared by the command and :func:`raregraph.api.audit`: audit the
    ledgers in ``ledger_dir`` against ``keys`` and, with ``out``, write audit.json and
    report.html; returns the result and those two paths (None without ``out``)."""
    from shared.privacy.audit.audit import audit_ledgers
    from shared.privacy.audit.report import write_report

    if out is not None and out.exists() and not overwrite:  # fail before the work, not after it
        raise OutputExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    result = audit_ledgers(ledger_dir, keys, budget_file, progress=progress,
                           auditor_pub=None if auditor_pub is None else load_public_key(auditor_pub))
    if out is None:
        return result, None
    progress("writing the report")
    return result, write_report(result, out, overwrite=overwrite)


BundleOpt = Annotated[Path, typer.Option("--bundle", help="The study bundle.")]
PubOpt = Annotated[Path | None, typer.Option("--pub", help="Coordinator public key that must have signed the bundle.")]
DEFAULTS = EmpiricalAuditConfig()


def empirical(
    site: Annotated[Path, typer.Argument(help="Site folder with the OMOP tables (canaries are added in memory only).")],
    bundle: BundleOpt,
    pub: PubOpt = None,
    epsilon: Annotated[float | None, typer.Option("--epsilon", min=0.0, help="Audit DP-SGD trained under this ε (as `raregraph train --epsilon`).")] = None,
    no_dp: Annotated[bool, typer.Option("--no-dp", help="Control run without DP: the bound should come out clearly above 0.")] = False,
    delta: Annotated[float, typer.Option("--delta", help="δ of the training and of the bound.")] = 1e-5,
    state: Annotated[Path | None, typer.Option("--state", help="Privacy state folder to charge (the site's, on real patients; default: a throw-away one).")] = None,
    clip_norm: Annotated[float, typer.Option("--clip-norm", min=0.0, help="Per-patient gradient clip norm (DP).")] = DEFAULT_CLIP_NORM,
    noise_multiplicity: Annotated[int, typer.Option("--noise-multiplicity", min=1, help="Diffusion noise draws per patient and step (DP).")] = 4,
    guidance: Annotated[str, typer.Option("--guidance", help="kg: knowledge-guided; none: plain diffusion; learned: learned schedule, no graph.")] = "kg",
    train_steps: Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps.")] = TrainConfig().steps,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Patients per step.")] = TrainConfig().batch_size,
    canaries: Annotated[int, typer.Option("--canaries", min=2, help="Canary patients m, each trained on with probability ½.")] = DEFAULTS.canaries,
    guesses: Annotated[int, typer.Option("--guesses", min=1, help="Guess 'in' for the K best-denoised canaries and 'out' for the K worst (2K ≤ m).")] = DEFAULTS.guesses_in,
    draws: Annotated[int, typer.Option("--draws", min=1, help="(t, noise) draws averaged into each canary's loss.")] = DEFAULTS.draws,
    beta: Annotated[float, typer.Option("--beta", help="The bound holds with confidence 1 − β.")] = DEFAULTS.beta,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the canaries, the model's initialisation and the scoring draws.")] = 0,
    skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="Count and drop bad rows.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write audit_empirical.json into this folder.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the audit as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Plant canary patients, train once, and bound the training's ε from below (one-run audit).

    Each canary (an out-of-distribution trajectory) joins the site's data with probability ½;
    the model is trained once as `raregraph train` trains it; canaries it denoises best are
    guessed "in", worst "out"; the correct guesses give ε_lb, a lower bound on ε at confidence
    1 − β (Steinke, Nasr & Jagielski 2023). Exits 0 when ε_lb ≤ the accountant's ε of that
    training, 1 otherwise (a bug in DP-SGD or its accounting). With --no-dp (the control run,
    which shows the membership test works) it always exits 0 and prints the bound.

    Example: raregraph audit empirical sites/site-1 --bundle out/bundle --epsilon 4 --steps 600 --out audit-empirical
    """
    from shared.ehr.site import data_fingerprint, read_site
    from shared.evaluation.canary_audit import run_empirical_audit, write_empirical_report
    from shared.model.fit import PrivateTraining
    from shared.trajectories.tensorize import tensorize

    with cli_errors(), ExitStack() as stack:
        if problem := guidance_problem(guidance, "--guidance"):
            raise InputError(problem)
        if (epsilon is None) == (not no_dp):
            raise InputError("pass --epsilon (the DP training to audit) or --no-dp (the control run), not both"
                             if no_dp else "pass --epsilon (the DP training to audit) or --no-dp (the control run)")
        if not 0.0 < delta < 1.0:
            raise InputError(f"--delta must be in (0, 1), got {delta:g}")
        if out is not None and out.exists() and not overwrite:  # fail before the work, not after it
            raise OutputExistsError(f"{out}: already exists (pass --overwrite to replace it)")
        config = EmpiricalAuditConfig(canaries=canaries, guesses_in=guesses, guesses_out=guesses, draws=draws,
                                      beta=beta, seed=seed)
        b = load_bundle(bundle, pub)
        cohort, _ = read_site(site, skip_bad_rows=skip_bad_rows, bundle=b)
        try:
            tensors, _ = tensorize(cohort, b)
        except ValueError as exc:
            raise InputError(str(exc), file=site) from None
        private = None
        if epsilon is not None:
            if state is None:
                state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raregraph-audit-state-")))
                err_console.print("[yellow]warning:[/] the audit's training is charged to a throw-away privacy state "
                                  "(no --state); on real patients pass the site's state folder", highlight=False)
            private = PrivateTraining(state_path=state, fingerprint=data_fingerprint(site), epsilon=epsilon,
                                      delta=delta, clip_norm=clip_norm, noise_multiplicity=noise_multiplicity)
        with steps("audit empirical", quiet=quiet or json_out) as step:
            result = run_empirical_audit(tensors, b, config=config, private=private, guidance=guidance,  # type: ignore[arg-type]
                                         train=TrainConfig(steps=train_steps, batch_size=batch_size, seed=seed),
                                         control_delta=delta, progress=step)
            if out is not None:
                step("writing the report")
                json_path = write_empirical_report(result, out, overwrite=overwrite)
    if json_out:
        print_json(result.to_json())
    else:
        _print_empirical(result)
        if out is not None:
            console.print(f"json: {json_path}", highlight=False, soft_wrap=True)
    if result.passed is False and json_out:
        err_console.print(f"[red]audit failed[/]: ε_lb {result.epsilon_lower_bound:.3f} > accountant ε "
                          f"{result.accountant_epsilon:.3f}", highlight=False)
    raise typer.Exit(1 if result.passed is False else 0)


def _print_empirical(result: EmpiricalAudit) -> None:
    """The audit as a table and a verdict line."""
    table = Table(title="empirical privacy audit (one run)")
    table.add_column("", no_wrap=True)
    table.add_column("value", justify="right")
    rows = [
        ("training", "DP-SGD" if result.dp else "no DP (control run)"),
        ("site patients", str(result.patients)),
        ("canaries (trained on)", f"{result.canaries} ({sum(result.included)})"),
        ("guesses in / out", f"{result.guesses.count(1)} / {result.guesses.count(-1)}"),
        ("correct", f"{result.correct} of {result.guesses_made}"),
        (f"ε lower bound ({1 - result.beta:.0%}, δ {result.delta:g})", f"{result.epsilon_lower_bound:.3f}"),
        ("largest bound these guesses allow", f"{result.epsilon_ceiling:.3f}"),
    ]
    if result.dp:
        rows += [("accountant ε (this training)", f"{result.accountant_epsilon:.3f}"),
                 ("accountant ε (cumulative)", f"{result.cumulative_epsilon:.3f}")]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if not result.dp:
        console.print(f"control run: ε_lb = {result.epsilon_lower_bound:.3f} without DP "
                      "(well above 0: the membership test works; near 0: it is too weak to audit anything)",
                      highlight=False)
    elif result.passed:
        console.print(f"[green]audit passed[/]: ε_lb {result.epsilon_lower_bound:.3f} ≤ accountant ε "
                      f"{result.accountant_epsilon:.3f} (a lower bound: no proof of privacy)", highlight=False)
    else:
        console.print(f"[red]audit failed[/]: ε_lb {result.epsilon_lower_bound:.3f} > accountant ε "
                      f"{result.accountant_epsilon:.3f}: DP-SGD or its accounting is broken", highlight=False)


def carry_forward(
    record: Annotated[Path, typer.Option("--record", help="The coordinator's consortium record (consortium.json).")],
    site: Annotated[str, typer.Option("--site", help="The site whose ledger was lost.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, in words: what was lost, when, what was checked.")],
    key: Annotated[Path, typer.Option("--key", help="The auditor's private key.")],
    out: Annotated[Path, typer.Option("--out", help="The acknowledgement file to write (JSON).")],
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="The dataset fingerprint (or its start) when the record holds several for the site.")] = None,
    delta: Annotated[float | None, typer.Option(
        "--delta", help="δ of the recorded ε, for records written before they kept it.")] = None,
    quiet: QuietAccepted = False,
) -> None:
    """Sign the acknowledgement that carries a lost ledger's ε forward, from the consortium record.

    For a site whose ledger is lost everywhere (its state, its backups and every run's copy): the
    record's last verified head (seq, hash, ε at δ) is what the site had spent. The site starts a
    new folder from this file (raregraph privacy carry-forward), the coordinator accepts it with
    fed.auditor-pub, and the audit shows it.

    Example: raregraph audit carry-forward --record runs/consortium.json --site site-2 --reason "disk replaced 2026-12-01; no backup" --key auditor.key --out site-2-carry.json
    """
    from shared.privacy.ledger.carry import make_acknowledgement
    from shared.privacy.ledger.consortium import ConsortiumRecord

    with cli_errors():
        if out.exists():
            raise OutputExistsError(f"{out}: already exists; an acknowledgement is never overwritten")
        heads = ConsortiumRecord(record).heads(site)
        picked = {fp: h for fp, h in heads.items() if dataset is None or fp.startswith(dataset)}
        if len(picked) != 1:
            known = ", ".join(sorted(heads)) or "none"
            raise InputError(f"site {site}: {len(picked)} datasets match{'' if dataset is None else f' {dataset!r}'} "
                             f"(the record holds: {known}); name one with --dataset", file=record)
        (fingerprint, head), = picked.items()
        head_delta = head.get("delta", delta)
        if head_delta is None:
            raise InputError(f"site {site}: the record does not keep the δ of its ε; give it with --delta", file=record)
        ack = make_acknowledgement(site_id=site, dataset_fingerprint=fingerprint, epsilon=head["epsilon"],
                                   delta=head_delta, reason=reason, auditor_key=load_private_key(key),
                                   lost_head={k: head[k] for k in ("seq", "hash", "key_id", "run_id")})
        write_bytes_atomic(out, (json.dumps(ack, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    console.print(f"site {site}: acknowledgement {out} carries ε = {ack['epsilon']:.4g} at δ = {ack['delta']:g} "
                  f"forward from seq {head['seq']} of run {head['run_id']}", highlight=False, soft_wrap=True)


class LedgerDefaultGroup(TyperGroup):
    """A group that runs the ledger audit when the first argument names no sub-command,
    so ``raregraph audit LEDGER_DIR ...`` keeps working beside ``raregraph audit empirical``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [LEDGER_COMMAND, *args]
        return super().parse_args(ctx, args)


audit_app = typer.Typer(
    cls=LedgerDefaultGroup, no_args_is_help=True,
    help="Audit the privacy claims.\n\n"
         "raregraph audit LEDGER_DIR --keys KEYS_DIR ...: verify the signed ledgers and recompute ε "
         "(the default; options: raregraph audit ledger --help).\n\n"
         "raregraph audit empirical SITE --bundle BUNDLE ...: plant canaries, train once, bound ε from below.\n\n"
         "Example: raregraph audit runs/demo/ledger --keys deploy/keys/sites --out audit-report")
audit_app.command(LEDGER_COMMAND)(audit)
audit_app.command("empirical")(empirical)
audit_app.command("carry-forward")(carry_forward)
