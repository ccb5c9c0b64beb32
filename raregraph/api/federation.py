"""Federated DP training of simulated sites on Flower's simulation engine, and the baselines.

:func:`federate` is :func:`plan_federation` (every check, the site keys published) followed by
:func:`run_federation` (training, evaluation, the ledger audit); ``raregraph federate`` calls
the two halves so that it can record its resolved config and serve the live view in between.

``method`` picks what is trained: ``diffusion`` (ours, with ``guidance``), or a baseline
(:data:`shared.baselines.consortium.METHODS`: each site fits under its own (ε, δ) and the
consortium's model is the pool; :mod:`raregraph.api.baseline_run`). ``epsilon=inf`` trains
without DP, for reference (:mod:`raregraph.api.nonprivate_client` for the diffusion model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from server.config import RunConfig
from shared.errors import InputError
from shared.model.settings import guidance_problem
from shared.privacy.settings import DEFAULT_CLIP_NORM
from shared.runs import RunFolder

if TYPE_CHECKING:
    from client.config import NodeConfig
    from shared.privacy.audit.audit import AuditResult


def _flag(key: str) -> str:
    """How an error names a setting: its command-line flag."""
    return f"--{key}"


#: what ``method`` may be: our diffusion model, or a baseline
METHODS = ("diffusion", "marginals", "dpgan", "prior")
#: the settings only the diffusion federation reads, with their defaults (a baseline refuses any other value)
DIFFUSION_ONLY = {"guidance": "kg", "pretrain_steps": 1000, "noise_multiplicity": 4, "lr": 2e-3, "planned_rounds": 0,
                  "min_sites": 1, "evaluate_fraction": 0.0, "eval_noise_multiplier": 0.0, "holdouts": None,
                  "eval_per_disease": RunConfig.eval_per_disease}
#: the settings the DP-GAN reads besides them; the marginals and prior baselines read none
GAN_SETTINGS = {"rounds": 5, "local_steps": 50, "batch_size": 32, "clip_norm": DEFAULT_CLIP_NORM}
FLAG_NAMES = {"holdouts": "holdout"}  # a parameter whose flag is not its name with '-' for '_'


@dataclass(frozen=True)
class FederationPlan:
    """A checked federation, its site keys published, nothing trained yet."""

    run: RunConfig  # the ServerApp's settings, paths absolute
    nodes: list[NodeConfig]  # one virtual SuperNode per site, in ``sites`` order
    method: str = "diffusion"  # one of METHODS
    private: bool = True  # False: trained without DP (epsilon = inf), a reference


@dataclass(frozen=True)
class FederationResult:
    """What a finished federation left in its run folder."""

    run_dir: Path  # the run folder (RUN/run.json, model/, privacy.json, ledger/, evaluation/, state/)
    privacy: dict  # RUN/privacy.json: every site's rounds with ε, σ, q, refusals
    audit: AuditResult | None  # the ledger audit of the run (audit_run); None: nothing was charged, no ledger
    method: str = "diffusion"  # what was trained (METHODS)

    @property
    def model(self) -> Path:
        """The model folder, for :func:`raregraph.api.generate`."""
        return RunFolder(self.run_dir).model

    @property
    def ok(self) -> bool:
        """Whether every site's ledger verifies and its ε recomputes (True when the run charged
        nothing: no DP, or the prior sampler, which reads no patient)."""
        return self.audit is None or self.audit.ok


def parse_sites(values: Sequence[str | Path]) -> tuple[list[str], list[Path]]:
    """Site ids and folders of the ``--sites`` values, in order: ``ID=PATH`` (split at the
    first ``=``, so a path may hold one when an id is given) or ``PATH`` (the id is the
    folder's name).

    Raises
    ------
    InputError
        An empty path, an id that is not a safe folder name, or one id given twice; the
        message names ``--sites``.
    """
    from deploy.simulation import site_id_problem  # loads Flower: only when the command runs

    values = [str(v) for v in values]
    ids, folders = [], []
    for value in values:
        site_id, sep, path = value.partition("=")
        if not sep:
            site_id, path = Path(value).name, value
        if not path:
            raise InputError(f"--sites {value!r}: no folder after {site_id}= (give ID=PATH or PATH)")
        if problem := site_id_problem(site_id):
            how = "" if sep else " (taken from the folder's name; give one as ID=PATH)"
            raise InputError(f"--sites {value!r}: {problem}{how}")
        if site_id in ids:
            first = values[ids.index(site_id)]
            raise InputError(f"--sites {first!r} and {value!r} have the same site id {site_id!r}: site ids name the "
                             "state folders and must differ; give each site one as ID=PATH")
        ids.append(site_id)
        folders.append(Path(path))
    return ids, folders


def plan_federation(bundle: str | Path, pub: str | Path, sites: Sequence[str | Path], *, out: str | Path,
                    epsilon: float, rounds: int = 5, planned_rounds: int = 0, delta: float = 1e-5,
                    guidance: str = "kg", pretrain_steps: int = 1000, local_steps: int = 50, batch_size: int = 32,
                    clip_norm: float = DEFAULT_CLIP_NORM, noise_multiplicity: int = 4, lr: float = 2e-3,
                    state_root: str | Path | None = None, min_sites: int = 1, evaluate_fraction: float = 0.0,
                    eval_noise_multiplier: float = 0.0, holdouts: Sequence[str | Path] | None = None,
                    eval_per_disease: int = RunConfig.eval_per_disease, seed: int = 0,
                    histogram_noise_multiplier: float = 5.0, method: str = "diffusion",
                    label: Callable[[str], str] = _flag) -> FederationPlan:
    """Check a federation and publish its site keys; the first half of :func:`federate` (same
    parameters), plus ``label``, how an error names a setting (the command passes its flag or
    the config file's key). Everything is checked before the first file is written."""
    from deploy.simulation import publish_site_keys, site_nodes  # Flower, torch, Opacus: loaded first
    from raregraph.api.nonprivate_client import UNUSED_BUDGET
    from shared.bundle import StudyBundle

    if method not in METHODS:
        raise InputError(f"{label('method')}: must be one of {', '.join(METHODS)}, got {method!r}")
    if problem := guidance_problem(guidance, label("guidance")):
        raise InputError(problem)
    given = {"guidance": guidance, "pretrain_steps": pretrain_steps, "noise_multiplicity": noise_multiplicity,
             "lr": lr, "planned_rounds": planned_rounds, "min_sites": min_sites, "evaluate_fraction": evaluate_fraction,
             "eval_noise_multiplier": eval_noise_multiplier, "holdouts": holdouts or None,
             "eval_per_disease": eval_per_disease, "rounds": rounds, "local_steps": local_steps,
             "batch_size": batch_size, "clip_norm": clip_norm}
    unused = {} if method == "diffusion" else {**DIFFUSION_ONLY, **({} if method == "dpgan" else GAN_SETTINGS)}
    if wrong := [k for k, default in unused.items() if given[k] != default]:
        raise InputError(f"{', '.join(label(FLAG_NAMES.get(k, k.replace('_', '-'))) for k in wrong)}: not a "
                         f"setting of method {method!r} ({_settings_of(method)}); leave "
                         f"{'it' if len(wrong) == 1 else 'them'} unset")
    private = not math.isinf(epsilon)
    if not private and method == "diffusion" and (evaluate_fraction or eval_noise_multiplier):
        raise InputError(f"{label('evaluate-fraction')} and {label('eval-noise-multiplier')}: a DP evaluation has no "
                         f"place in a run without DP ({label('epsilon')} inf); leave them at 0")
    out, pub = Path(out), Path(pub)
    if method != "diffusion" and (RunFolder(out).model / "model.json").is_file():
        raise InputError(f"{out}: already holds a finished run's model; give a new {label('out')} folder")
    site_ids, site_dirs = parse_sites(sites)
    StudyBundle.load(Path(bundle), pub)
    run = RunConfig(run_dir=out.resolve(), bundle_path=Path(bundle).resolve(), bundle_pub=pub.resolve(),
                    rounds=rounds, guidance=guidance, pretrain_steps=pretrain_steps, local_steps=local_steps, lr=lr,
                    seed=seed, planned_rounds=planned_rounds, min_sites=min(min_sites, len(sites)),
                    evaluate_fraction=evaluate_fraction, eval_per_disease=eval_per_disease,
                    site_keys=RunFolder(out.resolve()).site_keys)
    # without DP no node budget is read (module raregraph.api.nonprivate_client), and no site releases its mix
    nodes = site_nodes(site_dirs, state_root=Path(state_root) if state_root else RunFolder(out).state, pub=pub,
                       epsilon=epsilon if private else UNUSED_BUDGET, delta=delta, clip_norm=clip_norm,
                       batch_size=batch_size, noise_multiplicity=noise_multiplicity,
                       eval_noise_multiplier=eval_noise_multiplier,
                       holdouts=None if holdouts is None else [Path(h) for h in holdouts], site_ids=site_ids,
                       histogram_noise_multiplier=histogram_noise_multiplier if private else 0.0)
    publish_site_keys(nodes, run.site_keys)
    return FederationPlan(run=run, nodes=nodes, method=method, private=private)


def _settings_of(method: str) -> str:
    """The options a baseline reads, for an error message."""
    return {"dpgan": "it reads --epsilon, --delta, --rounds, --local-steps, --batch-size, --clip-norm and --seed",
            "marginals": "it reads --epsilon and --delta", "prior": "it reads no patient; --epsilon is only recorded as the sites' budget"}[method]


def run_federation(plan: FederationPlan, *, show_progress: bool = False) -> FederationResult:
    """Train a planned federation (or fit a planned baseline) and audit its ledgers; the second
    half of :func:`federate`."""
    from shared.privacy.audit.audit import audit_run

    if plan.method != "diffusion":
        from raregraph.api.baseline_run import run_baseline

        privacy = run_baseline(plan.run, plan.nodes, method=plan.method, private=plan.private,
                               show_progress=show_progress)
    else:
        from deploy.simulation import run_simulated
        from raregraph.api.nonprivate_client import nonprivate_client

        privacy = run_simulated(plan.run, plan.nodes, show_progress=show_progress,
                                client_app=None if plan.private else nonprivate_client(plan.nodes))
    audited = RunFolder(plan.run.run_dir).ledger.is_dir()
    return FederationResult(run_dir=plan.run.run_dir, privacy=privacy, method=plan.method,
                            audit=audit_run(plan.run.run_dir) if audited else None)


def federate(bundle: str | Path, pub: str | Path, sites: Sequence[str | Path], *, out: str | Path, epsilon: float,
             rounds: int = 5, planned_rounds: int = 0, delta: float = 1e-5, guidance: str = "kg",
             pretrain_steps: int = 1000, local_steps: int = 50, batch_size: int = 32,
             clip_norm: float = DEFAULT_CLIP_NORM, noise_multiplicity: int = 4, lr: float = 2e-3,
             state_root: str | Path | None = None, min_sites: int = 1, evaluate_fraction: float = 0.0,
             eval_noise_multiplier: float = 0.0, holdouts: Sequence[str | Path] | None = None,
             eval_per_disease: int = RunConfig.eval_per_disease, seed: int = 0,
             histogram_noise_multiplier: float = 5.0, method: str = "diffusion",
             show_progress: bool = False) -> FederationResult:
    """Federated training with DP-SGD at every site on Flower's simulation engine (one virtual
    SuperNode per site), or a baseline fitted at every site and pooled, as ``raregraph federate``.

    Parameters
    ----------
    bundle, pub
        The signed study bundle and the coordinator's public key every site pins.
    sites
        Site folders, one hospital each: a path (its name is the site id) or ``"ID=PATH"``.
    out
        Run folder: ``model/``, ``privacy.json``, ``checkpoint/``, ``ledger/``, ``state/``.
    epsilon, delta
        Each site's lifetime privacy budget (ε, δ) for its dataset. ``math.inf``: no DP at all
        (plain SGD, exact releases), a reference for evaluation only: nothing is charged or
        ledgered, ``privacy.json`` records ε = ∞ and the model's statement says it is not private.
    rounds
        Federated rounds.
    planned_rounds
        Rounds the sites calibrate their noise for (0: ``rounds``); larger when later runs continue.
    guidance
        ``kg`` (knowledge-guided), ``none`` (plain diffusion) or ``learned`` (learned schedule, no graph).
    pretrain_steps
        Coordinator pretraining steps on patients drawn from the bundle's public knowledge
        (``kg`` only; no privacy cost).
    local_steps, batch_size, lr
        DP-SGD steps per site per round, expected Poisson batch (patients), site learning rate.
    clip_norm, noise_multiplicity
        Per-patient gradient clip norm; diffusion noise draws per patient and step.
    state_root
        Per-site state folders (default ``out/state``); reuse it to keep composing ε across runs.
    min_sites
        Replies a round needs.
    evaluate_fraction, eval_noise_multiplier
        Share of sites asked for a DP evaluation after each round, and σ of that release
        (charged to the site's budget; 0: sites decline).
    holdouts
        Each site's held-out patients, in ``sites`` order (membership and utility tests).
    eval_per_disease
        Synthetic patients per disease each site evaluates at the end (0: no federated evaluation).
    seed
        Initial weights and site randomness.
    histogram_noise_multiplier
        σ of each site's one DP release of its disease histogram, from which the model learns the
        consortium's disease mix (charged to the site's budget; 0: sites decline and the mix is
        uniform). The default 5.0 (``client.config.DEFAULT_HISTOGRAM_NOISE``) adds 0.07–0.12 to ε
        at budgets 8–4.
    method
        ``diffusion`` (ours; ``guidance`` picks the variant), or a baseline: ``marginals``
        (independent per-disease marginals, one Gaussian release per site), ``dpgan`` (a
        conditional GAN, DP-SGD on the discriminator, FedAvg; reads ``rounds``, ``local_steps``,
        ``batch_size``, ``clip_norm``, ``seed``) or ``prior`` (the bundle's public knowledge alone,
        nothing spent). A baseline fits in this process, each site under its own (ε, δ) with its
        persistent privacy state and signed ledger (:mod:`shared.baselines.site_charge`); the
        settings only the diffusion federation reads must keep their defaults.
    show_progress
        Per-round progress on stderr.

    Returns
    -------
    FederationResult
        The run folder, ``privacy.json``'s content, the ledger audit (None when nothing was
        charged); ``model`` and ``ok``.

    Raises
    ------
    InputError
        A bad setting or site list (a setting the method does not read included), or a site
        export that cannot be read.
    SignatureError
        The bundle does not verify with ``pub``.
    BudgetExceededError
        A baseline that a site's remaining budget cannot cover (nothing is charged anywhere).

    Assumptions
    -----------
    Each site runs DP-SGD with Poisson sampling and per-patient clipping (or, for the marginals,
    one Gaussian release of bounded sums); the privacy unit is a patient. A site refuses a round
    that would exceed its budget (it sits out; ``privacy`` records it).
    """
    plan = plan_federation(bundle, pub, sites, out=out, epsilon=epsilon, rounds=rounds, planned_rounds=planned_rounds,
                           delta=delta, guidance=guidance, pretrain_steps=pretrain_steps, local_steps=local_steps,
                           batch_size=batch_size, clip_norm=clip_norm, noise_multiplicity=noise_multiplicity, lr=lr,
                           state_root=state_root, min_sites=min_sites, evaluate_fraction=evaluate_fraction,
                           eval_noise_multiplier=eval_noise_multiplier, holdouts=holdouts,
                           eval_per_disease=eval_per_disease, seed=seed,
                           histogram_noise_multiplier=histogram_noise_multiplier, method=method)
    return run_federation(plan, show_progress=show_progress)
