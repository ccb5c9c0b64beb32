"""ε recomputed with an accountant independent of the training one: Google's ``dp-accounting``.

The sites account with Opacus (:mod:`shared.privacy.registry`); the audit recomputes every
recorded ε from the recorded mechanism with a second implementation, written by other people
from the same papers, so that a bug or a tampered value in one shows up as a disagreement.

Like with like
--------------
====================  ===========================  ===============================================
site accountant       independent method           why they agree
====================  ===========================  ===============================================
``"rdp"`` (Opacus)    ``"rdp"``: dp-accounting     same analysis (Mironov et al. 2019) and the same
                      ``RdpAccountant``            RDP→(ε, δ) conversion; the order grids differ
                                                   (dp-accounting adds 11 and 128–1024, and drops
                                                   fractional orders whose series does not
                                                   converge), ≤ 0.21 % in our checks
``"prv"`` (Opacus)    ``"pld"``: dp-accounting     both compose the exact privacy loss distribution
                      ``PLDAccountant``            numerically; Opacus reports the upper end of its
                                                   ±0.01 error interval, so PRV − PLD ≈ +0.010
====================  ===========================  ===============================================

Tolerance rule (:func:`tolerance`): a recorded ε agrees with the independent ε when
``|recorded − independent| ≤ 1 % · independent + slack``, with slack 0 for RDP and
2 × Opacus's PRV ``eps_error`` (0.02) for PRV: the PRV figure is only resolved to ±0.01, which
is more than 1 % once ε < 1. Measured on σ 0.6–3, q 0.01–0.3, 10–2000 steps at δ = 1e-5:
RDP vs RDP within 0.21 % relative (0.08 % for one (σ, q)); PRV − PLD between +0.009 and +0.011
absolute, i.e. within 1 % relative for ε ≥ 1.1 but 28 % relative at ε ≈ 0.04 (σ 3, q 0.01, 10 steps).

Assumptions (the same as the site accountants'): each step is the sampled Gaussian mechanism
with Poisson sampling at rate q and noise σ · C on clipped per-sample gradients; neighbouring
datasets differ by adding or removing one record (dp-accounting's ``ADD_OR_REMOVE_ONE``);
composition is over every charged step of the site's dataset, in any order (it commutes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import dp_accounting
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant

from shared.errors import ConfigError
from shared.privacy.settings import EPS_ERROR
from shared.privacy.validation import check_delta_value, check_int, check_noise_multiplier, check_sample_rate

Method = Literal["pld", "rdp"]
METHODS: tuple[Method, ...] = ("pld", "rdp")
METHOD_FOR_ACCOUNTANT: dict[str, Method] = {"rdp": "rdp", "prv": "pld"}  # compare like with like
# privacy-loss grid step: pessimistic rounding, so ε can only grow (by ≈ 1e-4 against dp-accounting's default 1e-4),
# and about 10× faster, which matters because the audit recomputes ε after every ledger entry
PLD_DISCRETIZATION = 1e-3
RELATIVE_TOLERANCE = 0.01  # the audit flags a recorded ε more than 1 % off the independent one ...
ABSOLUTE_SLACK: dict[str, float] = {"rdp": 0.0, "prv": 2 * EPS_ERROR}  # ... plus PRV's numerical resolution
_NEIGHBOURS = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
# dp-accounting drops a fractional RDP order whose series does not converge and logs it; fewer
# orders can only loosen the bound, never break it, so that message is not a problem here
_IRRELEVANT_LOG = "_compute_log_a_frac failed to converge"


class _DropNonConvergence(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_IRRELEVANT_LOG)


@contextmanager
def _quiet_dropped_orders() -> Iterator[None]:
    """Within the block, hide only dp-accounting's log line about a dropped RDP order."""
    logger, flt = logging.getLogger("absl"), _DropNonConvergence()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


