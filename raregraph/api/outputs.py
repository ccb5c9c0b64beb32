"""After training: synthetic patients, their evaluation, the gated release, the ledger audit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import InputError
from shared.model.settings import DEFAULT_SAMPLER_STEPS
from shared.runs import RunFolder

if TYPE_CHECKING:
    from server.release.gate import Check
    from shared.privacy.audit.audit import AuditResult

Progress = Callable[[str], None]


def _silent(_description: str) -> None:
    """No progress display."""


def generate(model_dir: str | Path, *, bundle: str | Path, pub: str | Path, n: int, out: str | Path,
             disease: str | None = None, seed: int = 0, steps: int = DEFAULT_SAMPLER_STEPS,
             guidance_scale: float = 1.0, eta: float = 0.0, fmt: str = "csv", vocabulary: str | Path | None = None,
             overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Sample synthetic patients and write them as OMOP CDM v5.4 tables with a data card, as
    ``raregraph generate`` (without its database options).

    Parameters
    ----------
    model_dir
        A model folder (``FederationResult.model``, or ``raregraph train --out``).
    bundle, pub
        The study bundle and the coordinator's public key it must verify with.
    n
        Number of synthetic patients.
    out
        Folder for the tables and ``data_card.json``.
    disease
        Only this study disease (ORPHA code); None: every study disease.
    seed
        Sampling seed.
    steps
        Sampler (DDIM) steps.
    guidance_scale
        Classifier-free guidance w (1: none).
    eta
        0: deterministic DDIM; 1: ancestral (stochastic) steps.
    fmt
        ``csv`` or ``parquet``.
    vocabulary
        An Athena vocabulary download for concept ids (else 0).
    overwrite
        Replace an existing ``out``.
    progress
        Called with a short description before each stage.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError
        A bad option, an unknown ``disease``, or a model folder that does not fit the bundle.
    SignatureError
        The bundle does not verify with ``pub``.
    OutputExistsError
        ``out`` exists and ``overwrite`` is off.
    """
    from shared.model.cli import sample_synthetic

    out = Path(out)
    sample_synthetic(Path(model_dir), bundle=Path(bundle), pub=Path(pub), n=n, out=out, disease=disease, seed=seed,
                     steps=steps, guidance_scale=guidance_scale, eta=eta, fmt=fmt,
                     vocabulary=None if vocabulary is None else Path(vocabulary), overwrite=overwrite,
                     progress=progress or _silent)
    return out


def evaluate(real: str | Path, synthetic: str | Path, *, bundle: str | Path, pub: str | Path, out: str | Path,
             holdout: str | Path | None = None, seed: int = 0, overwrite: bool = False,
             progress: Progress | None = None) -> dict:
    """Compare synthetic patients with real ones (and held-out ones), as ``raregraph evaluate``.

    Parameters
    ----------
    real
        The site folder the model was trained on (OMOP or FHIR).
    synthetic
        A synthetic OMOP folder from :func:`generate`.
    bundle, pub
        The study bundle and the coordinator's public key it must verify with.
    out
        Report folder: ``metrics.json`` and ``report.md``.
    holdout
        Real patients not used in training: adds utility (TSTR vs TRTR) and the membership and
        attribute attacks.
    seed
        Seed for subsampling and permutations.
    overwrite
        Replace an existing ``out``.
    progress
        Called with a short description before each stage.

    Returns
    -------
    dict
        The metrics as ``metrics.json`` holds them: ``fidelity``, ``plausibility``, ``privacy``,
        ``recorded`` (fidelity over every code the real site records, in the vocabulary or not,
        beside its representation ceiling) and, with ``holdout``, ``utility``.

    Raises
    ------
    InputError
        A folder that is missing or malformed, or patients that cannot be placed on the study's grid.
    SignatureError
        The bundle does not verify with ``pub``.
    OutputExistsError
        ``out`` exists and ``overwrite`` is off.
    """
    from shared.evaluation.cli import evaluate_synthetic

    return evaluate_synthetic(Path(real), Path(synthetic), bundle=Path(bundle), pub=Path(pub), out=Path(out),
                              holdout=None if holdout is None else Path(holdout), seed=seed, overwrite=overwrite,
                              progress=progress or _silent)


@dataclass(frozen=True)
class ReleaseOutcome:
    """The release gate's verdict; the folder is written only when ``released``."""

    released: bool  # every gate passed and the release was written
    out: Path | None  # the release folder; None when refused (nothing written)
    checks: list[Check]  # every gate with its measured value and threshold
    data_card: dict | None  # data_card.json as written; None when refused

    @property
    def failed(self) -> list[Check]:
        """The gates that refused the release."""
        return [c for c in self.checks if c.status == "fail"]


