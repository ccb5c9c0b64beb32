"""Fit the knowledge-guided diffusion model to one site's tensors, with or without DP-SGD.

- :func:`train_local`: a whole training from scratch (``raregraph train``, the coordinator's
  pretraining, benchmarks): optimizer, learning-rate decay, EMA, optional early stopping, and
  the model folder's metadata. Without DP it is for evaluation only; with
  :class:`PrivateTraining` it runs DP-SGD under the site's persistent privacy state.
- :func:`train_private`: one DP-SGD training charged to the site's accountant (make the model
  private, train, record the charge), the one place this happens: :func:`train_local` and the
  federated round at a site (:mod:`client.training`) both call it.

The optimisation step itself is :func:`shared.model.training.train_steps`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.bundle import StudyBundle
from shared.errors import ConfigError
from shared.model.checkpoint import TrainedModel, build, model_meta
from shared.model.layout import Guidance
from shared.model.schedule import KnowledgeVPSchedule
from shared.model.settings import TrainConfig
from shared.model.training import EMA, KnowledgeTables, per_sample_loss, shuffled_batches, train_steps
from shared.privacy import statements
from shared.privacy.budget import PrivacyBudget
from shared.privacy.dp_sgd import Mechanism, make_private
from shared.privacy.dp_sgd import backward as private_backward
from shared.privacy.ledger import Ledger, key_use_path, round_key
from shared.privacy.settings import DEFAULT_CLIP_NORM
from shared.privacy.state import PrivacyState
from shared.signing.keys import load_private_key, new_keypair
from shared.trajectories.tensors import TrajectoryTensors


LEDGER_FILE = "ledger.jsonl"  # STATE/ledger.jsonl: the signed record of every single-site DP training
SITE_KEY = Path("identity") / "site.key"  # STATE/identity/site.key unless a key is given: signs the ledger


@dataclass(frozen=True)
class PrivateTraining:
    """Single-site DP settings, and the site's state folder: the persistent privacy state
    (``privacy_state.json``) and the signed, hash-chained ledger of every charge (``ledger.jsonl``,
    :mod:`shared.privacy.ledger`), as a federated site keeps them.

    The settings are checked here, before anything is written: a bad ε, δ, clip norm or
    multiplicity leaves no state folder behind.

    Raises
    ------
    ConfigError
        ε ≤ 0, δ outside (0, 1), clip norm ≤ 0 or not finite, multiplicity < 1.
    """

    state_path: Path  # persists the accountant and the ledger across trainings on this dataset
    fingerprint: str  # the dataset's identity (sha256 of its files)
    epsilon: float
    delta: float = 1e-5
    clip_norm: float = DEFAULT_CLIP_NORM
    noise_multiplicity: int = 4
    accountant: str = "rdp"
    site_key: Path | None = None  # Ed25519 key that signs the ledger; None: STATE/identity/site.key, made once
    site_id: str = "site"  # the name the ledger entries carry
    allow_budget_raise: bool = False  # adopt a budget above the stored one (raregraph train --raise-budget)

    def __post_init__(self) -> None:
        PrivacyBudget(epsilon=self.epsilon, delta=self.delta)
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ConfigError(f"clip norm must be a positive number, got {self.clip_norm!r}")
        if isinstance(self.noise_multiplicity, bool) or not isinstance(self.noise_multiplicity, int) \
                or self.noise_multiplicity < 1:
            raise ConfigError(f"noise multiplicity must be an integer ≥ 1, got {self.noise_multiplicity!r}")

    def open_ledger(self) -> Ledger:
        """The state folder's ledger, verified and checked against the key's use record (a lost
        state folder is refused when the key shows it has trained on this dataset)."""
        key_path = self.site_key
        if key_path is None:
            key_path = Path(self.state_path) / SITE_KEY
            if not key_path.exists():
                new_keypair(key_path.with_suffix(""))
        ledger = Ledger(Path(self.state_path) / LEDGER_FILE, self.site_id, load_private_key(key_path),
                        key_use=key_use_path(key_path))
        ledger.check_key_use(self.fingerprint)
        return ledger

    def prepare(self, n: int, *, steps: int, batch_size: int = 32,
                run_id: str = "train") -> tuple[Mechanism, PrivacyState, Ledger]:
        """σ for ``steps`` more steps within what is left of the budget, the state and its
        verified ledger.

        Raises
        ------
        BudgetExceededError
            Nothing meaningful is left of the budget.
        LedgerError
            The ledger does not verify, or the state disagrees with it (reset or edited).
        """
        budget = PrivacyBudget(epsilon=self.epsilon, delta=self.delta)
        ledger = self.open_ledger()  # before the state: a lost folder is refused, not started afresh
        state = PrivacyState.load_or_create(self.state_path, fingerprint=self.fingerprint, budget=budget,
                                            accountant=self.accountant, allow_budget_raise=self.allow_budget_raise)
        ledger.reconcile(state)  # a reset or edited state is refused: the signed ledger is the witness
        ledger.append_budget(state, run_id=run_id, server_round=1)  # a changed budget is signed as its own entry
        sample_rate = min(1.0, batch_size / n)
        sigma = state.calibrate_remaining(sample_rate=sample_rate, steps=steps)
        mechanism = Mechanism(noise_multiplier=sigma, clip_norm=self.clip_norm, sample_rate=sample_rate,
                              noise_multiplicity=self.noise_multiplicity)
        return mechanism, state, ledger


def cosine_decay(total: int, *, floor: float = 0.1) -> Callable[[int], float]:
    """Learning-rate multiplier: cosine from 1 to ``floor`` over ``total`` steps."""
    return lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def train_local(tensors: TrajectoryTensors, bundle: StudyBundle, *, guidance: Guidance, config: TrainConfig,
                denoiser: dict | None = None, gamma: float = 1.0,
                on_step: Callable[[int, float], None] | None = None,
                private: PrivateTraining | None = None) -> tuple[TrainedModel, list[float]]:
    """Train from scratch; return the model (EMA weights) and the loss of every step.

    With ``private``, the steps are DP-SGD (:mod:`shared.privacy.dp_sgd`) under the site's persistent
    privacy state: σ is calibrated for this training's steps against what is left of the
    budget, the run is refused if it would cross it, and it is charged before the model is
    returned. EMA of DP weights is post-processing.

    Raises
    ------
    ValueError
        No patients.
    BudgetExceededError
        The training would take ε past the site's budget (nothing is trained).
    """
    if tensors.n == 0:
        raise ValueError("no patients to train on")
    torch.manual_seed(config.seed)
    model, schedule, tables, layout = build(bundle, guidance=guidance, denoiser=denoiser, gamma=gamma)
    generator = torch.Generator().manual_seed(config.seed)
    validation = None
    if private is None and config.validation_share > 0:
        tensors, held = validation_split(tensors, config.validation_share, seed=config.seed)
        validation = (layout.to_vectors(held), torch.from_numpy(np.array(held.disease, dtype=np.int64)))
    x0 = layout.to_vectors(tensors)
    disease = torch.from_numpy(np.array(tensors.disease, dtype=np.int64))  # a writable copy
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(model, config.ema)
    started = time.perf_counter()
    if private is None:
        losses, picked = _train_plain(model, optimizer, x0, disease, schedule=schedule, tables=tables, config=config,
                                      generator=generator, ema=ema, on_step=on_step, validation=validation)
        privacy = {"mechanism": "none", "statement": statements.NON_PRIVATE}
    else:
        run_id = f"train-{int(time.time() * 1000)}"  # one single-site training: round 1 of its own run
        mechanism, state, ledger = private.prepare(tensors.n, steps=config.steps, batch_size=config.batch_size,
                                                   run_id=run_id)
        losses, epsilon = train_private(model, optimizer, x0, disease, mechanism=mechanism, state=state,
                                        round_id=round_key(run_id, 1, "train"), steps=config.steps,
                                        schedule=schedule, tables=tables, cond_drop=config.cond_drop,
                                        generator=generator, lr_lambda=cosine_decay(config.steps), ema=ema,
                                        on_step=on_step)
        entry = ledger.append_round(state, run_id=run_id, server_round=1)
        picked = None
        privacy = {"mechanism": "DP-SGD", "epsilon": epsilon, "delta": state.budget.delta,
                   "budget_epsilon": state.budget.epsilon, **mechanism.as_dict(),
                   "ledger": {"seq": entry.seq, "hash": entry.entry_hash, "key_id": entry.key_id},
                   "statement": statements.SINGLE_SITE_DP}
    seconds = time.perf_counter() - started
    counts = np.bincount(tensors.disease, minlength=layout.n_diseases)
    meta = model_meta(model, schedule, bundle, guidance=guidance, disease_counts=counts.tolist(),
                      train=config.as_dict(),
                      training={"patients": tensors.n, "steps": len(losses), "seconds": round(seconds, 2),
                                "final_loss": float(np.nanmean(losses[-100:])), "validation": picked},
                      privacy=privacy)
    return TrainedModel(model=ema.shadow, schedule=schedule, tables=tables, layout=layout, meta=meta), losses


def _train_plain(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x0: torch.Tensor, disease: torch.Tensor, *,
                 schedule: KnowledgeVPSchedule, tables: KnowledgeTables, config: TrainConfig,
                 generator: torch.Generator, ema: EMA, on_step: Callable[[int, float], None] | None,
                 validation: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[list[float], dict | None]:
    """Non-private training in chunks, with a validation check after each when ``validation`` is
    given (early stopping keeps the best EMA weights); the losses and the validation record."""
    batches = shuffled_batches(x0, disease, batch_size=config.batch_size, generator=generator)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_decay(config.steps))
    # one chunk without validation; with it, a check every validation_every steps
    every = config.steps if validation is None else config.validation_every
    losses, best, curve = [], None, []
    while len(losses) < config.steps:
        done = len(losses)
        step_hook = None if on_step is None else (lambda i, loss, done=done: on_step(done + i, loss))
        losses += train_steps(model, optimizer, batches, schedule=schedule, tables=tables,
                              steps=min(every, config.steps - done), cond_drop=config.cond_drop, generator=generator,
                              scheduler=scheduler, ema=ema, on_step=step_hook)
        if validation is not None:
            loss = validation_loss(ema.shadow, schedule, tables, *validation, seed=config.seed)
            curve.append([len(losses), round(loss, 6)])
            if best is None or loss < best[1]:
                best = (len(losses), loss, copy.deepcopy(ema.shadow.state_dict()))
            elif config.validation_patience and len(losses) - best[0] >= config.validation_patience * every:
                break  # patience spent: no new lowest held-back loss in that many checks
    if best is None:
        return losses, None
    ema.shadow.load_state_dict(best[2])
    return losses, {"patients": int(validation[0].shape[0]), "share": config.validation_share,
                    "best_step": best[0], "best_loss": round(best[1], 6), "stopped_step": len(losses),
                    "patience": config.validation_patience, "curve": curve}


def train_private(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x0: torch.Tensor, disease: torch.Tensor,
                  *, mechanism: Mechanism, state: PrivacyState, round_id: str, steps: int,
                  schedule: KnowledgeVPSchedule, tables: KnowledgeTables, cond_drop: float,
                  generator: torch.Generator, lr_lambda: Callable[[int], float] | None = None, ema: EMA | None = None,
                  on_step: Callable[[int, float], None] | None = None) -> tuple[list[float], float]:
    """Run ``steps`` DP-SGD steps on ``model`` and charge them to the site's accountant.

    1. make the model, optimizer and data private (:func:`shared.privacy.dp_sgd.make_private`:
       Poisson sampling at ``mechanism.sample_rate``, per-patient clipping, Gaussian noise σ);
    2. train (:func:`shared.model.training.train_steps`, K = ``mechanism.noise_multiplicity``
       diffusion draws inside each patient's loss);
    3. record the steps in ``state`` under ``round_id`` (saved to the site's disk) and return
       the losses and the ε spent so far.

    The caller has already checked that the steps fit in the budget (``state.can_afford``
    or a calibration against what is left); writing the site's ledger entry is the caller's.

    Parameters
    ----------
    model, optimizer
        A plain (not yet private) denoiser with its weights loaded, and its optimizer.
    x0, disease
        Every patient's vector [n, D] and disease index [n]: the privacy unit is a patient.
    lr_lambda
        Learning-rate multiplier per step (a ``LambdaLR`` on the private optimizer); None: constant.
    ema
        EMA of the weights (post-processing of the DP weights); None: none.

    Assumptions
    -----------
    Record-level (ε, δ)-DP under add/remove-one holds only with Poisson sampling and
    per-patient clipping, which :func:`~shared.privacy.dp_sgd.make_private` enforces; an empty
    Poisson batch still counts as a step for the accountant.
    """
    net, private_optimizer, batches = make_private(model, optimizer, x0, disease, mechanism=mechanism)
    scheduler = None if lr_lambda is None else torch.optim.lr_scheduler.LambdaLR(private_optimizer, lr_lambda)
    losses = train_steps(net, private_optimizer, batches, schedule=schedule, tables=tables, steps=steps,
                         cond_drop=cond_drop, generator=generator, scheduler=scheduler, ema=ema, on_step=on_step,
                         multiplicity=mechanism.noise_multiplicity, backward=private_backward)
    epsilon = state.record_round(round_id=round_id, steps=steps, noise_multiplier=mechanism.noise_multiplier,
                                 sample_rate=mechanism.sample_rate, clip_norm=mechanism.clip_norm,
                                 noise_multiplicity=mechanism.noise_multiplicity)
    return losses, epsilon


def validation_split(tensors: TrajectoryTensors, share: float, *, seed: int) -> tuple[TrajectoryTensors, TrajectoryTensors]:
    """(training part, validation part): ``share`` of each disease's patients, at least one of a
    disease with two or more, held back at random; a disease with one patient stays in training.

    Raises
    ------
    ValueError
        Nothing would be held back (every disease has a single patient).
    """
    rng = np.random.default_rng([seed, 7])
    held = []
    for d in np.unique(tensors.disease):
        rows = rng.permutation(np.flatnonzero(tensors.disease == d))
        if rows.size >= 2:
            held.append(rows[: max(1, int(round(share * rows.size)))])
    if not held:
        raise ValueError("too few patients to hold any back for validation")
    mask = np.zeros(tensors.n, bool)
    mask[np.concatenate(held)] = True
    return tensors.subset(np.flatnonzero(~mask)), tensors.subset(np.flatnonzero(mask))


@torch.no_grad()
def validation_loss(model: torch.nn.Module, schedule, tables, x0: torch.Tensor, disease: torch.Tensor, *,
                    seed: int, draws: int = 16) -> float:
    """Mean denoising loss of ``model`` on held-back patients, ``draws`` (t, noise) draws each.

    The generator is seeded the same way at every call, so successive checkpoints are scored
    on the very same draws and their losses differ only by the weights.
    """
    was_training = model.training
    model.eval()
    loss = per_sample_loss(model, schedule, tables, x0, disease, cond_drop=0.0,
                           generator=torch.Generator().manual_seed(seed + 1), multiplicity=draws)
    model.train(was_training)
    return float(loss.mean())
