"""``raregraph data simulate``: a simulated consortium of hospitals for the demo and tests.

The simulator reads what it knows from a study bundle; without ``--bundle`` it builds the
demo study's bundle from the embedded public data first (a few seconds), which is why this
command lives at the edge that may import ``kg``. It imports the simulator and ``kg`` when it
runs, not when the command line loads (issue 23).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from raregraph.api.sites import write_sites
from shared.console import Quiet, cli_errors, console, load_bundle, print_json, steps

if TYPE_CHECKING:
    from shared.bundle import StudyBundle


def demo_bundle(folder: Path, step) -> StudyBundle:
    """The demo study's bundle, built from the embedded public data with a throw-away key in ``folder``."""
    from kg.embedded import make_embedded_bundle
    from shared.bundle import StudyBundle

    made = make_embedded_bundle(folder, step=step)
    return StudyBundle.load(made.bundle, made.pub)


def simulate(
    sites: Annotated[int, typer.Option("--sites", min=1, max=64, help="Number of hospitals.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for site-1 … site-N and simulation.json.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed gives the same consortium.")] = 0,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="Study bundle to simulate [default: the demo study, built now].")] = None,
    pub: Annotated[Path | None, typer.Option("--pub", help="Coordinator public key for --bundle.")] = None,
    min_patients: Annotated[int, typer.Option("--min-patients", min=1, help="Smallest site.")] = 30,
    max_patients: Annotated[int, typer.Option("--max-patients", min=1, help="Largest site.")] = 300,
    fmt: Annotated[str | None, typer.Option("--format", help="Every site as csv or parquet (a folder of OMOP tables) or duckdb (site-N.duckdb: the OMOP CDM v5.4 DDL in schema cdm, with empty vocabulary tables; node config cdm-url = \"duckdb:///ABS/site-N.duckdb\", cdm-schema = \"cdm\") \\[default: odd sites CSV, even sites Parquet].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    simulator: Annotated[str, typer.Option("--simulator", help="graph: ours, its truth drawn around the bundle's frequencies and time grid; independent: a second simulator written to break those assumptions (its own frequencies, comorbidities, local codes, recording habits and timing).")] = "graph",
    quiet: Quiet = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Write a realistic simulated consortium: per site 30–300 patients as OMOP tables
    (odd sites CSV, even sites Parquet; --format for one format, duckdb included) and
    simulation.json with the hidden truth.

    Example: raregraph data simulate --sites 3 --out sites --seed 7 --format duckdb
    """
    with cli_errors(), steps("simulate", quiet=quiet or json_out) as step, tempfile.TemporaryDirectory() as tmp:
        summary = write_sites(lambda: load_bundle(bundle, pub) if bundle is not None else demo_bundle(Path(tmp), step),
                              out, sites=sites, seed=seed, min_patients=min_patients, max_patients=max_patients,
                              fmt=fmt, overwrite=overwrite, progress=step, simulator=simulator)
    if json_out:
        print_json(summary)
    else:
        console.print(f"{sites} sites → {out}: " + ", ".join(f"{s['site']} {s['patients']} patients"
                                                           for s in summary["sites"]))
