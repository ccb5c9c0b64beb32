"""The one interface every synthetic-patient generator offers, so a benchmark or an evaluation
treats the diffusion model and every baseline alike (as synthcity's plugins share one API).

Implementations: :class:`shared.baselines.marginals.Marginals`,
:class:`shared.baselines.dpgan.DPGAN`, :class:`shared.baselines.prior.PriorSampler` and, for
the diffusion model, :class:`shared.model.generation.DiffusionGenerator`. Fitting is not part of
the interface: each method trains its own way (a federation, a DP release, nothing at all) and
then hands back an object that samples.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from shared.trajectories.tensors import TrajectoryTensors


@runtime_checkable
class SyntheticGenerator(Protocol):
    """A fitted generator of synthetic patients, conditioned on each patient's disease."""

    @property
    def name(self) -> str:
        """Short lowercase name of the method (``"marginals"``, ``"dpgan"``, ``"prior"``, …)."""
        ...

    def sample(self, conditions: np.ndarray, *, seed: int) -> TrajectoryTensors:
        """One synthetic patient per entry of ``conditions``.

        Parameters
        ----------
        conditions
            int [N], N ≥ 1: each patient's disease, as an index into the study bundle's disease
            list (``bundle.diseases``, row order), so every entry lies in [0, D). Patient i of
            the output has disease ``conditions[i]``. The array is not modified.
        seed
            The only source of randomness: the same seed and conditions give the same patients,
            element for element; a different seed gives different ones.

        Returns
        -------
        TrajectoryTensors
            N patients in the bundle's tensor layout (its windows, binary and lab columns), in
            the order of ``conditions``, with ``disease`` equal to ``conditions`` (a copy: no
            output array shares memory with the input).

        Raises
        ------
        ValueError
            No conditions, or one outside [0, D).
        """
        ...
