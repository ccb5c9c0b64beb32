"""The one-run ε lower bound: hand-computed values, the paper's worked example, validity, monotonicity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from shared.privacy.audit.one_run import EPSILON_TOLERANCE, epsilon_lower_bound, p_value


def _rr(eps: float) -> float:
    return math.exp(eps) / (1 + math.exp(eps))


def test_p_value_matches_a_hand_computed_small_case() -> None:
    # m = 3, r = 2, v = 2, ε = 1, δ = 0.01: B ~ Binomial(2, q);
    # f = q² + 2·3·0.01 · max(P[B = 1] / 1, P[B ∈ {0, 1}] / 2)
    q = _rr(1.0)
    expected = q**2 + 2 * 3 * 0.01 * max(2 * q * (1 - q), (1 - q**2) / 2)
    assert p_value(m=3, guesses=2, correct=2, epsilon=1.0, delta=0.01) == pytest.approx(expected, rel=1e-12)
    assert p_value(m=3, guesses=2, correct=2, epsilon=1.0, delta=0.0) == pytest.approx(q**2, rel=1e-12)
    assert p_value(m=3, guesses=2, correct=0, epsilon=1.0, delta=0.01) == 1.0  # nothing to explain


@pytest.mark.parametrize("r", [5, 10, 30, 100])
def test_all_correct_without_delta_has_a_closed_form(r: int) -> None:
    # P[Binomial(r, q) ≥ r] = q^r = β  ⇒  q = β^{1/r}, ε = log(q / (1 − q))
    q = 0.05 ** (1 / r)
    bound = epsilon_lower_bound(m=100, guesses=r, correct=r, delta=0.0, beta=0.05)
    assert bound == pytest.approx(math.log(q / (1 - q)), abs=2 * EPSILON_TOLERANCE)
    assert bound <= math.log(q / (1 - q))  # the conservative end of the bracket


def test_reproduces_the_papers_worked_example() -> None:
    # Steinke, Nasr & Jagielski (arXiv:2305.08846v1, appendix code example): 1000 canaries,
    # 100 guesses, 75 correct, δ = 1e-4, 95 % confidence → ε ≥ 0.673
    assert epsilon_lower_bound(m=1000, guesses=100, correct=75, delta=1e-4, beta=0.05) == pytest.approx(0.673, abs=5e-4)


def test_all_correct_bound_grows_with_the_number_of_guesses() -> None:
    bounds = [epsilon_lower_bound(m=256, guesses=2 * k, correct=2 * k, delta=1e-5) for k in (2, 5, 10, 20, 40, 80)]
    assert all(b2 > b1 + 0.2 for b1, b2 in zip(bounds, bounds[1:]))
    assert bounds[0] == pytest.approx(0.0, abs=0.5) and bounds[-1] > 3.5


@pytest.mark.parametrize("r", [10, 20, 64, 200])
def test_chance_level_guesses_give_no_bound(r: int) -> None:
    assert epsilon_lower_bound(m=2 * r, guesses=r, correct=r // 2, delta=1e-5) == 0.0
    assert epsilon_lower_bound(m=2 * r, guesses=r, correct=r // 2 + 1, delta=1e-5) < 0.1


def test_one_guess_right_proves_nothing() -> None:
    assert epsilon_lower_bound(m=100, guesses=1, correct=1, delta=0.0) == 0.0  # q = β < ½


@pytest.mark.parametrize("r", [10, 40, 150])
def test_random_guessing_rarely_claims_any_epsilon(r: int) -> None:
    # S uniform, guesses independent of it: W ~ Binomial(r, ½); ε_lb > 0 at most β of the time (exactly)
    wins = np.arange(r + 1)
    positive = np.array([epsilon_lower_bound(m=2 * r, guesses=r, correct=int(w), delta=1e-5) > 0 for w in wins])
    assert 0 < binom.pmf(wins[positive], r, 0.5).sum() <= 0.05


@pytest.mark.parametrize(("eps", "delta", "r", "m"), [(0.5, 0.0, 50, 100), (1.0, 1e-5, 100, 400),
                                                      (2.0, 1e-3, 60, 60), (4.0, 1e-2, 30, 1000)])
def test_bound_exceeds_the_true_epsilon_with_probability_at_most_beta(eps, delta, r, m) -> None:
    # ε-DP randomized response on every guess is (ε, δ)-DP and makes W ~ Binomial(r, e^ε/(1+e^ε));
    # ε_lb > ε exactly when f_{ε,δ}(W) < β (f grows with ε), so P[ε_lb > ε] is a binomial tail
    wins = np.arange(r + 1)
    over = np.array([epsilon_lower_bound(m=m, guesses=r, correct=int(w), delta=delta) > eps for w in wins])
    assert binom.pmf(wins[over], r, _rr(eps)).sum() <= 0.05


@settings(max_examples=60, deadline=None)
@given(r=st.integers(1, 200), frac=st.floats(0.0, 1.0), m_extra=st.integers(0, 500),
       delta=st.sampled_from([0.0, 1e-6, 1e-5, 1e-3]), beta=st.floats(0.01, 0.5))
def test_bound_is_the_edge_of_rejection(r, frac, m_extra, delta, beta) -> None:
    m, v = r + m_extra, round(frac * r)
    bound = epsilon_lower_bound(m=m, guesses=r, correct=v, delta=delta, beta=beta)
    assert bound >= 0.0
    if bound > 0:
        assert p_value(m=m, guesses=r, correct=v, epsilon=bound, delta=delta) < beta  # still rejected
        assert p_value(m=m, guesses=r, correct=v, epsilon=bound + 2 * EPSILON_TOLERANCE, delta=delta) >= beta
    else:
        assert p_value(m=m, guesses=r, correct=v, epsilon=0.0, delta=delta) >= beta


@settings(max_examples=40, deadline=None)
@given(r=st.integers(2, 150), frac=st.floats(0.5, 1.0), beta=st.floats(0.01, 0.3))
def test_bound_is_monotone(r, frac, beta) -> None:
    m, v = 2 * r, round(frac * r)

    def bound(**changes) -> float:
        args = {"m": m, "guesses": r, "correct": v, "delta": 1e-5, "beta": beta, **changes}
        return epsilon_lower_bound(**args)

    tol = 2 * EPSILON_TOLERANCE
    assert bound(beta=min(0.99, 2 * beta)) >= bound() - tol  # less confidence, larger bound
    assert bound(beta=beta / 2) <= bound() + tol
    assert bound(correct=min(r, v + 1)) >= bound() - tol  # one more correct guess never lowers it
    assert bound(delta=1e-3) <= bound() + tol  # a larger δ explains more
    assert bound(delta=0.0) >= bound() - tol


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"m": 10, "guesses": 11, "correct": 5}, ValueError),
    ({"m": 10, "guesses": 5, "correct": 6}, ValueError),
    ({"m": 0, "guesses": 0, "correct": 0}, ValueError),
    ({"m": 10, "guesses": 5.0, "correct": 5}, TypeError),
    ({"m": 10, "guesses": 5, "correct": True}, TypeError),
])
def test_counts_are_checked(kwargs, error) -> None:
    with pytest.raises(error):
        epsilon_lower_bound(**kwargs, delta=1e-5)


@pytest.mark.parametrize(("name", "value"), [("beta", 0.0), ("beta", 1.0), ("delta", 1.0), ("delta", -1e-9),
                                             ("delta", float("nan"))])
def test_levels_are_checked(name, value) -> None:
    args = {"m": 10, "guesses": 5, "correct": 5, "delta": 1e-5, "beta": 0.05, name: value}
    with pytest.raises(ValueError, match=name):
        epsilon_lower_bound(**args)


def test_epsilon_is_checked() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        p_value(m=10, guesses=5, correct=5, epsilon=-0.1, delta=0.0)
