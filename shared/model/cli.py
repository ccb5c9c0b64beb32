"""``raregraph train`` and ``raregraph generate`` (one site, no federation).

The commands import the model (torch, Opacus) when they run, not when the command line loads
(issue 23).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from shared.atomic import atomic_dir
from shared.console import Quiet, cli_errors, console, err_console, load_bundle, print_json
from shared.console import steps as stages  # `steps` is the sampler steps option here
from shared.ehr.cdm_option_types import (
    PasswordFileOpt,
    SchemaOpt,
    ToDbOpt,
    VocabularyDbOpt,
    VocabularyOpt,
    VocabularySchemaOpt,
)
from shared.ehr.omop_columns import MAX_SYNTHETIC_PERSONS
from shared.errors import InputError
from shared.model.settings import DEFAULT_SAMPLER_STEPS, TrainConfig, guidance_problem
from shared.privacy.settings import DEFAULT_CLIP_NORM

if TYPE_CHECKING:
    from shared.ehr.cdm_release import ReleaseTarget

BundleOpt = Annotated[Path, typer.Option("--bundle", help="The study bundle.")]
PubOpt = Annotated[Path | None, typer.Option("--pub", help="Coordinator public key that must have signed the bundle.")]
DEFAULTS = TrainConfig()


def train(
    site: Annotated[Path, typer.Argument(help="Site folder: OMOP tables or a FHIR Bulk export.")],
    bundle: BundleOpt,
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    pub: PubOpt = None,
    guidance: Annotated[str, typer.Option("--guidance", help="kg: knowledge-guided; none: plain diffusion (γ=0, no graph inputs); learned: a learned per-feature schedule, no graph (ablation).")] = "kg",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps.")] = DEFAULTS.steps,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Patients per step.")] = DEFAULTS.batch_size,
    seed: Annotated[int, typer.Option("--seed", help="Seed for initialisation, batches and noise.")] = 0,
    validation_share: Annotated[float, typer.Option("--validation-share", min=0.0, max=0.9, help=f"Hold back this share of each disease's patients, keep the checkpoint with the lowest denoising loss on them and stop after {DEFAULTS.validation_patience} checks ({DEFAULTS.validation_patience * DEFAULTS.validation_every} steps) without a new lowest (early stopping; without --epsilon only; 0: off).")] = 0.0,
    skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="Count and drop bad rows.")] = False,
    epsilon: Annotated[float | None, typer.Option("--epsilon", min=0.0, help="Train with DP-SGD under this lifetime ε for the dataset (needs --state).")] = None,
    delta: Annotated[float, typer.Option("--delta", help="δ for --epsilon.")] = 1e-5,
    state: Annotated[Path | None, typer.Option("--state", help="The site's privacy state folder: the accountant and the signed ledger of every DP training on this dataset (keeps ε composing across trainings).")] = None,
    raise_budget: Annotated[bool, typer.Option("--raise-budget", help="Adopt an --epsilon/--delta above the budget the state holds (on purpose; the ledger signs the new budget and the audit shows the raise).")] = False,
    site_key: Annotated[Path | None, typer.Option("--site-key", help="The site's Ed25519 key that signs the ledger [default: STATE/identity/site.key, made on first use].")] = None,
    clip_norm: Annotated[float, typer.Option("--clip-norm", min=0.0, help="Per-patient gradient clip norm (DP).")] = DEFAULT_CLIP_NORM,
    noise_multiplicity: Annotated[int, typer.Option("--noise-multiplicity", min=1, help="Diffusion noise draws per patient and step (DP).")] = 4,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing model folder.")] = False,
    quiet: Quiet = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Train the diffusion model on one site's records; without --epsilon it is not
    differentially private (for evaluation), with --epsilon it runs DP-SGD under the site's
    persistent budget (federated training is `raregraph federate` or `flwr run .`).

    Example: raregraph train sites/site-1 --bundle out/bundle --out out/model --epsilon 8 --state state/site-1
    """
    from shared.ehr.site import data_fingerprint, read_site
    from shared.model.fit import PrivateTraining, train_local
    from shared.trajectories.tensorize import tensorize

    with cli_errors():
        if problem := guidance_problem(guidance, "--guidance"):
            raise InputError(problem)
        b = load_bundle(bundle, pub)
        cohort, _ = read_site(site, skip_bad_rows=skip_bad_rows, bundle=b)
        try:
            tensors, stats = tensorize(cohort, b)
        except ValueError as exc:
            raise InputError(str(exc), file=site) from None
        config = TrainConfig(steps=steps, batch_size=batch_size, seed=seed, validation_share=validation_share)
        private = None
        if epsilon is not None and validation_share > 0:
            raise InputError("--validation-share is for non-private training: checkpoint choice on held-back "
                             "patients is not covered by --epsilon")
        if epsilon is not None:
            if state is None:
                raise InputError("--epsilon needs --state: the folder that keeps this site's privacy budget")
            private = PrivateTraining(state_path=state, fingerprint=data_fingerprint(site), epsilon=epsilon,
                                      delta=delta, clip_norm=clip_norm, noise_multiplicity=noise_multiplicity,
                                      site_key=site_key, allow_budget_raise=raise_budget)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            progress = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
                                disable=quiet or json_out, transient=True)
            with progress:
                task = progress.add_task("train", total=steps, loss=float("nan"))
                trained, losses = train_local(
                    tensors, b, guidance=guidance, config=config, private=private,  # type: ignore[arg-type]
                    on_step=lambda i, loss: progress.update(task, completed=i + 1, loss=loss) if i % 20 == 0 or i + 1 == steps else None)
            trained.meta["data"] = {"site": site.name, "tensorize": vars(stats)}
            trained.save(tmp, losses=losses)
    summary = {"out": str(out), **trained.meta["training"], "guidance": guidance}
    if json_out:
        print_json(summary)
    else:
        kept = summary["validation"]
        stopping = "" if kept is None else (f", kept the step-{kept['best_step']} weights (lowest loss on "
                                             f"{kept['patients']} held-back patients)")
        console.print(f"model {out}: {summary['patients']} patients, {summary['steps']} of {steps} steps in "
                      f"{summary['seconds']:.0f} s{stopping}, final loss {summary['final_loss']:.3f} (guidance {guidance})")


