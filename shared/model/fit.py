"""Train the knowledge-guided diffusion model on one site's tensors (no federation, no DP).

The optimisation itself is :func:`shared.model.training.train_steps`, the same step the Flower
ClientApp runs; this module adds the optimizer, the learning-rate decay, EMA and the
model folder's metadata.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.bundle import StudyBundle
from shared.privacy.dp_sgd import DEFAULT_CLIP_NORM, Mechanism, make_private
from shared.privacy.dp_sgd import backward as private_backward
from shared.privacy.budget import PrivacyBudget
from shared.privacy.state import PrivacyState
from shared.model.checkpoint import FORMAT, FORMAT_VERSION, TrainedModel, build
from shared.model.layout import Guidance
from shared.model.training import EMA, TrainConfig, per_sample_loss, shuffled_batches, train_steps
from shared.trajectories.tensors import TrajectoryTensors

NON_PRIVATE_STATEMENT = (
    "Trained without differential privacy on one site's records: the model and its samples may "
    "reveal information about individual training patients. For internal evaluation only; do not release."
)


SINGLE_SITE_DP_STATEMENT = (
    "Trained on one site's records with DP-SGD (Poisson sampling, per-patient clipping, Gaussian noise); "
    "record-level (ε, δ)-DP, add/remove-one, for the ε recorded here (cumulative for this dataset). "
    "The model and its samples are post-processing. Sampling and noise drew from a generator seeded "
    "with OS entropy (not Opacus' secure RNG: torchcsprng is not installable here)."
)


@dataclass(frozen=True)
class PrivateTraining:
    """Single-site DP settings and the site's persistent privacy state folder."""

    state_path: Path  # persists the accountant across trainings on this dataset
    fingerprint: str  # the dataset's identity (sha256 of its files)
    epsilon: float
    delta: float = 1e-5
    clip_norm: float = DEFAULT_CLIP_NORM
    noise_multiplicity: int = 4
    accountant: str = "rdp"

    def prepare(self, n: int, *, steps: int, batch_size: int = 32) -> tuple[Mechanism, PrivacyState]:
        """σ for ``steps`` more steps within what is left of the budget; raises if nothing is left."""
        budget = PrivacyBudget(epsilon=self.epsilon, delta=self.delta)
        state = PrivacyState.load_or_create(self.state_path, fingerprint=self.fingerprint, budget=budget,
                                            accountant=self.accountant)
        sample_rate = min(1.0, batch_size / n)
        sigma = state.calibrate_remaining(sample_rate=sample_rate, steps=steps)
        mechanism = Mechanism(noise_multiplier=sigma, clip_norm=self.clip_norm, sample_rate=sample_rate,
                              noise_multiplicity=self.noise_multiplicity)
        return mechanism, state


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
    privacy = {"mechanism": "none", "statement": NON_PRIVATE_STATEMENT}
    multiplicity, backward = 1, None
    if private is None:
        batches = shuffled_batches(x0, disease, batch_size=config.batch_size, generator=generator)
        net = model
    else:
        mechanism, state = private.prepare(tensors.n, steps=config.steps, batch_size=config.batch_size)
        net, optimizer, batches = make_private(model, optimizer, x0, disease, mechanism=mechanism)
        multiplicity, backward = mechanism.noise_multiplicity, private_backward
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_decay(config.steps))
    started = time.perf_counter()
    # one chunk without validation; with it, a check every validation_every steps
    every = config.steps if validation is None else config.validation_every
    losses, best, curve = [], None, []
    while len(losses) < config.steps:
        done = len(losses)
        step_hook = None if on_step is None else (lambda i, loss, done=done: on_step(done + i, loss))
        losses += train_steps(net, optimizer, batches, schedule=schedule, tables=tables,
                              steps=min(every, config.steps - done), cond_drop=config.cond_drop, generator=generator,
                              scheduler=scheduler, ema=ema, on_step=step_hook, multiplicity=multiplicity,
                              backward=backward)
        if validation is not None:
            loss = validation_loss(ema.shadow, schedule, tables, *validation, seed=config.seed)
            curve.append([len(losses), round(loss, 6)])
            if best is None or loss < best[1]:
                best = (len(losses), loss, copy.deepcopy(ema.shadow.state_dict()))
            elif config.validation_patience and len(losses) - best[0] >= config.validation_patience * every:
                break  # patience spent: no new lowest held-back loss in that many checks
    picked = None
    if best is not None:
        ema.shadow.load_state_dict(best[2])
        picked = {"patients": int(validation[0].shape[0]), "share": config.validation_share,
                  "best_step": best[0], "best_loss": round(best[1], 6), "stopped_step": len(losses),
                  "patience": config.validation_patience, "curve": curve}
    seconds = time.perf_counter() - started
    if private is not None:
        epsilon = state.record_round(round_id=f"train:{int(time.time() * 1000)}", steps=config.steps,
                                     noise_multiplier=mechanism.noise_multiplier, sample_rate=mechanism.sample_rate,
                                     clip_norm=mechanism.clip_norm, noise_multiplicity=mechanism.noise_multiplicity)
        privacy = {"mechanism": "DP-SGD", "epsilon": epsilon, "delta": state.budget.delta,
                   "budget_epsilon": state.budget.epsilon, **mechanism.as_dict(),
                   "statement": SINGLE_SITE_DP_STATEMENT}
    counts = np.bincount(tensors.disease, minlength=layout.n_diseases)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "denoiser": json_dict(model.config), "schedule": json_dict(schedule.config), "guidance": guidance,
        "bundle_sha256": bundle.bundle_hash, "study": bundle.manifest.get("study", ""),
        "diseases": list(bundle.diseases["id"]), "disease_counts": counts.tolist(),
        "train": config.as_dict(),
        "training": {"patients": tensors.n, "steps": len(losses), "seconds": round(seconds, 2),
                     "final_loss": float(np.nanmean(losses[-100:])), "validation": picked},
        "privacy": privacy,
    }
    return TrainedModel(model=ema.shadow, schedule=schedule, tables=tables, layout=layout, meta=meta), losses


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


def json_dict(config) -> dict:
    """A frozen config dataclass as a plain dict."""
    return json.loads(config.to_json())
