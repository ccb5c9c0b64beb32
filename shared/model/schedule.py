"""Continuous-time variance-preserving diffusion with a knowledge-modulated, per-feature
log-SNR, and its deterministic DDIM sampler.

References
----------
- Kingma et al. (2021), "Variational Diffusion Models", NeurIPS — continuous time, the
  process written in its log signal-to-noise ratio λ(t) (Sec. 2–3).
- Nichol & Dhariwal (2021), "Improved DDPM", ICML — the cosine schedule; in log-SNR form
  λ(t) = −2 log tan(a·t + b), truncated to [λ_min, λ_max].
- Salimans & Ho (2022), "Progressive Distillation", ICLR — v-prediction, v = α ε − σ x₀.
- Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models", ICLR — Eq. 12, η = 0.
- Chen et al. (2023), "Analog Bits", ICLR — binary features as ±1.
- This project (DESIGN.md): per-feature log-SNR λ_j(t | d) = λ(t) + γ·z_{d,j}, z the
  standardized meta-path score; γ = 0 is plain diffusion.

=================  ===========================================
variable           symbol
=================  ===========================================
``t``              t ∈ [0, 1], 1 = pure noise
``logsnr``         λ_j(t | d) = λ(t) + γ·z_{d,j}
``shift``          z_{d,j} per data dimension (0 for static dimensions)
``alpha, sigma``   α = √sigmoid(λ), σ = √sigmoid(−λ); α² + σ² = 1
``x0, noise, xt``  x₀, ε, x_t = α x₀ + σ ε
``v``              v = α ε − σ x₀
=================  ===========================================
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch


PREDICTIONS = ("x0", "v")


@dataclass(frozen=True)
class ScheduleConfig:
    """Frozen config; saved as JSON beside every checkpoint and rebuilds the schedule."""

    name: str = "knowledge-vp"  # registry key
    prediction: str = "x0"  # what the network outputs: "x0" (x̂₀) or "v" (v̂ = α ε − σ x₀)
    gamma: float = 1.0  # knowledge modulation strength γ; 0 = plain diffusion
    logsnr_min: float = -15.0  # λ at t = 1: σ/α ≈ e^7.5, pure noise
    logsnr_max: float = 15.0  # λ at t = 0: σ/α ≈ e^-7.5, clean data

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; known: {', '.join(SCHEDULES)}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")
        if not math.isfinite(self.gamma) or self.gamma < 0:
            raise ValueError(f"gamma must be a finite number ≥ 0, got {self.gamma!r}")
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(f"logsnr_min {self.logsnr_min} must be below logsnr_max {self.logsnr_max}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ScheduleConfig:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class StepOutput:
    """One sampler step: the sample at the next (less noisy) time and the x₀ estimate."""

    prev_sample: torch.Tensor
    pred_x0: torch.Tensor


class KnowledgeVPSchedule:
    """Cosine VP schedule with the per-feature knowledge shift, sampled with DDIM (η = 0).

    The API follows STYLE rule 4: :meth:`add_noise` for training, :meth:`set_timesteps`
    then :meth:`step` for sampling, ``timesteps`` after ``set_timesteps``, and a frozen
    ``config``.
    """

    def __init__(self, config: ScheduleConfig | None = None) -> None:
        self.config = config or ScheduleConfig()
        # λ(t) = −2 log tan(a t + b): b from λ_max at t = 0, a from λ_min at t = 1 (float64 once)
        self._b = math.atan(math.exp(-0.5 * self.config.logsnr_max))
        self._a = math.atan(math.exp(-0.5 * self.config.logsnr_min)) - self._b
        self.timesteps: torch.Tensor | None = None

    # --- the forward process -----------------------------------------------------------
    def base_logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """λ(t), shape of ``t``."""
        t64 = t.to(torch.float64)
        return (-2.0 * torch.log(torch.tan(self._a * t64 + self._b))).to(t.dtype)

    def logsnr(self, t: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """λ_j(t | d) [..., D] from t [...] and shift z broadcastable to [..., D]."""
        return self.base_logsnr(t)[..., None] + self.config.gamma * shift

    @staticmethod
    def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """α = √sigmoid(λ), σ = √sigmoid(−λ)."""
        return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, *, shift: torch.Tensor) -> torch.Tensor:
        """x_t = α x₀ + σ ε, per dimension."""
        alpha, sigma = self.alpha_sigma(self.logsnr(t, shift))
        return alpha * x0 + sigma * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, *, shift: torch.Tensor) -> torch.Tensor:
        """The v-prediction target v = α ε − σ x₀."""
        alpha, sigma = self.alpha_sigma(self.logsnr(t, shift))
        return alpha * noise - sigma * x0

    # --- sampling ----------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int) -> None:
        """Times 1 = t₀ > t₁ > … > t_n = 0, uniform in t (the cosine spends them evenly in λ)."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be ≥ 1, got {num_inference_steps}")
        self.timesteps = torch.linspace(1.0, 0.0, num_inference_steps + 1)

    def step(self, model_output: torch.Tensor, t: float, x_t: torch.Tensor, *, shift: torch.Tensor,
             clip: torch.Tensor | None = None, eta: float = 0.0,
             generator: torch.Generator | None = None) -> StepOutput:
        """One DDIM step (Song et al. 2021, Eq. 12 with η = 0).

        1. x̂₀ is the model output (``prediction="x0"``) or α_t x_t − σ_t v̂ (``"v"``,
           Salimans & Ho 2022, App. D);
        2. x̂₀ is clipped to ±``clip`` per dimension (±1 for analog bits), ε̂ re-derived;
        3. x_s = α_s x̂₀ + σ_s ε̂ at the next time s.

        Raises
        ------
        RuntimeError
            Called before :meth:`set_timesteps`.
        ValueError
            ``t`` is not one of ``timesteps`` (or is the last one).
        """
        if self.timesteps is None:
            raise RuntimeError("call set_timesteps() before step()")
        matches = torch.nonzero(torch.isclose(self.timesteps[:-1], torch.tensor(float(t)), atol=1e-7))
        if len(matches) == 0:
            raise ValueError(f"t={t} is not a sampling time of this schedule")
        i = int(matches[0])
        n = x_t.shape[0]
        t_now = self.timesteps[i].expand(n).to(x_t.dtype)
        t_next = self.timesteps[i + 1].expand(n).to(x_t.dtype)
        a_t, s_t = self.alpha_sigma(self.logsnr(t_now, shift))
        pred_x0 = model_output if self.config.prediction == "x0" else a_t * x_t - s_t * model_output
        if clip is not None:
            pred_x0 = torch.maximum(torch.minimum(pred_x0, clip), -clip)
        eps = (x_t - a_t * pred_x0) / s_t.clamp_min(1e-8)
        logsnr_next = self.logsnr(t_next, shift)
        a_s, s_s = self.alpha_sigma(logsnr_next)
        if eta == 0.0:
            return StepOutput(prev_sample=a_s * pred_x0 + s_s * eps, pred_x0=pred_x0)
        # η > 0: fresh noise of variance c² = η² σ_s² (1 − e^{λ_t − λ_s}) (VDM ancestral step at η = 1)
        c2 = (eta**2) * s_s**2 * (-torch.expm1(self.logsnr(t_now, shift) - logsnr_next)).clamp(0, 1)
        fresh = torch.randn(x_t.shape, generator=generator)
        return StepOutput(prev_sample=a_s * pred_x0 + (s_s**2 - c2).clamp_min(0).sqrt() * eps + c2.sqrt() * fresh,
                          pred_x0=pred_x0)


SCHEDULES: dict[str, type[KnowledgeVPSchedule]] = {"knowledge-vp": KnowledgeVPSchedule}
