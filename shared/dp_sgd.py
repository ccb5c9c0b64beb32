"""DP-SGD for the denoiser with Opacus: Poisson sampling, per-sample clipping, Gaussian noise.

Assumptions (each one voids the guarantee if broken, so each is enforced here):

- **Poisson sampling**: every step includes each patient independently with probability q
  (Opacus ``DPDataLoader``); empty batches still take a noisy step and are accounted.
- **Per-sample clipping** at norm C of the gradient of one *patient's* loss (the denoiser
  keeps the patient as the leading dimension, also under noise multiplicity).
- **Gaussian noise** N(0, σ²C²) added to the summed clipped gradients every step.
- **Privacy unit**: one patient (one row of the site's tensors) at one site; the
  neighbouring relation is add/remove-one. Everything after the noisy gradients
  (aggregation, EMA, sampling) is post-processing.

The accounting itself is the caller's (``shared.privacy``): this module only runs the
mechanism it is told to run. Opacus' secure RNG (``secure_mode``) needs torchcsprng, which
cannot be installed here; Opacus warns about it and the data card says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from opacus import GradSampleModule
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from torch.utils.data import TensorDataset

GRAD_SAMPLE_MODES = ("hooks",)


@dataclass(frozen=True)
class Mechanism:
    """The DP-SGD mechanism of one site (what the ledger records)."""

    noise_multiplier: float  # σ: noise std in units of the clip norm
    clip_norm: float  # C: per-patient gradient norm bound
    sample_rate: float  # q: Poisson inclusion probability per step
    noise_multiplicity: int = 1  # K: diffusion noise draws averaged inside each patient's loss
    grad_sample_mode: str = "hooks"  # how Opacus computes per-sample gradients

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.noise_multiplicity < 1:
            raise ValueError(f"noise_multiplicity must be ≥ 1, got {self.noise_multiplicity}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"grad_sample_mode must be one of {', '.join(GRAD_SAMPLE_MODES)}")

    def as_dict(self) -> dict:
        return asdict(self)


def make_private(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x0: torch.Tensor, disease: torch.Tensor,
                 *, mechanism: Mechanism, generator: torch.Generator
                 ) -> tuple[GradSampleModule, DPOptimizer, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Wrap a fresh model and optimizer for DP-SGD and return Poisson-sampled batches.

    Returns
    -------
    (model, optimizer, batches)
        The model computes per-patient gradients; the optimizer clips, adds noise and
        steps; ``batches`` never ends (epochs of Poisson-sampled batches, some empty).

    Raises
    ------
    ValueError
        No patients, or a model that was already wrapped.
    """
    n = x0.shape[0]
    if n == 0:
        raise ValueError("no patients to train on")
    if isinstance(model, GradSampleModule):
        raise ValueError("model is already wrapped for DP: build a fresh one each round")
    private_model = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    private_optimizer = DPOptimizer(
        optimizer, noise_multiplier=mechanism.noise_multiplier, max_grad_norm=mechanism.clip_norm,
        expected_batch_size=max(1, round(mechanism.sample_rate * n)), loss_reduction="mean",
        generator=generator,
    )
    loader = DPDataLoader(TensorDataset(x0, disease), sample_rate=mechanism.sample_rate, generator=generator)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from loader

    return private_model, private_optimizer, batches()
