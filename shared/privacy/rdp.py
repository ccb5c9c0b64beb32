"""Rényi-DP accounting of DP-SGD (wraps ``opacus.accountants.RDPAccountant``)."""

from __future__ import annotations

from opacus.accountants import RDPAccountant as _OpacusRDP

from shared.privacy.accountant import OpacusAccountant


class RDPAccountant(OpacusAccountant):
    """Rényi differential privacy accountant, registered as ``"rdp"``.

    Per step the Rényi divergence of the sampled Gaussian mechanism is computed at a fixed grid
    of orders α (Mironov, Talwar & Zhang 2019, arXiv:1908.10530, Sec. 3), composed by summing
    (Mironov 2017, "Rényi Differential Privacy", CSF, Prop. 1) and converted to (ε, δ) at the
    best order. Opacus does all of this; see :mod:`shared.privacy.accountant` for the
    assumptions (Poisson sampling, per-sample clipping, add/remove-one, record-level DP).

    Notes
    -----
    The result is an upper bound on ε and is looser than the PRV accountant's, more so for few
    steps. Opacus warns when the best order is the largest one on its grid (the bound could be
    tighter, but it still holds).

    Examples
    --------
    >>> acc = RDPAccountant()
    >>> acc.step(noise_multiplier=1.0, sample_rate=0.01, steps=1000)
    >>> round(acc.epsilon(delta=1e-5), 2)
    2.1
    """

    _opacus_class = _OpacusRDP
