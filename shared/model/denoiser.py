"""The knowledge-guided denoiser: predicts v for every dimension of a noisy patient vector.

Only layers Opacus can clip per sample: Linear, LayerNorm, Embedding (no BatchNorm); the
knowledge enters through fixed buffers (no parameters), so DP-SGD needs no custom grad
sampler.

The per-feature log-SNR shift of disease d, s_d [C] (λ_j(t | d) = λ(t) + γ·s_{d,c(j)}), is
:meth:`Denoiser.schedule_shift`: the standardized meta-path score z_d with guidance "kg",
zero with "none", and with "learned" (the fair ablation: no graph at all) a trained
Embedding(d) → [C], bounded and centred like z: s_d = b·tanh(e_d) − mean_c(b·tanh(e_d)),
b = :data:`LEARNED_SHIFT_BOUND`, zero at initialisation (so training starts from plain
diffusion). The learned shift gets its gradient through the noising x_t = α x₀ + σ ε as well
as through the network, as a learned schedule does (Kingma et al. 2021, Sec. 3.4); being
centred, it can only move noise between features, never make every feature cleaner.

Per patient (N patients, T windows, C channels, H hidden):

1. windows x_t → [N, T, C]; the propagation step over the bundle's feature graph adds
   each channel's neighbourhood mean, x_t·Pᵀ; both go through one shared Linear(2C → H);
2. per patient, once: Linear(3C → H) of the prior z_d, the schedule shift γ·z_d and the
   sign of the shift of each channel's per-feature log-SNR (what the network must know to
   undo a per-feature noise level), plus embeddings of the disease (null token for
   classifier-free guidance), of the time (Fourier features of λ(t)) and of sex/age;
3. residual blocks: a per-window MLP and a mixing MLP across all windows, each with
   LayerNorm in front;
4. heads: Linear(H → C) per window and Linear(H → 2) for the static pair give f, plus a small
   MLP shared by every channel, g(z_{d,c}, logit f_{d,c}, annotated, λ_c(t)), added to each channel's output: the
   mapping from public score and annotated frequency to signal is learned once for all
   features, so a disease seen in few patients still gets its prior (with guidance "none", z = 0 and g depends
   on time only);
5. the output is x̂₀ with the single-dimension evidence built in. For a ±1 bit whose only
   evidence is its own noisy value, the exact posterior mean is
   tanh(α x_t / σ² + ½ log-odds(prior)); the network supplies the log-odds term f, so it
   learns priors and correlations, not the per-noise-level nonlinearity. For a continuous
   dimension, x̂₀ = α x_t + σ² f, which tends to x_t as noise vanishes and to f as it grows.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from shared.model.layout import ModelLayout


@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture; saved with every checkpoint. Widths trade quality for speed."""

    windows: int
    channels: int
    n_diseases: int
    hidden: int = 128  # per-window width H
    mix_hidden: int = 256  # bottleneck of the cross-window MLP
    blocks: int = 2  # residual (window MLP + mixing MLP) pairs
    fourier: int = 16  # Fourier features of λ(t)

    def __post_init__(self) -> None:
        for name in ("windows", "channels", "n_diseases", "hidden", "mix_hidden", "blocks", "fourier"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DenoiserConfig:
        return cls(**json.loads(text))


LEARNED_SHIFT_BOUND = 3.0  # = the cap of the standardized meta-path score z (kg/metapath.py)
ABSENT_LOGIT = -3.0  # initial half log-odds of a bit: tanh(−3) ≈ −0.995, i.e. ~0.25 % present


class _Block(nn.Module):
    def __init__(self, windows: int, hidden: int, mix_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
        self.norm2 = nn.LayerNorm(hidden)
        self.mix = nn.Sequential(nn.Linear(windows * hidden, mix_hidden), nn.SiLU(),
                                 nn.Linear(mix_hidden, windows * hidden))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h [N, K, T, H]."""
        n, draws, t, k = h.shape
        h = h + self.mlp(self.norm1(h))
        return h + self.mix(self.norm2(h).reshape(n, draws, t * k)).reshape(n, draws, t, k)


class Denoiser(nn.Module):
    """v̂ = f(x_t, λ(t), disease) with the bundle's knowledge as buffers."""

    def __init__(self, config: DenoiserConfig, layout: ModelLayout, *, gamma: float) -> None:
        """Build the network; ``gamma`` must equal the schedule's γ (the noise levels it sees)."""
        super().__init__()
        if (layout.windows, layout.channels, layout.n_diseases) != (config.windows, config.channels, config.n_diseases):
            raise ValueError("denoiser config does not match the bundle layout (windows, channels, diseases)")
        self.config = config
        self.gamma = gamma
        c, h = config.channels, config.hidden
        self.register_buffer("propagation_t", torch.from_numpy(layout.propagation.T.copy()))
        null = torch.zeros(1, c)
        self.register_buffer("prior", torch.cat([torch.from_numpy(layout.prior), null]))
        self.register_buffer("frequency", torch.cat([torch.from_numpy(layout.frequency), torch.zeros(1, c, 2)]))
        self.register_buffer("freqs", torch.arange(1, config.fourier + 1, dtype=torch.float32) * math.pi / 16.0)
        self.register_buffer("window_ids", torch.arange(config.windows))
        binary = torch.from_numpy(layout.binary_dims())
        self.register_buffer("binary_dims", binary)
        self.window_in = nn.Linear(2 * c, h)
        self.knowledge_in = nn.Linear(3 * c, h)
        self.time_in = nn.Linear(2 * config.fourier, h)
        self.static_in = nn.Linear(2, h)
        self.disease = nn.Embedding(config.n_diseases + 1, h)  # last row: no condition (CFG)
        self.position = nn.Embedding(config.windows, h)
        self.blocks = nn.ModuleList(_Block(config.windows, h, config.mix_hidden) for _ in range(config.blocks))
        self.norm = nn.LayerNorm(h)
        self.window_out = nn.Linear(h, c)
        self.static_out = nn.Linear(h, 2)
        self.channel_prior = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 1))
        self.learned_shift = nn.Embedding(config.n_diseases + 1, c) if layout.guidance == "learned" else None
        self._init_heads(layout)

    def _init_heads(self, layout: ModelLayout) -> None:
        """Zero-initialised heads, bits biased to 'absent': an untrained model predicts an
        empty record (events are rare) instead of noise, which matters most under DP-SGD,
        where few and noisy steps must move it (zero-init output layers, as in Nichol &
        Dhariwal 2021)."""
        nn.init.zeros_(self.window_out.weight)
        nn.init.zeros_(self.static_out.weight)
        nn.init.zeros_(self.static_out.bias)
        nn.init.zeros_(self.channel_prior[-1].weight)
        nn.init.zeros_(self.channel_prior[-1].bias)
        bias = torch.zeros(self.config.channels)
        bias[: layout.binary] = ABSENT_LOGIT  # events
        bias[layout.binary + layout.labs :] = ABSENT_LOGIT  # lab measured-masks
        with torch.no_grad():
            self.window_out.bias.copy_(bias)
        if self.learned_shift is not None:
            nn.init.zeros_(self.learned_shift.weight)

    @property
    def null_disease(self) -> int:
        return self.config.n_diseases

    def schedule_shift(self, schedule_disease: torch.Tensor) -> torch.Tensor:
        """s_d [N, C]: the per-channel log-SNR shift before γ (see the module docstring)."""
        if self.learned_shift is None:
            return self.prior[schedule_disease]
        s = LEARNED_SHIFT_BOUND * torch.tanh(self.learned_shift(schedule_disease))
        return s - s.mean(dim=1, keepdim=True)

    def dimension_shift(self, shift: torch.Tensor) -> torch.Tensor:
        """[N, C] per-channel shift → [N, D]: windows repeat it, the static pair has none."""
        return torch.cat([shift.repeat(1, self.config.windows), shift.new_zeros(shift.shape[0], 2)], dim=1)

    def forward(self, x_t: torch.Tensor, logsnr: torch.Tensor, disease: torch.Tensor,
                schedule_disease: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Predict x̂₀.

        Parameters
        ----------
        x_t
            [N, D] noisy vectors, or [N, K, D]: K noise draws per patient (noise
            multiplicity). The patient stays the leading dimension, so Opacus computes one
            gradient per patient, never per draw.
        logsnr
            [N] or [N, K]: base λ(t) (the per-feature shift is added from ``schedule_disease``).
        disease
            [N] int64: the condition, or :attr:`null_disease` when dropped (CFG).
        schedule_disease
            [N] int64: the disease whose schedule noised x_t (always known: the noise
            levels are part of the process, not the condition).
        shift
            [N, C]: :meth:`schedule_shift` of ``schedule_disease`` when the caller already
            computed it to noise x_t (training: a learned shift must be computed once per
            step, or per-patient clipping would see its layer twice); None computes it.
        """
        if shift is None:
            shift = self.schedule_shift(schedule_disease)
        if x_t.dim() == 2:
            return self._forward(x_t[:, None], logsnr[:, None], disease, shift)[:, 0]
        return self._forward(x_t, logsnr, disease, shift)

    def _forward(self, x_t: torch.Tensor, logsnr: torch.Tensor, disease: torch.Tensor,
                 schedule_shift: torch.Tensor) -> torch.Tensor:
        n, k = x_t.shape[:2]
        cfg = self.config
        t_len, c = cfg.windows, cfg.channels
        win = x_t[..., : t_len * c].reshape(n, k, t_len, c)
        h = self.window_in(torch.cat([win, win @ self.propagation_t], dim=3))  # [N, K, T, H]
        shift = self.gamma * schedule_shift  # [N, C]
        prior = self.prior[disease]
        knowledge = self.knowledge_in(torch.cat([prior, shift, torch.tanh(shift)], dim=1))  # [N, H]
        angles = (logsnr / 4.0)[..., None] * self.freqs
        per_draw = (self.time_in(torch.cat([angles.sin(), angles.cos()], dim=2)) + self.static_in(x_t[..., -2:]))
        per_patient = knowledge + self.disease(disease)
        h = h + (per_draw + per_patient[:, None, :])[:, :, None, :] + self.position(self.window_ids.expand(n, -1))[:, None]
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        # per-channel prior head on (z_{d,c}, logit f_{d,c}, annotated, λ_c(t)/10), shared by all
        # channels and windows; the frequency is dropped with the condition like z
        lam_c = logsnr[..., None] + shift[:, None, :]  # [N, K, C]
        freq = self.frequency[disease][:, None, :, :].expand(n, k, c, 2)
        prior_in = torch.cat([prior[:, None, :, None].expand(n, k, c, 1), freq, lam_c[..., None] / 10.0], dim=3)
        out_win = self.window_out(h) + self.channel_prior(prior_in).reshape(n, k, 1, c)
        f = torch.cat([out_win.reshape(n, k, t_len * c), self.static_out(h.mean(dim=2))], dim=2)
        # per-dimension noise level: windows repeat the channel shift, static dims have none
        lam = logsnr[..., None] + self.dimension_shift(shift)[:, None, :]
        alpha2 = torch.sigmoid(lam)
        sigma2 = torch.sigmoid(-lam)
        evidence = (alpha2.sqrt() * x_t / sigma2.clamp_min(1e-6)).clamp(-30.0, 30.0)
        return torch.where(self.binary_dims, torch.tanh(evidence + f), alpha2.sqrt() * x_t + sigma2 * f)
