"""A site's privacy budget (ε, δ), noise calibration for a planned run, and the refusal error.

Assumptions (for everything here)
---------------------------------
- DP-SGD with Poisson sampling (each record joins each step's batch independently with
  probability q = batch size / records), per-sample gradient clipping, and Gaussian noise of
  standard deviation σ · clip norm on the summed clipped gradients.
- Neighbouring datasets differ by adding or removing one record; the guarantee is
  record-level DP for one site's dataset. If one patient contributes several records, the
  per-patient guarantee is weaker (group privacy).
- ε comes from an accountant of :mod:`shared.privacy.registry`: ``"rdp"`` (Mironov 2017,
  "Rényi Differential Privacy"; Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of the
  Sampled Gaussian Mechanism") or ``"prv"`` (Gopi, Lee & Wutschitz 2021, "Numerical Composition of
  Differential Privacy"). Both report upper bounds; RDP's is the looser one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from opacus.accountants.utils import get_noise_multiplier

from shared.errors import ConfigError, RareGraphError
from shared.privacy.registry import accountant_class, make_accountant
from shared.privacy.validation import (
    check_delta_value,
    check_epsilon_value,
    check_int,
    check_noise_multiplier,
    check_real,
    check_sample_rate,
)

EPSILON_TOLERANCE = 0.01  # binary-search precision on ε for get_noise_multiplier (Opacus's default)
NUDGE = 1.01  # factor σ is raised by while a verified ε still exceeds the target
MAX_NUDGES = 100  # 1.01**100 ≈ 2.7: far more than a search tolerance of 0.01 in ε can need


class PrivacyWarning(UserWarning):
    """A privacy choice that is allowed but weakens or changes the guarantee."""


class BudgetExceededError(RareGraphError):
    """A round (or plan) was refused because it would spend more ε than the site's budget.

    Attributes
    ----------
    spent
        ε spent before the refused work.
    after
        ε the work would have brought the total to.
    budget
        The budget it would have crossed.
    """

    def __init__(self, *, what: str, spent: float, after: float, budget: PrivacyBudget, mechanism: str) -> None:
        self.spent, self.after, self.budget = spent, after, budget
        super().__init__(
            f"{what} refused: ε spent so far {spent:.4g}, ε after it would be {after:.4g}, "
            f"budget ε = {budget.epsilon:g} at δ = {budget.delta:g} ({mechanism} accountant); "
            "the spent budget is never reset")


@dataclass(frozen=True, kw_only=True)
class PrivacyBudget:
    """The (ε, δ) a site allows over the lifetime of its dataset.

    Parameters
    ----------
    epsilon
        ε > 0, finite. Total over all rounds and all runs on this dataset, not per round.
    delta
        δ in (0, 1); should be well below 1 / records (see :meth:`check_delta`).

    Raises
    ------
    ConfigError
        (a ``ValueError``) ε or δ is out of range; the message names the value and the range.
    """

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", check_epsilon_value(self.epsilon))
        object.__setattr__(self, "delta", check_delta_value(self.delta))

    def check_delta(self, n_records: int) -> None:
        """Warn (:class:`PrivacyWarning`) when δ ≥ 1 / ``n_records``.

        With δ ≥ 1/n a mechanism that publishes one random record in full would meet the
        definition, so the guarantee means little. Allowed, but weaker, hence a warning.

        Parameters
        ----------
        n_records
            Records in the site's dataset (the privacy unit), ≥ 1.

        Raises
        ------
        ConfigError
            ``n_records`` is not an integer ≥ 1.
        """
        n = check_int("n_records", n_records, low=1)
        if self.delta >= 1 / n:
            warnings.warn(f"delta = {self.delta:g} is not below 1/records = 1/{n} = {1 / n:.3g}: the guarantee is weak; "
                          f"choose delta well below {1 / n:.3g} (e.g. 1/records² or 1e-5)", PrivacyWarning, stacklevel=2)

    def to_json(self) -> dict[str, float]:
        """``{"epsilon": ε, "delta": δ}``."""
        return {"epsilon": self.epsilon, "delta": self.delta}


@dataclass(frozen=True, kw_only=True)
class MechanismPlan:
    """The DP-SGD mechanism a site plans to run, calibrated for the whole participation.

    Parameters
    ----------
    noise_multiplier
        σ = noise standard deviation / clip norm, > 0, from :func:`calibrate_noise`.
    sample_rate
        q = batch size / records (Poisson sampling probability), in (0, 1].
    steps_per_round
        Local optimizer steps per round, ≥ 1.
    rounds
        Rounds σ was calibrated for, ≥ 1.
    clip_norm
        Per-sample gradient clipping norm C, > 0 (does not change ε; σ is relative to C).
    noise_multiplicity
        Noise draws per record averaged inside one per-sample gradient before clipping, ≥ 1
        (does not change ε: the record still contributes one clipped gradient per step).
    """

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    clip_norm: float
    noise_multiplicity: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", check_noise_multiplier(self.noise_multiplier))
        object.__setattr__(self, "sample_rate", check_sample_rate(self.sample_rate))
        object.__setattr__(self, "steps_per_round", check_int("steps_per_round", self.steps_per_round, low=1))
        object.__setattr__(self, "rounds", check_int("rounds", self.rounds, low=1))
        object.__setattr__(self, "clip_norm", check_real("clip_norm", self.clip_norm, low=0.0))
        object.__setattr__(self, "noise_multiplicity", check_int("noise_multiplicity", self.noise_multiplicity, low=1))


def epsilon_for(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """ε after ``steps`` fresh steps of the sampled Gaussian mechanism (σ, q), at ``delta``.

    Parameters
    ----------
    noise_multiplier
        σ = noise standard deviation / clip norm, > 0.
    sample_rate
        q, the Poisson sampling probability per record and step, in (0, 1].
    steps
        Number of steps, ≥ 0.
    delta
        δ in (0, 1).
    accountant
        Registered accountant name (``"rdp"`` or ``"prv"``).

    Returns
    -------
    float
        An upper bound on ε (0.0 for zero steps).
    """
    acc = make_accountant(accountant)
    acc.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    return acc.epsilon(delta=delta)


def calibrate_noise(*, epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp") -> float:
    """The noise multiplier σ that keeps a whole planned participation within (ε, δ).

    Calibrate once for every step the site will take (rounds × local steps) and reuse σ in
    every round: calibrating per round would spend the budget once per round.

    Steps
    -----
    1. Binary search over σ with Opacus's ``get_noise_multiplier`` (ε tolerance 0.01), which
       returns the upper end of its bracket, so ε(σ) ≤ target already.
    2. Recompute ε(σ) with this package's accountant and raise σ by 1 % until ε(σ) ≤ target,
       so the guarantee holds even if the two ever disagree.

    Parameters
    ----------
    epsilon
        Target ε > 0 for the whole run.
    delta
        Target δ in (0, 1).
    sample_rate
        q = batch size / records: the Poisson sampling probability of each record per step,
        in (0, 1].
    steps
        Total optimizer steps over the run (empty Poisson batches count), ≥ 1.
    accountant
        ``"rdp"`` (Mironov 2017; Mironov et al. 2019) or ``"prv"`` (Gopi et al. 2021).

    Returns
    -------
    float
        σ (noise standard deviation divided by the clip norm) with ε(σ) ≤ ``epsilon``.

    Raises
    ------
    ConfigError
        (a ``ValueError``) an argument is out of range, the accountant is unknown, or no σ up to
        10⁶ reaches the target (the budget is too small for the run).

    Assumptions
    -----------
    Poisson sampling, per-sample clipping, add/remove-one neighbours, record-level DP per site.
    """
    budget = PrivacyBudget(epsilon=epsilon, delta=delta)
    q = check_sample_rate(sample_rate)
    n_steps = check_int("steps", steps, low=1)
    acc_class = accountant_class(accountant)  # unknown names fail here with the list of known ones
    # 1. Opacus's search
    try:
        with acc_class.ignoring_irrelevant_warnings():
            sigma = float(get_noise_multiplier(target_epsilon=budget.epsilon, target_delta=budget.delta, sample_rate=q,
                                               steps=n_steps, accountant=accountant,
                                               epsilon_tolerance=EPSILON_TOLERANCE))
    except ValueError as exc:
        raise ConfigError(f"epsilon = {budget.epsilon:g} at delta = {budget.delta:g} is too small for {n_steps} steps at "
                          f"sample rate {q:g} ({exc}); raise epsilon or lower the steps or the batch size") from None
    # 2. verify with our own accountant; nudge σ up if needed (never down)
    for _ in range(MAX_NUDGES):
        if epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=n_steps, delta=budget.delta,
                       accountant=accountant) <= budget.epsilon:
            return sigma
        sigma *= NUDGE
    raise ConfigError(f"could not find a noise multiplier for epsilon = {budget.epsilon:g} at delta = "
                      f"{budget.delta:g}, {n_steps} steps at sample rate {q:g} ({accountant})")



def plan_mechanism(*, budget: PrivacyBudget, records: int, batch_size: int, steps_per_round: int, rounds: int,
                   clip_norm: float = 1.0, noise_multiplicity: int = 1, accountant: str = "rdp") -> MechanismPlan:
    """Calibrate σ for ``rounds × steps_per_round`` steps at q = ``batch_size / records``.

    Warns (:class:`PrivacyWarning`) when δ ≥ 1/records.

    Parameters
    ----------
    budget
        The site's (ε, δ) for the whole participation.
    records
        Records in the site's dataset (the privacy unit), ≥ 1.
    batch_size
        Expected Poisson batch size, 1 ≤ batch_size ≤ records.
    steps_per_round
        Local optimizer steps per round, ≥ 1.
    rounds
        Planned rounds, ≥ 1.
    clip_norm
        Per-sample clipping norm C, > 0 (recorded; does not change σ).
    noise_multiplicity
        Noise draws averaged per record before clipping, ≥ 1 (recorded; does not change σ).
    accountant
        ``"rdp"`` or ``"prv"``.

    Returns
    -------
    MechanismPlan
        With σ from :func:`calibrate_noise`.

    Raises
    ------
    ConfigError
        An argument is out of range or the budget is too small for the run.
    """
    n = check_int("records", records, low=1)
    b = check_int("batch_size", batch_size, low=1)
    if b > n:
        raise ConfigError(f"batch_size must be at most records = {n} (sample rate ≤ 1), got {b}")
    budget.check_delta(n)
    q = b / n
    per_round, n_rounds = check_int("steps_per_round", steps_per_round, low=1), check_int("rounds", rounds, low=1)
    sigma = calibrate_noise(epsilon=budget.epsilon, delta=budget.delta, sample_rate=q, steps=per_round * n_rounds,
                            accountant=accountant)
    return MechanismPlan(noise_multiplier=sigma, sample_rate=q, steps_per_round=per_round, rounds=n_rounds,
                         clip_norm=clip_norm, noise_multiplicity=noise_multiplicity)


def epsilon_per_round(plan: MechanismPlan, *, delta: float, accountant: str = "rdp") -> list[float]:
    """Cumulative ε after each planned round of ``plan``, at ``delta`` (the last is ≤ the target)."""
    acc = make_accountant(accountant)
    out = []
    for _ in range(plan.rounds):
        acc.step(noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate, steps=plan.steps_per_round)
        out.append(acc.epsilon(delta=delta))
    return out
