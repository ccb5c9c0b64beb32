"""Fit a baseline to a consortium's sites: each site releases or trains under its own (ε, δ),
and the consortium's generator is the pool (the benchmark harness and ``raregraph federate
--method`` both call these).

- ``marginals``: every site makes one Gaussian release of its bounded per-disease sums
  (:func:`shared.baselines.marginals.release_site`); the coordinator adds the releases and
  estimates the marginals (:func:`shared.baselines.marginals.fit`, post-processing).
- ``dpgan``: the conditional GAN with DP-SGD on the discriminator at every site and FedAvg
  across them (:func:`shared.baselines.dpgan.train_federated`, an in-process federation).
- ``prior``: patients from the bundle's public knowledge alone
  (:class:`shared.baselines.prior.PriorSampler`): no patient data, nothing spent.

Each function takes the sites' tensors and either ε (σ calibrated here for the whole fit, a
fresh accountant per site: the benchmark) or each site's σ already calibrated against what its
persistent privacy state has left (:mod:`shared.baselines.site_charge`: the command).
``epsilon=None`` fits without DP (the benchmark's and the command's reference rows only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shared.baselines.dpgan import DPGAN, GAN_CLIP_NORM, train_federated
from shared.baselines.marginals import Marginals, release_site
from shared.baselines.marginals import fit as pool_releases
from shared.baselines.prior import PriorSampler
from shared.bundle import StudyBundle
from shared.trajectories.tensors import TrajectoryTensors

#: the baselines a consortium can fit, by the name ``--method`` takes
METHODS = ("marginals", "dpgan", "prior")


def fit_marginals(sites: Sequence[TrajectoryTensors], n_diseases: int, *, epsilon: float | None, delta: float,
                  generator: np.random.Generator | None = None,
                  noise_multipliers: Sequence[float] | None = None) -> Marginals:
    """Independent marginals from one Gaussian release per site, pooled.

    Parameters
    ----------
    sites
        Each site's patients, in the bundle's tensor layout.
    n_diseases
        D, the study's diseases (public).
    epsilon, delta
        Each site's (ε, δ) for its release; ``epsilon=None``: exact sums, no noise (no DP).
    generator
        Source of every site's bounding choices and noise: each site gets its own stream seeded
        from it, in site order. None: OS entropy at every site (a deployment); a seeded one
        repeats the fit and is for tests and benchmarks only.
    noise_multipliers
        Each site's σ when already calibrated against its persistent privacy state; None: σ for
        the whole (ε, δ) at every site.

    Raises
    ------
    ValueError
        No sites, a disease index outside [0, D), or not one σ per site.
    """
    if not sites:
        raise ValueError("no sites to fit")
    if noise_multipliers is not None and len(noise_multipliers) != len(sites):
        raise ValueError(f"{len(noise_multipliers)} noise multipliers for {len(sites)} sites: give one per site")
    releases = []
    for k, t in enumerate(sites):
        site_rng = None if generator is None else np.random.default_rng(generator.integers(2**63))
        releases.append(release_site(
            t, n_diseases, epsilon=epsilon, delta=delta, generator=site_rng,
            noise_multiplier=None if noise_multipliers is None else noise_multipliers[k]))
    return pool_releases(releases)


def fit_dpgan(sites: Sequence[TrajectoryTensors], bundle: StudyBundle, *, epsilon: float | None, delta: float,
              rounds: int, local_steps: int, seed: int, batch_size: int = 32, clip_norm: float = GAN_CLIP_NORM,
              generator: torch.Generator | None = None,
              noise_multipliers: Sequence[float] | None = None) -> DPGAN:
    """The DP-GAN trained with FedAvg over ``sites`` (:func:`shared.baselines.dpgan.train_federated`),
    on one torch thread.

    Parameters
    ----------
    sites, bundle
        Each site's patients and the study bundle (its layout only).
    epsilon, delta
        Each site's (ε, δ) for the whole training; ``epsilon=None``: no DP, same steps.
    rounds, local_steps, batch_size, clip_norm
        FedAvg rounds, discriminator steps per site and round, expected Poisson batch, per-patient
        clip norm of the discriminator gradient.
    seed
        Initial weights (and, without DP, every draw).
    generator
        With DP: the sites' sampling, noise and fakes. None: OS entropy (a deployment); a seeded
        one repeats the run and is for tests and benchmarks only.
    noise_multipliers
        Each site's σ when already calibrated against its persistent privacy state.

    Raises
    ------
    ValueError
        No sites, a site without patients, or bad step counts or σ.
    ConfigError
        ε too small for the run.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small layers: one thread is 10× faster here than two competing ones
    try:
        return train_federated(list(sites), bundle, epsilon=epsilon, delta=delta, rounds=rounds,
                               local_steps=local_steps, batch_size=batch_size, clip_norm=clip_norm, seed=seed,
                               generator=generator, noise_multipliers=noise_multipliers)
    finally:
        torch.set_num_threads(threads)


def fit_prior(bundle: StudyBundle) -> PriorSampler:
    """The graph-priors-only sampler: no patient data, so nothing to fit and nothing spent."""
    return PriorSampler(bundle)
