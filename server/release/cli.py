"""``raregraph release``: generate from a run, apply the release gate, write or refuse.

The command imports the model and the gate (torch) when it runs, not when the command line
loads (issue 23).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shared.console import Quiet, cli_errors, console, err_console, load_bundle, print_json, steps
from shared.ehr.cdm_option_types import (
    PasswordFileOpt,
    SchemaOpt,
    ToDbOpt,
    VocabularyDbOpt,
    VocabularyOpt,
    VocabularySchemaOpt,
)
from shared.ehr.omop_columns import MAX_SYNTHETIC_PERSONS
from shared.errors import OutputExistsError
from shared.model.settings import DEFAULT_SAMPLER_STEPS
from shared.runs import RunFolder

if TYPE_CHECKING:
    from server.release.publish import Release
    from shared.ehr.cdm_release import ReleaseTarget


def release(
    run_dir: Annotated[Path, typer.Argument(help="Run folder of a federation (model/, privacy.json, evaluation/).")],
    bundle: Annotated[Path, typer.Option("--bundle", help="The study bundle.")],
    n: Annotated[int, typer.Option("--n", min=1, max=MAX_SYNTHETIC_PERSONS, help="Number of synthetic patients (ids stay 32-bit).")],
    out: Annotated[Path, typer.Option("--out", help="Release folder: OMOP tables, data_card.json, report.html.")],
    pub: Annotated[Path | None, typer.Option("--pub", help="Coordinator public key that must have signed the bundle.")] = None,
    gate: Annotated[Path | None, typer.Option("--gate", help="Gate thresholds (TOML) [default: built-in, see README].")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    sampler_steps: Annotated[int, typer.Option("--steps", min=1, max=1000, help="Sampler (DDIM) steps.")] = DEFAULT_SAMPLER_STEPS,
    fmt: Annotated[str, typer.Option("--format", help="Table files: csv or parquet.")] = "csv",
    vocabulary: VocabularyOpt = None,
    vocabulary_db: VocabularyDbOpt = None,
    vocabulary_schema: VocabularySchemaOpt = None,
    to_db: ToDbOpt = None,
    schema: SchemaOpt = None,
    db_password_file: PasswordFileOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing release folder.")] = False,
    quiet: Quiet = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the gate verdict and data card as JSON.")] = False,
) -> None:
    """Generate synthetic patients from a federated run and release them only if they pass the
    gate (plausibility against the bundle; exact copies and membership AUROC where sites
    reported them). A refusal prints which gate failed and writes nothing (exit 1). The tables
    are OMOP CDM v5.4 (concept ids from --vocabulary, else 0); --to-db also loads them into a
    new schema, in one transaction.

    Example: raregraph release out/run --bundle out/bundle --n 1000 --out out/release
    """
    from server.release.publish import REPORT_NAME

    with cli_errors(), steps("release", quiet=quiet or json_out) as step:
        result, card, database = gate_and_release(
            run_dir, bundle=bundle, pub=pub, n=n, out=out, gate=gate, seed=seed, sampler_steps=sampler_steps, fmt=fmt,
            vocabulary=vocabulary, vocabulary_db=vocabulary_db, vocabulary_schema=vocabulary_schema, to_db=to_db,
            schema=schema, db_password_file=db_password_file, overwrite=overwrite, progress=step)
    summary = {"released": result.ok, "out": str(out) if result.ok else None,
               "gate_loosened": result.card["release"]["gate_loosened"], "checks": [c.to_json() for c in result.checks], **({"data_card": card} if result.ok else {})}
    if json_out:
        print_json(summary)
    else:
        if loose := result.card["release"]["gate_loosened"]:
            console.print(f"[yellow]note:[/] the gate is looser than the built-in one: {', '.join(loose)} "
                          "(flagged in data_card.json and report.html)", highlight=False)
        for c in result.checks:
            measured = "–" if c.measured is None else f"{c.measured:.4g}"
            line = f"{c.status:>13}  {c.gate}: {measured} (gate {c.op} {c.threshold:g})"
            console.print(line + (f"  {c.note}" if c.note else ""), highlight=False)
    if not result.ok:
        failed = "; ".join(f"{c.gate} = {'–' if c.measured is None else f'{c.measured:.4g}'}, needs {c.op} {c.threshold:g}"
                           for c in result.failed)
        err_console.print(f"[red]error:[/] release refused, nothing written to {out}: {failed}", highlight=False,
                          soft_wrap=True)
        raise typer.Exit(1)
    if not json_out:
        loaded = f"; loaded into {database.describe()}" if database is not None else ""
        console.print(f"{n:,} synthetic patients released → {out} (OMOP CDM v5.4, data card, {REPORT_NAME}){loaded}",
                      highlight=False)


def gate_and_release(run_dir: Path, *, bundle: Path, pub: Path | None, n: int, out: Path, gate: Path | None = None,
                     seed: int = 0, sampler_steps: int = DEFAULT_SAMPLER_STEPS, fmt: str = "csv",
                     vocabulary: Path | None = None, vocabulary_db: str | None = None,
                     vocabulary_schema: str | None = None, to_db: str | None = None, schema: str | None = None,
                     db_password_file: Path | None = None, overwrite: bool = False,
                     progress: Callable[[str], None] = lambda _description: None,
                     ) -> tuple[Release, dict | None, ReleaseTarget | None]:
    """The ``release`` step, shared by the command and :func:`raregraph.api.release`: sample from
    ``RUN/model``, apply the gate, write the release only when it passes; returns the gate's
    result, the data card (None when refused: nothing is written) and the database written to."""
    from server.release.gate import GateConfig, load_gate
    from server.release.publish import prepare_release, write_release
    from shared.ehr.cdm_options import release_options
    from shared.baselines.model_folder import is_baseline_folder, load_baseline
    from shared.model.checkpoint import load_model

    config = load_gate(gate) if gate is not None else GateConfig()
    vocab, database = release_options(fmt, vocabulary, vocabulary_db, vocabulary_schema, to_db, schema,
                                      password_file=db_password_file)
    if out.exists() and not overwrite:  # fail before minutes of sampling
        raise OutputExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    b = load_bundle(bundle, pub)
    folder = RunFolder(run_dir).model
    trained = load_baseline(folder, b) if is_baseline_folder(folder) else load_model(folder, b)
    progress(f"generating {n} patients and checking the gate")
    result = prepare_release(trained, b, run_dir, n=n, seed=seed, steps=sampler_steps, gate=config)
    card = None
    if result.ok:
        progress("writing the release" + (f" and loading it into {database.describe()}" if database else ""))
        card = write_release(result, b, out, overwrite=overwrite, fmt=fmt, vocabulary=vocab, database=database)
    return result, card, database