def release(run_dir: str | Path, *, bundle: str | Path, pub: str | Path, n: int, out: str | Path,
            gate: str | Path | None = None, seed: int = 0, steps: int = DEFAULT_SAMPLER_STEPS, fmt: str = "csv",
            vocabulary: str | Path | None = None, overwrite: bool = False,
            progress: Progress | None = None) -> ReleaseOutcome:
    """Generate from a federated run and release only what passes the gate, as ``raregraph
    release`` (without its database options).

    Parameters
    ----------
    run_dir
        The federation's run folder (``model/``, ``privacy.json``, ``evaluation/``).
    bundle, pub
        The study bundle and the coordinator's public key it must verify with.
    n
        Number of synthetic patients.
    out
        Release folder: OMOP tables, ``data_card.json``, ``report.html``.
    gate
        Gate thresholds (TOML, ``[plausibility]`` and ``[privacy]``); None: the built-in ones.
    seed, steps
        Sampling seed and sampler (DDIM) steps.
    fmt
        ``csv`` or ``parquet``.
    vocabulary
        An Athena vocabulary download for concept ids (else 0).
    overwrite
        Replace an existing ``out``.
    progress
        Called with a short description before each stage.

    Returns
    -------
    ReleaseOutcome
        ``released`` False when a gate refused (nothing written; ``failed`` names the gates).

    Raises
    ------
    InputError, ConfigError
        A bad option or gate file, or a run folder without a model.
    SignatureError
        The bundle does not verify with ``pub``.
    OutputExistsError
        ``out`` exists and ``overwrite`` is off (checked before sampling).
    """
    from server.release.cli import gate_and_release

    out = Path(out)
    result, card, _ = gate_and_release(Path(run_dir), bundle=Path(bundle), pub=Path(pub), n=n, out=out,
                                       gate=None if gate is None else Path(gate), seed=seed, sampler_steps=steps,
                                       fmt=fmt, vocabulary=None if vocabulary is None else Path(vocabulary),
                                       overwrite=overwrite, progress=progress or _silent)
    return ReleaseOutcome(released=result.ok, out=out if result.ok else None, checks=list(result.checks),
                          data_card=card)


def audit(folder: str | Path, *, keys: str | Path | None = None, budget_file: str | Path | None = None,
          out: str | Path | None = None, overwrite: bool = False, auditor_pub: str | Path | None = None,
          progress: Progress | None = None) -> AuditResult:
    """Verify every site's signed, hash-chained privacy ledger and recompute ε independently,
    as ``raregraph audit``.

    Parameters
    ----------
    folder
        A run folder (its ``ledger/`` is audited against its ``site-keys/`` unless ``keys`` is
        given), or a folder of site ledgers ``<site_id>.jsonl``.
    keys
        Folder of the sites' public keys ``<site_id>.pub``; required unless ``folder`` is a run folder.
    budget_file
        TOML or JSON ``{site_id: {epsilon, delta}}``; wins over the budgets in the ledgers.
    out
        Write ``audit.json`` and ``report.html`` into this folder.
    overwrite
        Replace an existing ``out``.
    auditor_pub
        The auditor's public key: checks the acknowledgement of a ledger carried forward.
    progress
        Called with a short description before each site.

    Returns
    -------
    AuditResult
        Per-site entries, recorded and independent ε, budgets and problems; ``ok`` only when
        nothing is flagged (the command exits 1 otherwise).

    Raises
    ------
    InputError
        No ``keys`` for a folder that is not a run folder, or a malformed budget file.
    OutputExistsError
        ``out`` exists and ``overwrite`` is off (checked before the work).
    """
    from shared.privacy.audit.cli import audit_folder

    folder = Path(folder)
    run = RunFolder(folder)
    if keys is None:
        if not run.ledger.is_dir():
            raise InputError(f"{folder}: not a run folder (no {run.ledger.name}/); give keys, the folder of the "
                             "sites' public keys", file=folder)
        folder, keys = run.ledger, run.site_keys
    elif run.ledger.is_dir():
        folder = run.ledger
    result, _ = audit_folder(folder, Path(keys), budget_file=None if budget_file is None else Path(budget_file),
                             out=None if out is None else Path(out), overwrite=overwrite,
                             auditor_pub=None if auditor_pub is None else Path(auditor_pub),
                             progress=progress or _silent)
    return result
