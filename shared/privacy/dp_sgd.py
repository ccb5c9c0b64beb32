"""DP-SGD for the denoiser with Opacus: Poisson sampling, per-sample clipping, Gaussian noise.

Assumptions (each one voids the guarantee if broken, so each is enforced here):

- **Poisson sampling**: every step includes each patient independently with probability q
  (Opacus ``DPDataLoader``); empty batches still take a noisy step and are accounted.
- **Per-sample clipping** at norm C of the gradient of one *patient's* loss (the denoiser
  keeps the patient as the leading dimension, also under noise multiplicity). Two ways to
  compute it, same result to float rounding (a test compares them): ``bookkeeping``
  (default; :mod:`shared.privacy.clipping`, one backward pass) and Opacus ``hooks`` (every
  per-patient gradient materialised); ``benchmarks/bench_dp.py`` times them. Opacus 1.6's
  ghost clipping is not offered: its Linear norm sampler handles 2-D and 3-D activations
  only, and the denoiser's window layers see [N, K, T, C] (it fails on a missing
  ``_norm_sample``).
- **Gaussian noise** N(0, σ²C²) added to the summed clipped gradients every step.
- **Privacy unit**: one patient (one row of the site's tensors) at one site; the
  neighbouring relation is add/remove-one. Everything after the noisy gradients
  (aggregation, EMA, sampling) is post-processing.

The accounting itself is the caller's (``shared.privacy``): this module only runs the
mechanism it is told to run. Sampling and noise draw from a generator seeded with OS
entropy, never from the run's seed (which the coordinator knows). Opacus' secure RNG
(``secure_mode``, robust to floating-point attacks) needs torchcsprng, which cannot be
installed here; Opacus warns about it and the data card says so.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import torch
from opacus import GradSampleModule
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn
from torch.utils.data import TensorDataset

from shared.privacy.clipping import PerPatientClipping

GRAD_SAMPLE_MODES = ("bookkeeping", "hooks")


@dataclass(frozen=True)
class Mechanism:
    """The DP-SGD mechanism of one site (what the ledger records)."""

    noise_multiplier: float  # σ: noise std in units of the clip norm
    clip_norm: float  # C: per-patient gradient norm bound
    sample_rate: float  # q: Poisson inclusion probability per step
    noise_multiplicity: int = 1  # K: diffusion noise draws averaged inside each patient's loss
    grad_sample_mode: str = "bookkeeping"  # how per-patient clipping is computed (same result)

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


NOISE_CHUNK = 1 << 18  # draws per thread at least: below this a thread costs more than it saves


def gaussian(size: int, *, std: float, generator: torch.Generator) -> torch.Tensor:
    """``size`` independent N(0, std²) draws, filled by up to ``torch.get_num_threads()``
    threads, each chunk from its own generator seeded by ``generator`` (so a seeded run
    repeats). Drawing a 1.4 M-parameter model's noise is a third of a plain training step
    on one core; PyTorch fills a tensor's normals on one thread only."""
    out = torch.empty(size)
    workers = max(1, min(torch.get_num_threads(), size // NOISE_CHUNK))
    if workers == 1:
        return out.normal_(0.0, std, generator=generator)
    seeds = torch.randint(0, 2**62, (workers,), generator=generator).tolist()
    list(_pool().map(lambda cs: cs[0].normal_(0.0, std, generator=torch.Generator().manual_seed(cs[1])),
                     zip(out.chunk(workers), seeds)))
    return out


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(1, torch.get_num_threads()), thread_name_prefix="dp-noise")


class PreClippedDPOptimizer(DPOptimizerFastGradientClipping):
    """Opacus' optimizer for gradients that arrive clipped and summed in ``p.grad``
    (:class:`~shared.privacy.clipping.PerPatientClipping`): adds N(0, σ²C²) to every coordinate,
    divides by the expected batch size, steps. The noise of all parameters is one
    :func:`gaussian` vector; no copy of the summed gradient is kept."""

    def accumulate(self) -> None:
        for p in self.params:
            p.summed_grad = p.grad if p.summed_grad is None else p.summed_grad + p.grad

    def add_noise(self) -> None:
        noise = gaussian(sum(p.numel() for p in self.params), std=self.noise_multiplier * self.max_grad_norm,
                         generator=self.generator)
        offset = 0
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            p.grad = (p.summed_grad + noise[offset: offset + p.numel()].view_as(p)).view_as(p)
            offset += p.numel()
            _mark_as_processed(p.summed_grad)


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, x0: torch.Tensor, disease: torch.Tensor,
                 *, mechanism: Mechanism, generator: torch.Generator | None = None
                 ) -> tuple[nn.Module, DPOptimizer, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Wrap a fresh model and optimizer for DP-SGD and return Poisson-sampled batches.

    Parameters
    ----------
    generator
        Source of the Poisson sampling and the Gaussian noise. Leave it out: a generator
        seeded from the operating system's entropy is made, because the guarantee needs both
        to be unpredictable to whoever sees the weights. A seeded one (tests, benchmarks)
        repeats them, and whoever knows the seed could subtract the noise.

    Returns
    -------
    (model, optimizer, batches)
        The model clips per patient (:func:`private_backward` runs its backward pass); the
        optimizer adds noise to the clipped sum and steps; ``batches`` never ends (epochs
        of Poisson-sampled batches, some empty).

    Raises
    ------
    ValueError
        No patients, or a model that was already wrapped.
    """
    n = x0.shape[0]
    if n == 0:
        raise ValueError("no patients to train on")
    if isinstance(model, (GradSampleModule, PerPatientClipping)):
        raise ValueError("model is already wrapped for DP: build a fresh one each round")
    if generator is None:
        generator = torch.Generator().manual_seed(secrets.randbits(63))
    expected = max(1, round(mechanism.sample_rate * n))
    common = dict(noise_multiplier=mechanism.noise_multiplier, max_grad_norm=mechanism.clip_norm,
                  expected_batch_size=expected, loss_reduction="mean", generator=generator)
    if mechanism.grad_sample_mode == "bookkeeping":
        private_model = PerPatientClipping(model, clip_norm=mechanism.clip_norm)
        private_optimizer = PreClippedDPOptimizer(optimizer, **common)
    else:
        private_model = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
        private_optimizer = DPOptimizer(optimizer, **common)
    loader = DPDataLoader(TensorDataset(x0, disease), sample_rate=mechanism.sample_rate, generator=generator)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from loader

    return private_model, private_optimizer, batches()


def backward(model: nn.Module, per_patient_loss: torch.Tensor) -> None:
    """The backward pass of one DP-SGD step for a model from :func:`make_private`.

    Opacus hooks: backward of the batch mean (Opacus rescales to per-patient gradients and
    clips in the optimizer). Book-keeping: the model leaves the clipped sum in ``p.grad``
    for the optimizer to noise. An empty Poisson batch gives zero gradients, so DP-SGD
    still takes its (pure-noise) step, as the accounting assumes.
    """
    if isinstance(model, PerPatientClipping):
        model.backward(per_patient_loss)
    else:
        (per_patient_loss.sum() / max(per_patient_loss.shape[0], 1)).backward()
