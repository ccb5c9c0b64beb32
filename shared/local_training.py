"""Train the knowledge-guided diffusion model on one site's tensors (no federation, no DP).

The optimisation itself is :func:`shared.training.train_steps`, the same step the Flower
ClientApp runs; this module adds the optimizer, the learning-rate decay, EMA and the
model folder's metadata.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.bundle import StudyBundle
from shared.dp_sgd import DEFAULT_CLIP_NORM, Mechanism, make_private
from shared.dp_sgd import backward as private_backward
from shared.privacy.budget import PrivacyBudget
from shared.privacy.state import PrivacyState
from shared.model.checkpoint import FORMAT, FORMAT_VERSION, TrainedModel, build
from shared.model.layout import Guidance
from shared.training import EMA, TrainConfig, shuffled_batches, train_steps
from shared.trajectories import TrajectoryTensors

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

    With ``private``, the steps are DP-SGD (:mod:`shared.dp_sgd`) under the site's persistent
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
    losses = train_steps(net, optimizer, batches, schedule=schedule, tables=tables, steps=config.steps,
                         cond_drop=config.cond_drop, generator=generator, scheduler=scheduler, ema=ema,
                         on_step=on_step, multiplicity=multiplicity, backward=backward)
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
        "training": {"patients": tensors.n, "steps": config.steps, "seconds": round(seconds, 2),
                     "final_loss": float(np.nanmean(losses[-100:]))},
        "privacy": privacy,
    }
    return TrainedModel(model=ema.shadow, schedule=schedule, tables=tables, layout=layout, meta=meta), losses


def json_dict(config) -> dict:
    """A frozen config dataclass as a plain dict."""
    return json.loads(config.to_json())
