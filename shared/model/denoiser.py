"""The knowledge-guided denoiser: predicts the clean patient x̂₀ (or, with
``ScheduleConfig.prediction = "v"``, the velocity v̂) for every dimension of a noisy patient vector.

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
5. persistence: each bit's f also gets κ_c · (e_{t−1,c} + e_{t+1,c}), where e = tanh(α x_t / σ²) is
   the same code's own-evidence posterior in the adjacent windows and κ_c one learned number
   per channel (zero at initialisation). Records persist (a drug is given for months, a
   phenotype is noted at several visits), and without this direct path the network, which
   sees a window's C channels through H < C hidden units, kept each window's rate but placed a
   code in independent windows: pretrained on prior patients whose drugs run about 4
   windows, it gave each drug to twice as many patients in about 2 windows, and the probe
   x̂₀ of a drug's window did not change when the drug was present next to it;
6. the output is x̂₀ with the single-dimension evidence built in. For a ±1 bit whose only
   evidence is its own noisy value, the exact posterior mean is
   tanh(α x_t / σ² + ½ log-odds(prior)); the network supplies the log-odds term f, so it
   learns priors and correlations, not the per-noise-level nonlinearity. For a continuous
   dimension the exact posterior mean under a prior N(f, s²) is
   x̂₀ = (α s² x_t + σ² f) / (α² s² + σ²), which tends to x_t as noise vanishes and to f as it
   grows; s_c is one learned number per window channel, s_c² = exp(2·VARIANCE_SCALE·w_c) with w
   zero at the start (s = 1: x̂₀ = α x_t + σ² f, the form before s was learned), and the static
   pair keeps s = 1. Without s the network had to learn the shrinkage towards f itself, a term
   linear in x_t whose weight changes with the noise level: pretrained for 1000 steps on prior
   patients whose labs have sd 0.50, the model sampled labs with sd 0.84–0.98 (0.52–0.66
   after 4000 steps), further from the real labs than the public N(0, 0.5²) default.
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
    persistence: bool = True  # the per-channel adjacent-window term (module docstring, 5); off in older models
    variance: bool = True  # the learned prior variance of the continuous channels (6); off in older models

    def __post_init__(self) -> None:
        for name in ("windows", "channels", "n_diseases", "hidden", "mix_hidden", "blocks", "fourier"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("persistence", "variance"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DenoiserConfig:
        return cls(**json.loads(text))


LEARNED_SHIFT_BOUND = 3.0  # = the cap of the standardized meta-path score z (kg/metapath.py)
ABSENT_LOGIT = -3.0  # initial half log-odds of a bit: tanh(−3) ≈ −0.995, i.e. ~0.25 % present
#: κ_c = scale × the stored weight: Adam moves a weight by about the learning rate per step, and κ
#: must reach ~1 (half log-odds per adjacent record) within a 1000-step pretraining at 1e-3; at
#: scale 1 it reached 0.23 for drugs, at 8 it reached 0.8 and the persistence came through
PERSISTENCE_SCALE = 8.0
#: log s_c = scale × the stored weight, for the same reason: log s must move by about −0.7 (labs of
#: sd 0.5) early in a 1000-step pretraining
VARIANCE_SCALE = 8.0


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
        # κ as an Embedding of one row (looked up for every patient) so Opacus clips it per patient
        self.persistence = nn.Embedding(1, c) if config.persistence else None
        # log s_c of the continuous channels (6), also one row so it is clipped per patient
        self.log_scale = nn.Embedding(1, c) if config.variance else None
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
        if self.persistence is not None:
            nn.init.zeros_(self.persistence.weight)
        if self.log_scale is not None:
            nn.init.zeros_(self.log_scale.weight)

    @property
    def null_disease(self) -> int:
        return self.config.n_diseases

    def schedule_shift(self, schedule_disease: torch.Tensor) -> torch.Tensor:
        """s_d [N, C]: the per-channel log-SNR shift before γ (see the module docstring)."""
        if self.learned_shift is None:
            return self.prior[schedule_disease]
        s = LEARNED_SHIFT_BOUND * torch.tanh(self.learned_shift(schedule_disease))
        return s - s.mean(dim=1, keepdim=True)

    def sampler(self, *, precision: str = "fp32") -> SamplingNetwork:
        """A snapshot of this network for sampling only (see :class:`SamplingNetwork`)."""
        return SamplingNetwork(self, precision)

    def prior_variance(self, rows: int) -> torch.Tensor:
        """s² [rows, D] of the continuous dimensions' prior (6): windows repeat the channel's, the
        static pair has 1; 1 everywhere without the learned variance (older models)."""
        if self.log_scale is None:
            return self.prior.new_ones(rows, self.config.windows * self.config.channels + 2)
        s2 = torch.exp(2.0 * VARIANCE_SCALE * self.log_scale(self.window_ids[:1].expand(rows)))  # [rows, C]
        return torch.cat([s2.repeat(1, self.config.windows), s2.new_ones(rows, 2)], dim=1)

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
        # per-dimension noise level: windows repeat the channel shift, static dims have none
        lam = logsnr[..., None] + self.dimension_shift(shift)[:, None, :]
        alpha2 = torch.sigmoid(lam)
        sigma2 = torch.sigmoid(-lam)
        evidence = (alpha2.sqrt() * x_t / sigma2.clamp_min(1e-6)).clamp(-30.0, 30.0)
        if self.persistence is not None:  # κ_c (e_{t−1,c} + e_{t+1,c}) on the bits (5)
            own = torch.where(self.binary_dims, torch.tanh(evidence), 0.0)[..., : t_len * c].reshape(n, k, t_len, c)
            pad = torch.nn.functional.pad
            adjacent = pad(own[:, :, :-1], (0, 0, 1, 0)) + pad(own[:, :, 1:], (0, 0, 0, 1))
            kappa = PERSISTENCE_SCALE * self.persistence(self.window_ids[:1].expand(n))  # [N, C], one row
            out_win = out_win + adjacent * kappa[:, None, None, :]
        f = torch.cat([out_win.reshape(n, k, t_len * c), self.static_out(h.mean(dim=2))], dim=2)
        s2 = self.prior_variance(n)[:, None, :]
        continuous = (alpha2.sqrt() * s2 * x_t + sigma2 * f) / (alpha2 * s2 + sigma2)  # (6)
        return torch.where(self.binary_dims, torch.tanh(evidence + f), continuous)


class SamplingNetwork:
    """Inference-only evaluation of a :class:`Denoiser` for the sampler; never for training.

    The same function as :meth:`Denoiser.forward` up to float rounding, rearranged for speed
    on a CPU, where the per-window network is many small, memory-bound operations:

    - the propagation is folded into the first layer:
      window_in([x, x Pᵀ]) = x (W_a + W_b P)ᵀ + b, one product instead of two and a concat;
    - whatever depends only on the condition, the schedule disease and λ(t) (knowledge and
      disease embeddings, time embedding, position, biases, the per-channel prior head, the
      per-dimension noise levels) is computed once per step for the n_diseases + 1 disease
      ids (:meth:`at`), not once per patient; a call evaluates patients of one disease;
    - a patient is kept as windows [n, T, C] and the static pair [n, 2] apart;
    - the bits' tanh(z) is computed as 2 sigmoid(2z) − 1 (several times faster on a CPU),
      the doubled logit 2z coming exactly from a doubled output head;
    - with ``precision="bf16"`` the products and the residual stream run in bfloat16 with
      the weights cast once (the output nonlinearity stays float32).

    The weights are a snapshot: build a new one (:meth:`Denoiser.sampler`) after training.
    """

    def __init__(self, model: Denoiser, precision: str) -> None:
        if precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
        cfg = model.config
        self.windows, self.channels, self.hidden = cfg.windows, cfg.channels, cfg.hidden
        self.n_ids = cfg.n_diseases + 1  # disease ids, the last one the null condition
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        t_len, c, cd = cfg.windows, cfg.channels, self.dtype
        self._model = model
        with torch.no_grad():
            ids = torch.arange(self.n_ids, device=model.prior.device)
            shift = model.gamma * model.schedule_shift(ids)  # [S, C], per schedule disease
            #: λ_j(t | s) − λ(t) per schedule disease s, channels then the static pair (no shift)
            self.shift = torch.cat([shift, shift.new_zeros(self.n_ids, 2)], dim=1)  # [S, C + 2]
            cond = torch.stack([ids, torch.full_like(ids, model.null_disease)])  # [2, S]: conditioned, dropped
            prior = model.prior[cond]  # [2, S, C]
            scale_in = torch.cat([shift, torch.tanh(shift)], dim=1).expand(2, -1, -1)
            knowledge = model.knowledge_in(torch.cat([prior, scale_in], dim=2)) + model.disease(cond)  # [2, S, H]
            self._base = (knowledge[:, :, None, :] + model.position.weight + model.window_in.bias
                          + model.static_in.bias)  # [2, S, T, H]
            self._prior_in = torch.cat([prior[..., None], model.frequency[cond]], dim=3)  # [2, S, C, 3]
            binary = model.binary_dims
            per_window = binary[: t_len * c].reshape(t_len, c)
            if not bool((per_window == per_window[0]).all()):
                raise ValueError("the binary dimensions differ between windows")
            #: a window's continuous channels (a slice when contiguous), the static pair's bits
            cont = torch.nonzero(~per_window[0]).flatten()
            contiguous = len(cont) > 0 and int(cont[-1] - cont[0]) + 1 == len(cont)
            self.continuous = slice(int(cont[0]), int(cont[-1]) + 1) if contiguous else cont
            self.static_binary = binary[t_len * c :].clone()  # [2]
            self._out_scale = torch.where(per_window[0], 2.0, 1.0)  # [C]: the bits' logits doubled

            def low(weight: torch.Tensor) -> torch.Tensor:  # a detached copy in the products' precision
                return weight.detach().to(cd, copy=True)

            w = model.window_in.weight
            self.w_in = low(w[:, :c] + w[:, c:] @ model.propagation_t.T).T  # [C, H]
            self.w_static = model.static_in.weight.detach().T.clone()  # [2, H]
            self.blocks = [(b.norm1.weight.detach(), b.norm1.bias.detach(), low(b.mlp[0].weight).T, low(b.mlp[0].bias),
                            low(b.mlp[2].weight).T, low(b.mlp[2].bias), b.norm2.weight.detach(), b.norm2.bias.detach(),
                            low(b.mix[0].weight).T, low(b.mix[0].bias), low(b.mix[2].weight).T,
                            low(b.mix[2].bias)) for b in model.blocks]
            self.norm = (model.norm.weight.detach(), model.norm.bias.detach())
            self.w_out = low(model.window_out.weight * self._out_scale[:, None]).T  # [H, C]
            self.static_out = (model.static_out.weight.detach(), model.static_out.bias.detach())
            #: κ per channel in the head's scale (bits doubled), 0 on the continuous channels; None without
            self.kappa = None if model.persistence is None else torch.where(
                per_window[0], PERSISTENCE_SCALE * model.persistence.weight.detach()[0] * self._out_scale, 0.0)
            #: s² of the continuous dimensions [C + 2] (windows' channels, then the static pair's 1s)
            s2 = model.prior_variance(1)[0].detach()
            self.variance = torch.cat([s2[:c], s2[t_len * c:]])

    def at(self, logsnr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything that depends on λ(t) (a 0-dim or [1] float32 tensor) but not on x_t."""
        model, c = self._model, self.channels
        with torch.no_grad():
            lam = logsnr.reshape(())
            angles = (lam / 4.0) * model.freqs
            time = model.time_in(torch.cat([angles.sin(), angles.cos()]))  # [H]
            lam_d = lam + self.shift  # [S, C + 2]
            lam_c = (lam_d[:, :c] / 10.0)[None, :, :, None].expand(2, -1, -1, 1)
            channel = model.channel_prior(torch.cat([self._prior_in, lam_c], dim=3))[..., 0]  # [2, S, C]
            alpha2, sigma2 = torch.sigmoid(lam_d), torch.sigmoid(-lam_d)
            alpha = alpha2.sqrt()
            gain = alpha / sigma2.clamp_min(1e-6)
            # continuous: x̂₀ = a x + b f, a = α s² / (α² s² + σ²), b = σ² / (α² s² + σ²)
            denominator = alpha2 * self.variance + sigma2
            return {"bias": (self._base + time).to(self.dtype),  # [2, S, T, H]
                    "f_bias": ((channel + model.window_out.bias) * self._out_scale).to(self.dtype),  # [2, S, C]
                    "cont_x": alpha * self.variance / denominator, "cont_f": sigma2 / denominator,  # [S, C + 2]
                    "gain": gain, "gain2": 2.0 * gain[:, :c]}  # [S, C + 2], [S, C]

    def __call__(self, step: dict[str, torch.Tensor], x_win: torch.Tensor, x_static: torch.Tensor, disease: int,
                 *, dropped: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x̂₀ of patients of one schedule disease: windows [n, T, C] and static [n, 2] (float32).

        ``dropped`` evaluates the null condition (classifier-free guidance) under the same
        schedule disease.
        """
        n = x_win.shape[0]
        t_len, c, hid, cd = self.windows, self.channels, self.hidden, self.dtype
        which = 1 if dropped else 0
        nn_f = torch.nn.functional
        h = torch.mm(x_win.reshape(n * t_len, c).to(cd), self.w_in).reshape(n, t_len, hid)
        h += step["bias"][which, disease]
        h += (x_static @ self.w_static).to(cd)[:, None, :]
        for ln1_w, ln1_b, w1, b1, w2, b2, ln2_w, ln2_b, m1, mb1, m2, mb2 in self.blocks:
            u = nn_f.silu(torch.addmm(b1, nn_f.layer_norm(h, (hid,), ln1_w, ln1_b).reshape(-1, hid), w1), inplace=True)
            h += torch.addmm(b2, u, w2).reshape(n, t_len, hid)
            u = nn_f.layer_norm(h, (hid,), ln2_w, ln2_b).reshape(n, t_len * hid)
            u = nn_f.silu(torch.addmm(mb1, u, m1), inplace=True)
            h += torch.addmm(mb2, u, m2).reshape(n, t_len, hid)
        last = nn_f.layer_norm(h, (hid,), *self.norm)
        f = torch.addmm(step["f_bias"][which, disease], last.reshape(n * t_len, hid), self.w_out).reshape(n, t_len, c)
        f_static = nn_f.linear(last.mean(dim=1, dtype=torch.float32), *self.static_out)  # [n, 2]
        cont_x, cont_f, gain = step["cont_x"][disease], step["cont_f"][disease], step["gain"][disease]
        if self.kappa is not None:  # κ_c (e_{t−1,c} + e_{t+1,c}), e = tanh(clamp(α x / σ²))
            own = (x_win * gain[:c]).clamp_(-30.0, 30.0).tanh_().mul_(self.kappa)
            f = f.float()
            f[:, 1:] += own[:, :-1]
            f[:, :-1] += own[:, 1:]
        # bits: tanh(clamp(α x / σ², ±30) + f) = 2 sigmoid(2·clamp(…) + 2f) − 1, with 2f from the
        # doubled head and every doubling exact; continuous: a x + b f (6)
        out = torch.mul(x_win, step["gain2"][disease])
        out.clamp_(-60.0, 60.0).add_(f).sigmoid_().mul_(2.0).sub_(1.0)
        cont = self.continuous
        out[:, :, cont] = torch.addcmul(x_win[:, :, cont] * cont_x[:c][cont], cont_f[:c][cont], f[:, :, cont])
        ev = (x_static * gain[c:]).clamp_(-30.0, 30.0).add_(f_static).tanh_()
        out_static = torch.where(self.static_binary, ev, torch.addcmul(x_static * cont_x[c:], cont_f[c:], f_static))
        return out, out_static