def generate_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Model folder made by `raregraph train` or `raregraph federate` (any --method).")],
    bundle: BundleOpt,
    n: Annotated[int, typer.Option("--n", min=1, max=MAX_SYNTHETIC_PERSONS, help="Number of synthetic patients (ids stay 32-bit).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the synthetic OMOP tables and data_card.json.")],
    pub: PubOpt = None,
    disease: Annotated[str | None, typer.Option("--disease", help="Only this study disease (ORPHA code).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    steps: Annotated[int, typer.Option("--steps", min=1, max=1000, help="Sampler (DDIM) steps.")] = DEFAULT_SAMPLER_STEPS,
    guidance_scale: Annotated[float, typer.Option("--guidance-scale", min=0.0, help="Classifier-free guidance w (1 = none).")] = 1.0,
    eta: Annotated[float, typer.Option("--eta", min=0.0, max=1.0, help="0: deterministic DDIM; 1: ancestral (stochastic) steps.")] = 0.0,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    vocabulary: VocabularyOpt = None,
    vocabulary_db: VocabularyDbOpt = None,
    vocabulary_schema: VocabularySchemaOpt = None,
    to_db: ToDbOpt = None,
    schema: SchemaOpt = None,
    db_password_file: PasswordFileOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    quiet: Quiet = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the data card as JSON.")] = False,
) -> None:
    """Sample synthetic patients and write them as OMOP CDM v5.4 tables (person,
    observation_period, condition_occurrence, drug_exposure, measurement, observation,
    cdm_source) with a data card; with --to-db, also into a new database schema.

    Example: raregraph generate out/model --bundle out/bundle --n 1000 --out out/synthetic
    """
    with cli_errors(), stages("generate", quiet=quiet or json_out) as step:
        card, database = sample_synthetic(model_dir, bundle=bundle, pub=pub, n=n, out=out, disease=disease, seed=seed,
                                          steps=steps, guidance_scale=guidance_scale, eta=eta, fmt=fmt,
                                          vocabulary=vocabulary, vocabulary_db=vocabulary_db,
                                          vocabulary_schema=vocabulary_schema, to_db=to_db, schema=schema,
                                          db_password_file=db_password_file, overwrite=overwrite, progress=step)
    if json_out:
        print_json(card)
    else:
        loaded = f"; loaded into {database.describe()}" if database is not None else ""
        console.print(f"{n:,} synthetic patients → {out} ({card['counts']['events']:,} events, OMOP CDM v5.4); "
                      f"data card {out / 'data_card.json'}{loaded}", highlight=False)
        console.print(f"privacy: {card['privacy'].get('statement', '')}", highlight=False)


def sample_synthetic(model_dir: Path, *, bundle: Path, pub: Path | None, n: int, out: Path, disease: str | None = None,
                     seed: int = 0, steps: int = DEFAULT_SAMPLER_STEPS, guidance_scale: float = 1.0, eta: float = 0.0,
                     fmt: str = "csv", vocabulary: Path | None = None, vocabulary_db: str | None = None,
                     vocabulary_schema: str | None = None, to_db: str | None = None, schema: str | None = None,
                     db_password_file: Path | None = None, overwrite: bool = False,
                     progress: Callable[[str], None] = lambda _description: None) -> tuple[dict, ReleaseTarget | None]:
    """The ``generate`` step, shared by the command and :func:`raregraph.api.generate`: sample
    ``n`` patients from ``model_dir`` (the diffusion model's folder, or a baseline's:
    :mod:`shared.baselines.model_folder`) and write them (OMOP tables, data card; and into
    ``to_db``); returns the data card and the database written to, if any."""
    from shared.baselines.model_folder import baseline_data_card, generate_baseline, is_baseline_folder, load_baseline
    from shared.ehr.cdm_options import release_options
    from shared.model.checkpoint import load_model
    from shared.model.generation import data_card, generate, write_synthetic

    vocab, database = release_options(fmt, vocabulary, vocabulary_db, vocabulary_schema, to_db, schema,
                                      password_file=db_password_file)
    baseline = is_baseline_folder(model_dir)
    if baseline and (steps, guidance_scale, eta) != (DEFAULT_SAMPLER_STEPS, 1.0, 0.0):
        raise InputError("--steps, --guidance-scale and --eta set the diffusion model's sampler; this model folder "
                         "holds a baseline, which samples its own way: leave them unset", file=model_dir)
    progress("verifying the bundle")
    b = load_bundle(bundle, pub)
    progress("loading the model")
    model = load_baseline(model_dir, b) if baseline else load_model(model_dir, b)
    progress(f"sampling {n:,} patients " + (f"(baseline {model.meta['method']})" if baseline else f"({steps} DDIM steps)"))
    try:
        if baseline:
            cohort, _ = generate_baseline(model, b, n=n, disease=disease, seed=seed)
        else:
            cohort, _ = generate(model, b, n=n, disease=disease, seed=seed, steps=steps,
                                 guidance_scale=guidance_scale, eta=eta)
    except ValueError as exc:
        raise InputError(str(exc), field="--disease") from None
    card = (baseline_data_card(model, b, cohort, seed=seed, disease=disease) if baseline else
            data_card(model, b, cohort, seed=seed, steps=steps, guidance_scale=guidance_scale, eta=eta,
                      disease=disease))
    progress(f"writing OMOP tables to {out}" + (f" and {database.describe()}" if database is not None else ""))
    card = write_synthetic(cohort, out, card=card, fmt=fmt, overwrite=overwrite, vocabulary=vocab,
                           database=database)
    return card, database
