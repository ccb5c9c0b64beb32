"""Differential-privacy accounting for DP-SGD at each site.

Modules
-------
accountant
    The :class:`Accountant` protocol and the shared wrapper of Opacus's accountants.
rdp, prv
    The implementations (``"rdp"``: Mironov 2017, Mironov et al. 2019; ``"prv"``: Gopi et al. 2021).
registry
    Accountants by name.
budget
    :class:`PrivacyBudget`, :func:`calibrate_noise`, :class:`MechanismPlan`, :class:`BudgetExceededError`.
state
    :class:`PrivacyState`: the site's lifetime spend in ``<state folder>/privacy_state.json``.
cli
    ``raregraph privacy plan``.

Assumptions everywhere: Poisson sampling, per-sample clipping, Gaussian noise, add/remove-one
neighbouring datasets, record-level DP for one site's dataset; ε values are upper bounds.
"""

from shared.privacy.accountant import Accountant
from shared.privacy.budget import (
    BudgetExceededError,
    MechanismPlan,
    PrivacyBudget,
    PrivacyWarning,
    calibrate_noise,
    epsilon_for,
    epsilon_per_round,
    plan_mechanism,
)
from shared.privacy.prv import PRVAccountant
from shared.privacy.rdp import RDPAccountant
from shared.privacy.registry import ACCOUNTANTS, accountant_class, known_accountants, make_accountant
from shared.privacy.state import FingerprintMismatchError, PrivacyState
from shared.privacy.state_file import STATE_FILE, RoundRecord

__all__ = [
    "ACCOUNTANTS", "STATE_FILE", "Accountant", "BudgetExceededError", "FingerprintMismatchError", "MechanismPlan",
    "PRVAccountant", "PrivacyBudget", "PrivacyState", "PrivacyWarning", "RDPAccountant", "RoundRecord",
    "accountant_class", "calibrate_noise", "epsilon_for", "epsilon_per_round", "known_accountants",
    "make_accountant", "plan_mechanism",
]
