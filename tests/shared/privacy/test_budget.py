"""PrivacyBudget, calibrate_noise (never overshoots), plan_mechanism and ε per round."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import ConfigError, RareGraphError
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


@pytest.mark.parametrize(("epsilon", "delta", "match"), [
    (0.0, 1e-5, r"epsilon must be a finite number in \(0, inf\), got 0.0"),
    (-1.0, 1e-5, "epsilon"), (math.inf, 1e-5, "epsilon"), (math.nan, 1e-5, "epsilon"),
    (1.0, 0.0, r"delta must be a finite number in \(0, 1\), got 0.0"), (1.0, 1.0, "delta"), (1.0, "1e-5", "delta"),
])
def test_budget_rejects_out_of_range_values(epsilon: float, delta: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PrivacyBudget(epsilon=epsilon, delta=delta)


def test_budget_is_frozen_keyword_only_and_json_ready() -> None:
    budget = PrivacyBudget(epsilon=4, delta=1e-5)
    assert budget.to_json() == {"epsilon": 4.0, "delta": 1e-5} and isinstance(budget.epsilon, float)
    with pytest.raises(AttributeError):
        budget.epsilon = 5.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        PrivacyBudget(4.0, 1e-5)  # type: ignore[misc]


def test_check_delta_warns_only_when_delta_is_not_below_one_over_n() -> None:
    budget = PrivacyBudget(epsilon=1.0, delta=1e-3)
    with pytest.warns(PrivacyWarning, match=r"delta = 0.001 is not below 1/records = 1/1000"):
        budget.check_delta(1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        budget.check_delta(999)  # 1/999 > δ
    with pytest.raises(ConfigError, match="n_records"):
        budget.check_delta(0)


def test_calibrated_sigma_meets_the_target_with_opacus_precision() -> None:
    sigma = calibrate_noise(epsilon=4.0, delta=1e-5, sample_rate=32 / 300, steps=250)
    eps = epsilon_for(noise_multiplier=sigma, sample_rate=32 / 300, steps=250, delta=1e-5)
    assert 4.0 - 0.01 <= eps <= 4.0  # tight: within the search tolerance, never above
    assert sigma == pytest.approx(2.168, abs=1e-3)  # computed once with Opacus 1.6.0 (rdp)


def test_calibrated_sigma_with_prv_does_not_overshoot() -> None:
    sigma = calibrate_noise(epsilon=3.0, delta=1e-5, sample_rate=0.1, steps=100, accountant="prv")
    assert epsilon_for(noise_multiplier=sigma, sample_rate=0.1, steps=100, delta=1e-5, accountant="prv") <= 3.0
    assert sigma < calibrate_noise(epsilon=3.0, delta=1e-5, sample_rate=0.1, steps=100)  # PRV is tighter than RDP


# σ ≳ 0.5 (realistic DP-SGD): much smaller σ makes each RDP evaluation slow
@settings(max_examples=6, deadline=None)
@given(epsilon=st.floats(min_value=0.5, max_value=6.0), q=st.floats(min_value=0.005, max_value=0.2),
       steps=st.integers(min_value=20, max_value=400))
def test_property_calibrated_sigma_never_overshoots(epsilon: float, q: float, steps: int) -> None:
    sigma = calibrate_noise(epsilon=epsilon, delta=1e-5, sample_rate=q, steps=steps)
    assert epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=1e-5) <= epsilon


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sample_rate": 0.0}, "sample_rate"), ({"sample_rate": 1.01}, "sample_rate"), ({"steps": 0}, "steps must be an integer ≥ 1"),
    ({"accountant": "gdp"}, "known accountants: prv, rdp"), ({"epsilon": -1.0}, "epsilon"), ({"delta": 2.0}, "delta"),
])
def test_calibrate_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"epsilon": 1.0, "delta": 1e-5, "sample_rate": 0.1, "steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        calibrate_noise(**args)


def test_calibrate_refuses_an_unreachable_budget() -> None:
    with pytest.raises(ConfigError, match="too small for 10 steps at sample rate 1"):
        calibrate_noise(epsilon=1e-9, delta=1e-10, sample_rate=1.0, steps=10)


def test_plan_mechanism_uses_batch_over_records_and_reaches_the_budget_after_the_last_round() -> None:
    budget = PrivacyBudget(epsilon=4.0, delta=1e-5)
    plan = plan_mechanism(budget=budget, records=300, batch_size=32, steps_per_round=50, rounds=5, clip_norm=0.5)
    assert plan.sample_rate == 32 / 300 and plan.clip_norm == 0.5 and plan.noise_multiplicity == 1
    assert plan.noise_multiplier == calibrate_noise(epsilon=4.0, delta=1e-5, sample_rate=32 / 300, steps=250)
    per_round = epsilon_per_round(plan, delta=1e-5)
    assert len(per_round) == 5 and per_round == sorted(per_round)
    assert per_round[-1] == epsilon_for(noise_multiplier=plan.noise_multiplier, sample_rate=32 / 300, steps=250,
                                        delta=1e-5) <= 4.0


def test_plan_mechanism_checks_batch_size_and_warns_about_delta() -> None:
    with pytest.raises(ConfigError, match="batch_size must be at most records = 10"):
        plan_mechanism(budget=PrivacyBudget(epsilon=4.0, delta=1e-5), records=10, batch_size=11, steps_per_round=1, rounds=1)
    with pytest.warns(PrivacyWarning, match="1/records"):
        plan_mechanism(budget=PrivacyBudget(epsilon=1.0, delta=0.01), records=100, batch_size=5, steps_per_round=20, rounds=2)


@pytest.mark.parametrize(("field", "value"), [("noise_multiplier", 0.0), ("sample_rate", 2.0), ("steps_per_round", 0),
                                              ("rounds", 0), ("clip_norm", -1.0), ("noise_multiplicity", 0)])
def test_mechanism_plan_validates_every_field(field: str, value: float) -> None:
    args = {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps_per_round": 1, "rounds": 1, "clip_norm": 1.0,
            "noise_multiplicity": 1, field: value}
    with pytest.raises(ConfigError, match=field):
        MechanismPlan(**args)


def test_budget_exceeded_error_names_spent_after_and_budget() -> None:
    exc = BudgetExceededError(what="round '3'", spent=3.5, after=4.25, budget=PrivacyBudget(epsilon=4.0, delta=1e-5),
                              mechanism="rdp")
    assert isinstance(exc, RareGraphError)
    assert str(exc).startswith("round '3' refused: ε spent so far 3.5, ε after it would be 4.25, budget ε = 4 at δ = 1e-05")
