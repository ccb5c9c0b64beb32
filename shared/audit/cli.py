"""``raregraph audit``: check the privacy ledgers of a run and write the auditor's report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shared.audit.audit import audit_ledgers
from shared.audit.report import write_report
from shared.console import cli_errors, console, err_console, print_json, steps
from shared.errors import OutputExistsError


def audit(
    ledger_dir: Annotated[Path, typer.Argument(help="Folder of site ledgers <site_id>.jsonl (the run's ledger/ folder).")],
    keys: Annotated[Path, typer.Option("--keys", help="Folder of the sites' public keys <site_id>.pub.")],
    budget_file: Annotated[Path | None, typer.Option(
        "--budget-file", help="TOML or JSON {site_id: {epsilon, delta}}; wins over the budgets in the ledgers.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write audit.json and report.html into this folder.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the audit as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display.")] = False,
) -> None:
    """Verify every site's signed, hash-chained privacy ledger and recompute ε independently.

    Checks signatures against the sites' keys, gaps, forks, reordering and replays; recomputes ε
    from the recorded mechanisms with Google's dp-accounting (RDP for RDP entries, PLD for PRV
    entries) and flags a recorded ε more than 1 % off (plus 0.02 for PRV); flags ε past the
    budget and mechanism changes within a run. Exits 0 only when everything holds, 1 otherwise.

    Example: raregraph audit runs/demo/ledger --keys deploy/keys/sites --budget-file budgets.toml --out audit-report
    """
    with cli_errors():
        if out is not None and out.exists() and not overwrite:  # fail before the work, not after it
            raise OutputExistsError(f"{out}: already exists (pass --overwrite to replace it)")
        with steps("audit", quiet=quiet or json_out) as step:
            result = audit_ledgers(ledger_dir, keys, budget_file, progress=step)
            if out is not None:
                step("writing the report")
                json_path, html_path = write_report(result, out, overwrite=overwrite)
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
            console.print(f"report: {html_path}\njson:   {json_path}", highlight=False, soft_wrap=True)
        console.print("[green]audit passed[/]" if result.ok else
                      f"[red]audit failed[/]: {len(result.all_problems)} problem(s)", highlight=False)
    if not result.ok and json_out:
        err_console.print(f"[red]audit failed[/]: {len(result.all_problems)} problem(s)", highlight=False)
    raise typer.Exit(0 if result.ok else 1)
