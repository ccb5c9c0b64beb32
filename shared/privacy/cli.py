"""``raregraph privacy plan``: the noise multiplier and ε per round for a planned DP-SGD run;
``raregraph privacy restore``: a lost privacy folder rebuilt from a copy of the site's signed ledger;
``raregraph privacy carry-forward``: with no copy left, a new folder on an auditor's acknowledgement.

The commands import the accountants (Opacus, torch) when they run, not when the command line
loads (issue 23).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from shared.console import QuietAccepted, cli_errors, console, err_console, print_json
from shared.privacy.settings import ACCOUNTANT_NAMES

if TYPE_CHECKING:
    from shared.privacy.ledger.restore import Restored

ASSUMPTIONS = ("Poisson sampling, per-sample clipping, add/remove-one neighbouring datasets, record-level DP per "
               "site; ε is an upper bound (RDP: Mironov 2017, Mironov et al. 2019; PRV: Gopi et al. 2021)")


def plan(
    epsilon: Annotated[float, typer.Option("--epsilon", help="Target ε for the site's whole participation (> 0).")],
    delta: Annotated[float, typer.Option("--delta", help="Target δ in (0, 1), well below 1/records.")],
    records: Annotated[int, typer.Option("--records", min=1, help="Records (patients) in the site's dataset.")],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Expected Poisson batch size; sample rate = batch size / records.")],
    steps_per_round: Annotated[int, typer.Option("--steps-per-round", min=1, help="Local optimizer steps per round.")],
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Planned federated rounds.")],
    accountant: Annotated[str, typer.Option("--accountant", help=f"Accountant: {' or '.join(ACCOUNTANT_NAMES)}.")] = "rdp",
    quiet: QuietAccepted = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Calibrate the DP-SGD noise multiplier σ for a whole planned run and show ε after each round.

    σ is calibrated once for rounds × steps-per-round steps and reused every round; the ε
    budget covers the site's whole participation, not one round. Assumes Poisson sampling,
    per-sample clipping, add/remove-one neighbours and record-level DP per site; ε is an upper
    bound (RDP: Mironov 2017, Mironov et al. 2019; PRV: Gopi et al. 2021).

    Example: raregraph privacy plan --epsilon 4 --delta 1e-5 --records 300 --batch-size 32 --steps-per-round 50 --rounds 5
    """
    from shared.privacy.budget import PrivacyBudget, epsilon_per_round, plan_mechanism
    from shared.privacy.registry import accountant_class

    with cli_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # scoped to this command: every warning is shown, once below
        accountant_class(accountant)
        budget = PrivacyBudget(epsilon=epsilon, delta=delta)
        mech = plan_mechanism(budget=budget, records=records, batch_size=batch_size, steps_per_round=steps_per_round,
                              rounds=rounds, accountant=accountant)
        per_round = epsilon_per_round(mech, delta=budget.delta, accountant=accountant)
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    for note in notes:
        err_console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    if json_out:
        print_json({
            "accountant": accountant, "epsilon": budget.epsilon, "delta": budget.delta, "records": records,
            "batch_size": batch_size, "sample_rate": mech.sample_rate, "steps_per_round": mech.steps_per_round,
            "rounds": mech.rounds, "total_steps": mech.rounds * mech.steps_per_round,
            "noise_multiplier": mech.noise_multiplier,
            "per_round": [{"round": i + 1, "steps": (i + 1) * mech.steps_per_round, "epsilon": eps}
                          for i, eps in enumerate(per_round)],
            "assumptions": ASSUMPTIONS, "warnings": notes,
        })
        return
    console.print(f"noise multiplier σ = {mech.noise_multiplier:.4f} for {mech.rounds} rounds × {mech.steps_per_round} "
                  f"steps at sample rate {mech.sample_rate:.4g} ({batch_size}/{records}), {accountant} accountant",
                  highlight=False)
    table = Table("round", "steps so far", f"ε at δ = {budget.delta:g}", title=f"budget ε = {budget.epsilon:g}")
    for i, eps in enumerate(per_round):
        table.add_row(str(i + 1), str((i + 1) * mech.steps_per_round), f"{eps:.3f}")
    console.print(table)
    console.print(f"assumes {ASSUMPTIONS}", highlight=False, style="dim")