def aggregate(mechanisms: Sequence[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Validate ``(σ, q, steps)`` entries and sum the steps of equal (σ, q) (composition commutes)."""
    totals: dict[tuple[float, float], int] = {}
    for i, item in enumerate(mechanisms):
        if not isinstance(item, tuple | list) or len(item) != 3:
            raise ConfigError(f"mechanism {i} must be (noise_multiplier, sample_rate, steps), got {item!r}")
        try:
            key = (check_noise_multiplier(item[0]), check_sample_rate(item[1]))
            steps = check_int("steps", item[2], low=0)
        except ConfigError as exc:
            raise ConfigError(f"mechanism {i}: {exc}") from None
        if steps:
            totals[key] = totals.get(key, 0) + steps
    return [(sigma, rate, steps) for (sigma, rate), steps in totals.items()]


def recompute_epsilon(mechanisms: Sequence[tuple[float, float, int]], *, delta: float,
                      method: Method = "pld") -> float:
    """ε of a DP-SGD history at ``delta``, from dp-accounting (independent of Opacus).

    ============  =====================================================
    symbol        here
    ============  =====================================================
    σ             ``noise_multiplier`` (noise std / clip norm)
    q             ``sample_rate`` (Poisson sampling probability)
    T             ``steps`` with that (σ, q)
    ============  =====================================================

    Steps
    -----
    1. Sum the steps of equal (σ, q): composition commutes.
    2. One event per (σ, q): ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), T)``,
       all of them in one ``ComposedDpEvent``.
    3. ``"rdp"``: ``RdpAccountant`` (Mironov, Talwar & Zhang 2019, arXiv:1908.10530; conversion of
       Balle et al. 2020, Thm. 21) at dp-accounting's default orders. ``"pld"``: ``PLDAccountant``
       (Koskela et al. 2020; Doroshenko et al. 2022, "Connect the Dots") with pessimistic
       discretisation at :data:`PLD_DISCRETIZATION`.

    Parameters
    ----------
    mechanisms
        ``(σ, q, steps)`` per charge: σ > 0, q in (0, 1], steps ≥ 0 (0 is skipped).
    delta
        δ in (0, 1).
    method
        ``"pld"`` (tight; compare with Opacus PRV) or ``"rdp"`` (compare with Opacus RDP).

    Returns
    -------
    float
        An upper bound on ε (0.0 for an empty history).

    Raises
    ------
    ConfigError
        (a ``ValueError``) an entry or δ is out of range, or the method is unknown.

    Assumptions
    -----------
    Poisson sampling, per-sample clipping, Gaussian noise, add/remove-one neighbours, record-level
    DP of one site's dataset.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    delta = check_delta_value(delta)
    # 1. aggregate
    history = aggregate(mechanisms)
    if not history:
        return 0.0
    # 2. events
    event = dp_accounting.ComposedDpEvent([
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma)),
                                          steps)
        for sigma, rate, steps in history])
    # 3. account
    accountant = (RdpAccountant(neighboring_relation=_NEIGHBOURS) if method == "rdp"
                  else PLDAccountant(_NEIGHBOURS, value_discretization_interval=PLD_DISCRETIZATION))
    with _quiet_dropped_orders():
        accountant.compose(event)
        return float(accountant.get_epsilon(delta))


def method_for(accountant: str) -> Method:
    """The independent method that compares like with like with a site accountant (``rdp``→``rdp``, ``prv``→``pld``).

    Raises
    ------
    ConfigError
        The accountant is not one this module can check.
    """
    try:
        return METHOD_FOR_ACCOUNTANT[accountant]
    except KeyError:
        raise ConfigError(f"no independent method for accountant {accountant!r}; known: "
                          f"{', '.join(sorted(METHOD_FOR_ACCOUNTANT))}") from None


def tolerance(independent: float, *, accountant: str) -> float:
    """Largest allowed ``|recorded − independent|``: 1 % of the independent ε plus the accountant's slack."""
    method_for(accountant)
    return RELATIVE_TOLERANCE * abs(independent) + ABSOLUTE_SLACK[accountant]


def agrees(recorded: float, independent: float, *, accountant: str) -> bool:
    """True when a recorded ε is within :func:`tolerance` of the independent one."""
    return abs(recorded - independent) <= tolerance(independent, accountant=accountant)
