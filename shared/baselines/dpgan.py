"""DP-GAN baseline: a conditional GAN over the flat patient vector, DP-SGD on the
discriminator, FedAvg across sites. No knowledge-graph input at all.

Model
-----
The patient vector x₀ [D] of ``ModelLayout.from_bundle(bundle, guidance="none")``.
Generator (:class:`Generator`): disease embedding ⊕ z ~ N(0, I) → MLP → h [D]; bits (events,
lab masks, sex) are ±1 draws with P(+1) = (1 + tanh h) / 2 and the straight-through gradient
of tanh h, labs and age are clip · tanh(h / clip) with the layout's clip, and a lab value is 0
where its mask bit is −1 (as in real vectors), so the discriminator cannot tell fakes by
values real patients never have. Discriminator (:class:`Discriminator`): one Linear shared by
the T windows, then a small MLP head with the disease embedding; only Linear and Embedding
layers (LeakyReLU between), so :mod:`shared.privacy.clipping` clips it per patient. Its few
parameters (≈4.7 k) matter: the DP noise has one coordinate per parameter. Loss: the
non-saturating logistic GAN loss; no gradient penalty (it does not mix with per-sample
clipping), no feature matching (it would need real-data statistics outside the mechanism).

Why it is DP (add/remove-one patient at one site)
-------------------------------------------------
Each discriminator step draws a Poisson batch of real patients (rate q) from
:func:`shared.privacy.dp_sgd.make_private`. Every sampled patient i is paired with one fresh fake
f_i = G(z_i, d_i) (detached) and contributes the one loss

    ℓ_i = softplus(−D(x_i, d_i)) + softplus(D(f_i, d_i)),

computed in one forward over [N, 2, D] (position 0 the real row, 1 its fake). ℓ_i depends on
no other patient, so its gradient is clipped to norm ≤ C as one unit and the clipped sum gets
N(0, σ²C²) noise. The fakes' randomness (z, and the uniforms that draw the bits) is fresh,
independent of the data and unpredictable (below), so handing the k-th draw to the k-th
sampled patient is distributed exactly as giving every record its own draw each step. For
every fixed draw per record, adding or removing patient i changes the sum by one clipped
vector: the sampled Gaussian mechanism, with the usual (σ, q, steps) accounting; a mixture
over the draws keeps the bound (Rényi divergence is jointly quasi-convex). The number of
fakes equals the Poisson batch size, but it reaches the output only through this sum. Empty
batches still take the noisy step.

The generator never sees a patient: its steps use the current discriminator (a DP output),
a fixed number of conditions drawn uniformly over the study's diseases (public) and fresh
noise, so they are post-processing, any number of them; so is averaging weights (FedAvg).
Each site calibrates σ once for its whole participation (rounds × local steps at its q) with
:func:`shared.privacy.budget.calibrate_noise`; :attr:`DPGAN.sites` records the ε the
accountant gives back. FedAvg weights by the patient counts the sites report, as the
project's federation does (the counts themselves are not protected).

Randomness: ``seed`` sets the initial weights (public, before any data) and, without DP,
everything else, so a run without DP repeats. With DP, the Poisson sampling, the noise, the
fakes and the generator's draws all come from ``generator``: OS entropy when it is None (as
:func:`~shared.privacy.dp_sgd.make_private` does), as a deployment needs; a seeded one repeats the
run for tests and benchmarks, and whoever knows its seed can undo the guarantee (subtract the
noise, or see which patient a shifted fake belongs to).
"""

from __future__ import annotations

import copy
import functools
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.bundle import StudyBundle
from shared.privacy.dp_sgd import Mechanism, make_private
from shared.privacy.dp_sgd import backward as private_backward
from shared.ehr.cohort import SYNTHETIC_ID_BASE
from shared.model.generation import INDEX_WINDOW
from shared.model.layout import ModelLayout
from shared.privacy.budget import calibrate_noise, epsilon_for
from shared.privacy.settings import DEFAULT_CLIP_NORM
from shared.trajectories.tensorize import TensorLayout
from shared.model.training import shuffled_batches
from shared.trajectories.tensors import TrajectoryTensors