def restore(
    copy: Annotated[Path, typer.Argument(help="A copy of the site's ledger: the coordinator's RUN/ledger/<site>.jsonl, an auditor's, a backup.")],
    into: Annotated[Path, typer.Option("--into", help="The site's privacy folder: STATE/privacy for a federated site, STATE for `raregraph train --epsilon`. It must hold no privacy state.")],
    site_key: Annotated[Path, typer.Option("--site-key", help="The site's private key, the one that signed the ledger.")],
    quiet: QuietAccepted = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was restored as JSON.")] = False,
) -> None:
    """Rebuild a lost privacy folder (state and ledger) from a copy of the site's signed ledger.

    The copy is verified with the site's own key and must reach the last entry the key's use
    record holds; the accountant is rebuilt from the mechanisms it signed and must give the ε
    it signed. Nothing is overwritten, and nothing is left behind when it refuses.

    Example: raregraph privacy restore runs/r1/ledger/site-a.jsonl --into /state/privacy --site-key /keys/site.key
    """
    from shared.privacy.ledger.restore import restore_privacy_folder

    with cli_errors():
        done = restore_privacy_folder(copy, into, site_key=site_key)
    _report(done, into, f"restored from {copy}", json_out=json_out)


def carry_forward(
    acknowledgement: Annotated[Path, typer.Argument(help="The auditor-signed acknowledgement (raregraph audit carry-forward).")],
    auditor_pub: Annotated[Path, typer.Option("--auditor-pub", help="The auditor's public key.")],
    into: Annotated[Path, typer.Option("--into", help="The site's privacy folder; it must hold no state and no ledger.")],
    site_key: Annotated[Path, typer.Option("--site-key", help="The site's private key; it signs the new ledger's carry entry.")],
    epsilon: Annotated[float, typer.Option("--epsilon", help="The site's ε budget from now on, the carried ε included.")],
    delta: Annotated[float, typer.Option("--delta", help="The site's δ budget from now on, the carried δ included.")],
    accountant: Annotated[str, typer.Option("--accountant", help=f"Accountant: {' or '.join(ACCOUNTANT_NAMES)}.")] = "rdp",
    quiet: QuietAccepted = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
) -> None:
    """Start a new privacy folder that carries a lost ledger's ε forward, when no copy of it survives.

    The acknowledgement must verify with the auditor's key and, if the site key's use record
    holds a head for the dataset, name exactly that head. The new ledger opens with a carry
    entry; what the site spends next is accounted at δ − δ₀ and added to ε₀ (basic composition),
    so both the ε and the δ budget must exceed the carried (ε₀, δ₀).

    Example: raregraph privacy carry-forward ack.json --auditor-pub auditor.pub --into /state/privacy --site-key /keys/site.key --epsilon 8 --delta 2e-5
    """
    from shared.privacy.budget import PrivacyBudget
    from shared.privacy.ledger.restore import carry_forward_folder

    with cli_errors():
        done = carry_forward_folder(acknowledgement, into, site_key=site_key, auditor_pub=auditor_pub,
                                    budget=PrivacyBudget(epsilon=epsilon, delta=delta), accountant=accountant)
    _report(done, into, f"carried forward on {acknowledgement}", json_out=json_out)


def _report(done: Restored, into: Path, how: str, *, json_out: bool) -> None:
    if json_out:
        print_json({"site_id": done.site_id, "fingerprint": done.fingerprint, "entries": done.entries,
                    "epsilon": done.epsilon, "budget_epsilon": done.budget.epsilon, "delta": done.budget.delta,
                    "state": str(done.state), "ledger": str(done.ledger)})
        return
    console.print(f"site {done.site_id}: privacy folder {into} {how}: {done.entries} ledger entries, "
                  f"ε = {done.epsilon:.4g} spent of {done.budget.epsilon:g} at δ = {done.budget.delta:g}",
                  highlight=False, soft_wrap=True)
