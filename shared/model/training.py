"""The local training step: the denoising loss under the knowledge schedule, with
classifier-free-guidance condition dropout.

The network predicts x̂₀ by default (``ScheduleConfig.prediction = "x0"``: squared error to x₀
weighted by min(1 + SNR, cap), the x₀ form of the min-SNR weighting); ``"v"`` trains on the
velocity target v = α ε − σ x₀ (Salimans & Ho 2022) with unit weights instead.

:func:`train_steps` takes any iterator of batches, so the same code trains on one site
(shuffled mini-batches, this module) and inside the Flower ClientApp under DP-SGD (Opacus'
Poisson-sampled loader and per-sample clipping; :func:`per_sample_loss` returns one loss
per patient, as Opacus' ghost clipping needs).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

from shared.model.schedule import KnowledgeVPSchedule
from shared.model.denoiser import Denoiser
from shared.model.layout import ModelLayout

MIN_SNR_CAP = 5.0  # Hang et al. 2023's recommended γ


class KnowledgeTables:
    """The layout (loss weights) and the x̂₀ clip per dimension, as tensors."""

    def __init__(self, layout: ModelLayout) -> None:
        self.layout = layout
        self.clip = torch.from_numpy(layout.clip)


def per_sample_loss(model: nn.Module, schedule: KnowledgeVPSchedule, tables: KnowledgeTables,
                    x0: torch.Tensor, disease: torch.Tensor, *, cond_drop: float,
                    generator: torch.Generator, multiplicity: int = 1) -> torch.Tensor:
    """Weighted denoising error, one value per patient [N].

    1. t ~ U(0, 1), ε ~ N(0, I); x_t = α x₀ + σ ε under λ_j(t | d) = λ(t) + γ s_{d,j}, s the
       model's :meth:`~shared.model.denoiser.Denoiser.schedule_shift` (z, 0 or learned);
    2. the condition is replaced by the null token with probability ``cond_drop``;
    3. error in x₀-space with the min-SNR weight ω_j = min(1 + e^{λ_j}, 5) (Hang et al. 2023,
       "Efficient Diffusion Training via Min-SNR Weighting", ICCV; 1 + SNR is what a
       v-loss weighs, capped so nearly clean dimensions do not dominate);
    4. loss = Σ_j m_j ω_j (x̂₀_j − x₀_j)² / Σ_j m_j, with m = 0 on lab values never measured;
    5. with ``multiplicity`` K > 1, K independent (t, ε) draws per patient are averaged
       inside the patient's loss, before any clipping (noise multiplicity; Dockhorn et al.
       2023, "Differentially Private Diffusion Models", TMLR, Sec. 3.2): the gradient
       variance falls at no privacy cost, since each patient still yields one gradient.
    """
    if multiplicity < 1:
        raise ValueError(f"multiplicity must be ≥ 1, got {multiplicity}")
    n, k = x0.shape[0], multiplicity
    t = torch.rand((n, k), generator=generator)
    noise = torch.randn((n, k, x0.shape[1]), generator=generator)
    net = _unwrap(model)
    channel_shift = net.schedule_shift(disease)  # [N, C], once: a learned shift is a layer
    shift = net.dimension_shift(channel_shift)[:, None, :]
    x0k = x0[:, None, :].expand(n, k, x0.shape[1])
    x_t = schedule.add_noise(x0k, noise, t, shift=shift)
    logsnr = schedule.logsnr(t, shift)
    dropped = torch.rand(n, generator=generator) < cond_drop
    condition = torch.where(dropped, torch.full_like(disease, net.null_disease), disease)
    pred = model(x_t, schedule.base_logsnr(t), condition, disease, channel_shift)  # [N, K, D]
    if schedule.config.prediction == "x0":
        target, omega = x0k, torch.clamp(1.0 + torch.exp(logsnr), max=MIN_SNR_CAP)
    else:
        target, omega = schedule.velocity(x0k, noise, t, shift=shift), torch.ones_like(x0k)
    m = tables.layout.loss_weights(x0)[:, None, :]
    return (((pred - target) ** 2 * omega * m).sum(dim=2) / m.sum(dim=2)).mean(dim=1)


def _unwrap(model: nn.Module) -> Denoiser:
    return model._module if hasattr(model, "_module") else model  # Opacus GradSampleModule


class EMA:
    """Exponential moving average of a model's parameters (sampling weights)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(_unwrap(model)).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), _unwrap(model).parameters()):
            s.lerp_(p.detach(), 1.0 - self.decay)


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    schedule: KnowledgeVPSchedule,
    tables: KnowledgeTables,
    steps: int,
    cond_drop: float,
    generator: torch.Generator,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ema: EMA | None = None,
    multiplicity: int = 1,
    on_step: Callable[[int, float], None] | None = None,
    backward: Callable[[nn.Module, torch.Tensor], None] | None = None,
) -> list[float]:
    """Run ``steps`` optimizer steps over ``batches``; return the mean loss of each step.

    ``backward`` runs each step's backward pass from the per-patient losses: the batch mean
    by default; DP-SGD passes :func:`shared.privacy.dp_sgd.backward` (per-patient clipping). An
    empty batch (Poisson sampling can draw one) still takes its optimizer step, as DP
    accounting assumes; its loss is recorded as NaN.
    """
    backward = backward or _mean_backward
    model.train()
    losses: list[float] = []
    for step in range(steps):
        x0, disease = next(batches)
        optimizer.zero_grad(set_to_none=True)
        per_patient = per_sample_loss(model, schedule, tables, x0, disease, cond_drop=cond_drop,
                                      generator=generator, multiplicity=multiplicity)
        backward(model, per_patient)
        optimizer.step()
        losses.append(per_patient.mean().item() if x0.shape[0] else float("nan"))
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


def _mean_backward(model: nn.Module, per_patient: torch.Tensor) -> None:
    (per_patient.sum() / max(per_patient.shape[0], 1)).backward()


def shuffled_batches(x0: torch.Tensor, disease: torch.Tensor, *, batch_size: int,
                     generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless epochs of shuffled mini-batches (non-private training)."""
    n = x0.shape[0]
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield x0[idx], disease[idx]
