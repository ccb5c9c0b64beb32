"""The ε lower bound of a one-run privacy audit (pure maths, no state).

Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023
(arXiv:2305.08846), main theorem (Theorem 3.1) and the p-value routine of its appendix.

Symbols (paper → here):

=====================  ==========================================================
m                      ``m``: canaries, each in the training data with probability ½
S ∈ {−1, +1}^m         the inclusion draw (+1: canary i was trained on)
T ∈ {−1, 0, +1}^m      the auditor's guesses ("in", abstain, "out")
r = ‖T‖₁               ``guesses``: guesses made (k₊ "in" plus k₋ "out")
W = Σ max(0, T_i S_i)  ``correct``: correct guesses (v, once observed)
(ε, δ)                 the DP guarantee under test (the null hypothesis)
β                      ``beta``: the level of the test; the bound holds w.p. ≥ 1 − β
=====================  ==========================================================

The theorem: if the training is (ε, δ)-DP for one added or removed record, S is uniform
and independent of everything else, and T is any function of the training's output with
at most r non-zero entries, then for every v

    P[W ≥ v] ≤ f_{ε,δ}(v) = P[B ≥ v] + 2·m·δ · max_{1 ≤ i ≤ m} P[v − i ≤ B < v] / i,
    B ~ Binomial(r, p),  p = e^ε / (1 + e^ε).

With δ = 0 this says W is dominated by r guesses of ε-DP randomized response. The terms
with i > v equal the term i = v divided by a larger i, so the maximum runs over
1 ≤ i ≤ v (and f(v) = 1 for v ≤ 0).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

EPSILON_TOLERANCE = 1e-6  # bisection stops when the bracket is this narrow (the low end is returned)
EPSILON_CEILING = 1e3  # no audit of m ≤ 10⁶ canaries can reject a larger ε: e^-1000 underflows


def _check_counts(*, m: int, guesses: int, correct: int) -> None:
    for name, value in (("m", m), ("guesses", guesses), ("correct", correct)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if not 0 <= correct <= guesses <= m or m < 1:
        raise ValueError(f"need 0 ≤ correct ≤ guesses ≤ m and m ≥ 1, got correct={correct}, "
                         f"guesses={guesses}, m={m}")


def _check_delta(delta: float) -> None:
    if not (math.isfinite(delta) and 0.0 <= delta < 1.0):
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")


def p_value(*, m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """f_{ε,δ}(v): how likely ≥ ``correct`` correct guesses are under (ε, δ)-DP, at most.

    1. p = e^ε / (1 + e^ε), the accuracy of ε-DP randomized response;
    2. tail = P[B ≥ v] with B ~ Binomial(r, p);
    3. α = max_{1 ≤ i ≤ v} P[v − i ≤ B < v] / i (the mass just below v, spread over i guesses);
    4. f = min(1, tail + 2·m·δ·α).

    Parameters
    ----------
    m
        Canaries (each included with probability ½), ≥ 1.
    guesses
        r, guesses made (abstentions excluded), 0 ≤ r ≤ m.
    correct
        v, correct guesses, 0 ≤ v ≤ r.
    epsilon
        ε ≥ 0 of the hypothesis.
    delta
        δ in [0, 1) of the hypothesis.

    Returns
    -------
    float
        The p-value in [0, 1]; below β the hypothesis "(ε, δ)-DP" is rejected at level β.

    Raises
    ------
    TypeError
        A count is not an integer.
    ValueError
        Counts out of order, ε negative or not finite, δ out of range.
    """
    _check_counts(m=m, guesses=guesses, correct=correct)
    _check_delta(delta)
    if not (math.isfinite(epsilon) and epsilon >= 0.0):
        raise ValueError(f"epsilon must be a finite number ≥ 0, got {epsilon!r}")
    v, r = int(correct), int(guesses)
    if v == 0:
        return 1.0
    p = 1.0 / (1.0 + math.exp(-epsilon))  # e^ε / (1 + e^ε) without overflow
    tail = float(binom.sf(v - 1, r, p))  # P[B ≥ v]
    if delta == 0.0:
        return min(1.0, tail)
    i = np.arange(1, v + 1)
    below = binom.sf(v - i - 1, r, p) - tail  # P[v − i ≤ B < v] = P[B ≥ v − i] − P[B ≥ v]
    alpha = float(np.max(below / i))
    return min(1.0, tail + 2.0 * m * delta * alpha)


def epsilon_lower_bound(*, m: int, guesses: int, correct: int, delta: float, beta: float = 0.05) -> float:
    """The largest ε that ``correct`` of ``guesses`` correct guesses reject at level β.

    ε_lb = sup{ε ≥ 0 : f_{ε,δ}(v) < β}, or 0 when even ε = 0 is not rejected. Whatever
    the training's true ε, P[ε_lb > ε] ≤ β over the inclusion draw and the training's
    randomness: an ε_lb above the accountant's ε is, at confidence 1 − β, a bug in the
    mechanism or in its accounting. It is a lower bound only: a weak membership test
    gives ε_lb ≈ 0 for any mechanism, so a small ε_lb proves nothing.

    1. if f_{0,δ}(v) ≥ β, return 0;
    2. double ε_hi from 1 until f_{ε_hi,δ}(v) ≥ β (f grows with ε);
    3. bisect [ε_lo, ε_hi] keeping f(ε_lo) < β ≤ f(ε_hi) until it is narrower than
       ``EPSILON_TOLERANCE``; return ε_lo (the conservative end).

    The guesses must be fixed before the scores are seen (k₊, k₋ chosen in advance):
    choosing the best of several k on the same run needs a correction this does not make.

    Parameters
    ----------
    m, guesses, correct, delta
        As for :func:`p_value`.
    beta
        β in (0, 1): the bound holds with confidence 1 − β (0.05: 95 %).

    Returns
    -------
    float
        ε_lb ≥ 0.

    Raises
    ------
    TypeError, ValueError
        As for :func:`p_value`; β outside (0, 1).

    Examples
    --------
    Ten correct guesses out of ten, δ = 0: q¹⁰ = 0.05 at q = e^ε / (1 + e^ε).

    >>> round(epsilon_lower_bound(m=100, guesses=10, correct=10, delta=0.0), 4)
    1.0519
    """
    if not (math.isfinite(beta) and 0.0 < beta < 1.0):
        raise ValueError(f"beta must be in (0, 1), got {beta!r}")

    def f(eps: float) -> float:
        return p_value(m=m, guesses=guesses, correct=correct, epsilon=eps, delta=delta)

    if f(0.0) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while f(hi) < beta:
        lo, hi = hi, 2.0 * hi
        if hi > EPSILON_CEILING:
            return lo
    while hi - lo > EPSILON_TOLERANCE:
        mid = (lo + hi) / 2.0
        if f(mid) < beta:
            lo = mid
        else:
            hi = mid
    return lo
