"""Differential-privacy accounting for DP-SGD at each site.

Modules
-------
accountant
    The :class:`Accountant` protocol and the shared wrapper of Opacus's accountants.
rdp, prv
    The implementations (``"rdp"``: Mironov 2017, Mironov et al. 2019; ``"prv"``: Gopi et al. 2021).
registry
    Accountants by name.
settings
    What needs no Opacus: the accountants' names, the default clip norm, PRV's numerical resolution.
budget
    :class:`PrivacyBudget`, :func:`calibrate_noise`, :class:`MechanismPlan`, :class:`BudgetExceededError`.
state
    :class:`PrivacyState`: the site's lifetime spend in ``<state folder>/privacy_state.json``.
cli
    ``raregraph privacy plan``.

Assumptions everywhere: Poisson sampling, per-sample clipping, Gaussian noise, add/remove-one
neighbouring datasets, record-level DP for one site's dataset; ε values are upper bounds.

Importing the package imports none of its modules (so none of Opacus): import what you use
from its module, e.g. ``from shared.privacy.budget import calibrate_noise``. The ledger and its
audit need no Opacus either, and a command that only reads them never loads it (issue 23).
"""