#: Per-patient clip norm C of the discriminator gradient. The discriminator's per-patient
#: gradient norm on a simulated site has median 1.9 at initialisation and 1.5–2.7 during
#: training, so C = 0.1 clips every patient; with Adam that only normalises the gradients. At
#: ε = 4 (3 sites, 5 × 60 steps, 3 seeds) C = 0.1 gave MMD²_u 1.70 and prevalence R² −73 on
#: average, C = 1 1.84 and −124, C = 10 2.61 and −609: the project's default fits.
GAN_CLIP_NORM = DEFAULT_CLIP_NORM
NOISE_DIM = 64  # generator input noise
EMBED_DIM = 16  # disease embedding, generator and discriminator
WINDOW_CODE = 8  # discriminator features per window
LEAK = 0.2  # LeakyReLU slope
ADAM_BETAS = (0.5, 0.9)  # the usual GAN momentum


class Generator(nn.Module):
    """(z, u, disease) → patient vector [N, D] in the layout's value set.

    Bits (events, lab masks, sex) are ±1 draws with P(+1) = (1 + tanh h) / 2, decided by the
    uniforms u, with the straight-through gradient of tanh h; labs and age are clip·tanh(h / clip);
    a lab value is 0 where its mask bit is −1, as in real vectors.
    """

    def __init__(self, layout: ModelLayout, *, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(layout.n_diseases, EMBED_DIM)
        self.net = nn.Sequential(nn.Linear(NOISE_DIM + EMBED_DIM, hidden), nn.LeakyReLU(LEAK),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(LEAK), nn.Linear(hidden, layout.dim))
        self.register_buffer("clip", torch.from_numpy(layout.clip), persistent=False)
        self.register_buffer("is_bit", torch.from_numpy(layout.binary_dims()), persistent=False)
        channel = torch.arange(layout.windows * layout.channels) % layout.channels
        is_lab = (channel >= layout.binary) & (channel < layout.binary + layout.labs)
        lab_dims = torch.nonzero(is_lab).squeeze(1)
        self.register_buffer("lab_dims", lab_dims, persistent=False)
        self.register_buffer("mask_dims", lab_dims + layout.labs, persistent=False)

    def forward(self, noise: torch.Tensor, uniform: torch.Tensor, disease: torch.Tensor) -> torch.Tensor:
        h = self.net(torch.cat([noise, self.embed(disease)], dim=-1))
        soft = self.clip * torch.tanh(h / self.clip)  # the clip is 1 on bits
        hard = torch.where(uniform < (1 + soft) / 2, 1.0, -1.0)
        x = torch.where(self.is_bit, hard + (soft - soft.detach()), soft)  # exactly ±1 forward
        measured = (x[:, self.mask_dims] + 1) / 2
        return x.index_copy(1, self.lab_dims, x[:, self.lab_dims] * measured)

    def draw(self, disease: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One fake patient per entry of ``disease``."""
        n, dim = disease.shape[0], self.clip.shape[0]
        noise = torch.randn((n, NOISE_DIM), generator=generator)
        return self(noise, torch.rand((n, dim), generator=generator), disease)


class Discriminator(nn.Module):
    """(x [N, S, D], disease [N, S]) → logits [N, S]; batch-first, each layer called once.

    One Linear shared by the T windows reads each window's C channels (few parameters, so
    little DP noise; its gradient pools every window's evidence), the window codes are
    concatenated in time order with sex, age and the disease embedding, and an MLP head
    gives the logit.
    """

    def __init__(self, layout: ModelLayout, *, hidden: int) -> None:
        super().__init__()
        self.windows, self.channels = layout.windows, layout.channels
        self.window = nn.Linear(layout.channels, WINDOW_CODE)
        self.embed = nn.Embedding(layout.n_diseases, EMBED_DIM)
        self.head = nn.Sequential(nn.Linear(layout.windows * WINDOW_CODE + 2 + EMBED_DIM, hidden),
                                  nn.LeakyReLU(LEAK), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, disease: torch.Tensor) -> torch.Tensor:
        split = self.windows * self.channels
        windows = x[..., :split].unflatten(-1, (self.windows, self.channels))
        codes = F.leaky_relu(self.window(windows), LEAK).flatten(-2)
        return self.head(torch.cat([codes, x[..., split:], self.embed(disease)], dim=-1)).squeeze(-1)


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, disease: torch.Tensor) -> torch.Tensor:
    """ℓ_i = softplus(−D(x_i)) + softplus(D(f_i)) per real patient [N]: the DP unit (module docstring)."""
    pair = torch.stack([real, fake], dim=1)  # [N, 2, D]
    logits = disc(pair, disease[:, None].expand(-1, 2))
    return F.softplus(-logits[:, 0]) + F.softplus(logits[:, 1])


def generator_loss(gen: Generator, disc: Callable[..., torch.Tensor], disease: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """Non-saturating generator loss, mean of softplus(−D(G(z, d))) over the batch."""
    fake = gen.draw(disease, generator)
    return F.softplus(-disc(fake[:, None], disease[:, None])).mean()


@dataclass(frozen=True)
class SitePrivacy:
    """What one site ran; ``noise_multiplier``, ``epsilon`` and ``delta`` are None without DP."""

    patients: int
    sample_rate: float  # q = min(1, batch_size / patients)
    steps: int  # discriminator steps over the whole run (rounds × local steps)
    clip_norm: float
    noise_multiplier: float | None  # σ from calibrate_noise
    epsilon: float | None  # ε the accountant gives for (σ, q, steps) at delta
    delta: float | None


@dataclass
class DPGAN:
    """The trained generator and what it cost each site."""

    generator: Generator
    layout: ModelLayout
    tensor_layout: TensorLayout
    sites: list[SitePrivacy]

    name = "dpgan"  # not a field: the generator's name (:class:`~shared.baselines.base.SyntheticGenerator`)

    @torch.no_grad()
    def sample(self, conditions: np.ndarray, *, seed: int) -> TrajectoryTensors:
        """One synthetic patient per disease index in ``conditions``, with synthetic person ids
        from ``SYNTHETIC_ID_BASE`` and index dates uniform in ``INDEX_WINDOW``
        (:mod:`shared.model.generation`). The same seed gives the same patients
        (:meth:`shared.baselines.base.SyntheticGenerator.sample`).

        Raises
        ------
        ValueError
            No conditions, or one that is not a disease index of the bundle.
        """
        conditions = np.array(conditions, dtype=np.int64)  # a writable copy
        n = len(conditions)
        if n < 1 or conditions.min() < 0 or conditions.max() >= self.layout.n_diseases:
            raise ValueError(f"conditions must be one or more disease indices in [0, {self.layout.n_diseases})")
        x = self.generator.draw(torch.from_numpy(conditions), torch.Generator().manual_seed(seed))
        span = int((INDEX_WINDOW[1] - INDEX_WINDOW[0]).astype(int))
        index = INDEX_WINDOW[0] + np.random.default_rng(seed).integers(0, span + 1, size=n).astype("timedelta64[D]")
        return self.layout.from_vectors(x, disease=conditions, person_id=SYNTHETIC_ID_BASE + np.arange(n),
                                        index_date=index, like=self.tensor_layout)


def fedavg(states: Sequence[dict[str, torch.Tensor]], counts: Sequence[int]) -> dict[str, torch.Tensor]:
    """Σ_k n_k θ_k / Σ_k n_k for every tensor of the sites' state dicts (n_k: patients).

    Raises
    ------
    ValueError
        No states, or not one positive count per state.
    """
    if not states or len(states) != len(counts) or min(counts) < 1:
        raise ValueError("need one positive patient count per site state")
    total = float(sum(counts))
    return {name: sum(s[name].double() * (n / total) for s, n in zip(states, counts)).to(states[0][name].dtype)
            for name in states[0]}


def _local_round(gen: Generator, disc: Discriminator, x0: torch.Tensor, disease: torch.Tensor, *, steps: int,
                 batch_size: int, lr: float, generator_steps: int, mechanism: Mechanism | None,
                 rng: torch.Generator) -> None:
    """Train ``gen`` and ``disc`` in place for one round at one site: ``steps`` discriminator
    steps (DP-SGD under ``mechanism``, plain without), each followed by ``generator_steps``
    generator steps, every draw from ``rng``. Fresh Adam states every round, as FedAvg averages
    weights only."""
    d_opt = torch.optim.Adam(disc.parameters(), lr=lr, betas=ADAM_BETAS)
    g_opt = torch.optim.Adam(gen.parameters(), lr=lr, betas=ADAM_BETAS)
    # the generator reads the discriminator's current weights through a twin made before the
    # wrapping: its forwards must not reach the per-patient clipping hooks (one call per step)
    twin = copy.deepcopy(disc)
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    if mechanism is None:
        net, batches = disc, shuffled_batches(x0, disease, batch_size=batch_size, generator=rng)
    else:
        net, d_opt, batches = make_private(disc, d_opt, x0, disease, mechanism=mechanism, generator=rng)
    g_params = list(gen.parameters())
    for _ in range(steps):
        real, real_disease = next(batches)
        with torch.no_grad():
            fake = gen.draw(real_disease, rng)
        d_opt.zero_grad(set_to_none=True)
        per_patient = discriminator_loss(net, real, fake, real_disease)
        if mechanism is None:
            per_patient.mean().backward()
        else:
            private_backward(net, per_patient)
        d_opt.step()
        critic = functools.partial(_call_with, twin, {k: p.detach() for k, p in disc.named_parameters()})
        for _ in range(generator_steps):
            conditions = torch.randint(0, disc.embed.num_embeddings, (batch_size,), generator=rng)  # public
            grads = torch.autograd.grad(generator_loss(gen, critic, conditions, rng), g_params)
            for p, g in zip(g_params, grads):
                p.grad = g
            g_opt.step()


def _call_with(module: nn.Module, weights: dict[str, torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    return torch.func.functional_call(module, weights, args)


def plan_sites(sites: Sequence[TrajectoryTensors], *, epsilon: float | None, delta: float, steps: int,
               batch_size: int, clip_norm: float, accountant: str = "rdp",
               noise_multipliers: Sequence[float] | None = None) -> list[SitePrivacy]:
    """Each site's mechanism for ``steps`` discriminator steps at q = min(1, batch_size / n):
    σ from :func:`~shared.privacy.budget.calibrate_noise` for the whole run (or the site's
    entry of ``noise_multipliers``, calibrated by the caller against what the site's persistent
    privacy state has left), and the ε the accountant gives for it alone (≤ ``epsilon``).
    ``epsilon=None``: no DP.

    Raises
    ------
    ValueError
        ``noise_multipliers`` not one positive number per site.
    """
    if epsilon is not None and noise_multipliers is not None and (
            len(noise_multipliers) != len(sites) or not all(np.isfinite(s) and s > 0 for s in noise_multipliers)):
        raise ValueError(f"noise_multipliers must be one positive number per site ({len(sites)}), "
                         f"got {list(noise_multipliers)!r}")
    plans = []
    for k, s in enumerate(sites):
        q = min(1.0, batch_size / s.n)
        sigma = spent = None
        if epsilon is not None:
            sigma = (float(noise_multipliers[k]) if noise_multipliers is not None else
                     calibrate_noise(epsilon=epsilon, delta=delta, sample_rate=q, steps=steps, accountant=accountant))
            spent = epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta, accountant=accountant)
        plans.append(SitePrivacy(patients=s.n, sample_rate=q, steps=steps, clip_norm=clip_norm,
                                 noise_multiplier=sigma, epsilon=spent, delta=None if epsilon is None else delta))
    return plans


def train_federated(sites: list[TrajectoryTensors], bundle: StudyBundle, *, epsilon: float | None,
                    delta: float = 1e-5, rounds: int = 5, local_steps: int = 60, batch_size: int = 32,
                    clip_norm: float = GAN_CLIP_NORM, lr: float = 3e-3, generator_width: int = 128,
                    discriminator_width: int = 32, generator_steps: int = 1, seed: int = 0,
                    generator: torch.Generator | None = None, accountant: str = "rdp",
                    noise_multipliers: Sequence[float] | None = None) -> DPGAN:
    """Train the conditional GAN with FedAvg over ``sites``, DP-SGD on the discriminator.

    Each round every site starts from the global generator and discriminator, runs
    ``local_steps`` discriminator steps (one Poisson batch each, see the module docstring)
    with ``generator_steps`` generator steps after each, and returns both networks; the new
    global weights are their patient-count-weighted mean (:func:`fedavg`).

    Parameters
    ----------
    sites
        Each site's tensors, in the bundle's layout.
    bundle
        The study bundle (only its layout is used: no knowledge input).
    epsilon
        Each site's ε for the whole run (:func:`plan_sites`); None trains without DP on
        shuffled batches, same steps.
    delta
        Each site's δ.
    rounds, local_steps
        FedAvg rounds, discriminator steps per site and round.
    batch_size
        Expected real patients per discriminator step (and fakes per generator step).
    clip_norm
        Per-patient clip norm C of the discriminator gradient (:data:`GAN_CLIP_NORM`).
    lr
        Adam learning rate of both networks (β = 0.5, 0.9). 3e-3: at 1e-3 (and below) the
        generator's bits were still far too frequent after 5 × 60 steps; 1e-2 was unstable.
    generator_width, discriminator_width
        Hidden width of the generator MLP (two layers) and of the discriminator's head.
    generator_steps
        Generator steps per discriminator step (free in privacy; 3 collapsed in a trial).
    seed
        Initial weights; without DP also the batches, fakes and generator draws, so such a
        run repeats exactly.
    generator
        With DP: the source of the Poisson sampling, the noise, the fakes and the generator's
        draws, used by the sites in turn. Leave it None in a deployment (seeded from OS
        entropy); a seeded one repeats the run and is for tests and benchmarks only.
    accountant
        ``"rdp"`` or ``"prv"``.
    noise_multipliers
        Each site's σ when the caller calibrated it (a site's persistent privacy state, against
        what is left of its budget: :mod:`shared.baselines.site_charge`); None: calibrated here
        for the whole run at ``epsilon`` (:func:`plan_sites`).

    Raises
    ------
    ValueError
        No sites, a site without patients, a count below 1, or ``noise_multipliers`` not one
        positive number per site.
    ConfigError
        ε too small for the run (from :func:`~shared.privacy.budget.calibrate_noise`).
    """
    if not sites or min(s.n for s in sites) < 1:
        raise ValueError("need at least one site, each with patients")
    if min(rounds, local_steps, batch_size, generator_steps) < 1:
        raise ValueError("rounds, local_steps, batch_size and generator_steps must be ≥ 1")
    layout = ModelLayout.from_bundle(bundle, guidance="none")
    plans = plan_sites(sites, epsilon=epsilon, delta=delta, steps=rounds * local_steps, batch_size=batch_size,
                       clip_norm=clip_norm, accountant=accountant, noise_multipliers=noise_multipliers)
    mechanisms = [None if p.noise_multiplier is None else
                  Mechanism(noise_multiplier=p.noise_multiplier, clip_norm=clip_norm, sample_rate=p.sample_rate)
                  for p in plans]
    torch.manual_seed(seed)
    gen = Generator(layout, hidden=generator_width)
    disc = Discriminator(layout, hidden=discriminator_width)
    if epsilon is None:
        rng = torch.Generator().manual_seed(seed)
    else:  # sampling, noise, fakes and generator draws: one unpredictable source (module docstring)
        rng = generator if generator is not None else torch.Generator().manual_seed(secrets.randbits(63))
    data = [(layout.to_vectors(s), torch.from_numpy(np.array(s.disease, dtype=np.int64))) for s in sites]
    counts = [s.n for s in sites]
    for _ in range(rounds):
        gen_states, disc_states = [], []
        for (x0, disease), mechanism in zip(data, mechanisms):
            local_gen, local_disc = copy.deepcopy(gen), copy.deepcopy(disc)
            _local_round(local_gen, local_disc, x0, disease, steps=local_steps, batch_size=batch_size, lr=lr,
                         generator_steps=generator_steps, mechanism=mechanism, rng=rng)
            gen_states.append(local_gen.state_dict())
            disc_states.append(local_disc.state_dict())
        gen.load_state_dict(fedavg(gen_states, counts))
        disc.load_state_dict(fedavg(disc_states, counts))
    return DPGAN(generator=gen.eval(), layout=layout, tensor_layout=TensorLayout.from_bundle(bundle), sites=plans)
