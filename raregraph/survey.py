"""``raregraph survey``: the vocabulary survey of simulated sites on Flower's simulation engine,
from the command line (:func:`raregraph.api.survey`); ``raregraph bundle grow`` then cuts the second
signed bundle from its ``RUN/survey.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shared.console import Quiet, cli_errors, console, print_json
from shared.privacy.audit.cli import print_audit_summary
from shared.survey import DEFAULT_SURVEY_NOISE, SurveyRequest, parse_time_edges, time_edges_text

_DEFAULT = SurveyRequest()


def survey(
    bundle: Annotated[Path, typer.Option("--bundle", help="The signed study bundle to survey the sites on.")],
    pub: Annotated[Path, typer.Option("--pub", help="Coordinator public key (pinned by every site).")],
    sites: Annotated[list[str], typer.Option("--sites", help="Site folders, one virtual hospital each (repeat): PATH or ID=PATH.")],
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="Each site's privacy budget ε (lifetime, per dataset).")],
    out: Annotated[Path, typer.Option("--out", help="Survey run folder: survey.json, privacy.json, ledger/, state/.")],
    delta: Annotated[float, typer.Option("--delta", help="Each site's δ.")] = 1e-5,
    noise_multiplier: Annotated[float, typer.Option("--noise-multiplier", min=0.0, help="σ of each site's release, relative to its L2 sensitivity (4: ε ≈ 1.0 alone).")] = DEFAULT_SURVEY_NOISE,
    max_codes: Annotated[int, typer.Option("--max-codes", min=1, help="Codes one patient contributes at most.")] = _DEFAULT.max_codes,
    time_weight: Annotated[float, typer.Option("--time-weight", min=0.01, help="Weight of the event-time histogram against the codes.")] = _DEFAULT.time_weight,
    time_edges: Annotated[str, typer.Option("--time-edges", help="Days from the index date where an event-time bin ends, comma-separated (the first and last bins are open).")] = time_edges_text(_DEFAULT.time_edges),
    state_root: Annotated[Path | None, typer.Option("--state-root", help="Per-site state folders [default: OUT/state]; give `raregraph federate` the same, so each site's ε composes.")] = None,
    planned_rounds: Annotated[int, typer.Option("--planned-rounds", min=1, help="Rounds of the training to come (a site with a stored plan keeps room for them).")] = 5,
    quiet: Quiet = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print survey.json's header and the audit.")] = False,
) -> None:
    """Each site releases, once and with DP, noisy counts of the bundle's public candidate codes and
    of its event times; the pooled release goes to OUT/survey.json for `raregraph bundle grow`.

    Example: raregraph survey --bundle out/bundle --pub keys/coordinator.pub --sites sites/site-1 --sites sites/site-2 --epsilon 4 --state-root out/state --out out/survey
    """
    from raregraph.api.survey import survey as run_survey

    with cli_errors():
        request = SurveyRequest(max_codes=max_codes, time_weight=time_weight, time_edges=parse_time_edges(time_edges))
        if not quiet and not json_out:
            console.print(f"surveying {len(sites)} sites on {bundle} (σ = {noise_multiplier:g}) ...")
        result = run_survey(bundle, pub, sites, out=out, epsilon=epsilon, delta=delta,
                            noise_multiplier=noise_multiplier, request=request, state_root=state_root,
                            planned_rounds=planned_rounds)
    released = result.survey
    if json_out:
        print_json({k: v for k, v in released.items() if k not in ("codes", "time")}
                   | {"codes_above_one_sd": len(released["codes"]), "audit": result.audit.to_json()})
        raise typer.Exit(0 if result.ok else 1)
    table = Table(title=f"survey releases ({result.path})", show_edge=False)
    for col in ("site", "σ", "ε after"):
        table.add_column(col, justify="left" if col == "site" else "right")
    for site, row in released["sites"].items():
        table.add_row(site, f"{row['noise_multiplier']:g}", f"{row['epsilon_after']:.3f}")
    console.print(table)
    console.print(f"{len(released['sites'])} of {released['sites_asked']} sites released; ~{released['patients']:.0f} "
                  f"patients; noise sd {released['code_noise_sd']:.1f} patients per code; "
                  f"{len(released['codes'])} of {released['candidates']:,} candidate codes above one sd")
    console.print(f"next: raregraph bundle grow GRAPH --bundle {bundle} --pub {pub} --survey {result.path} "
                  "--sign-key KEY --out BUNDLE-2")
    print_audit_summary(result.audit, result.run_dir)
    if not result.ok:
        raise typer.Exit(1)
