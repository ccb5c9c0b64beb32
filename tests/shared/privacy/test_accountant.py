"""The Accountant interface: one shared suite, subclassed per implementation with its config only."""

from __future__ import annotations

import json
import math
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import create_accountant

from shared.errors import ConfigError
from shared.privacy.accountant import Accountant, merge_history
from shared.privacy.prv import PRVAccountant
from shared.privacy.rdp import RDPAccountant
from shared.privacy.registry import make_accountant

DELTA = 1e-5


class AccountantSuite:
    """Shared contract; subclasses set ``name``, ``cls`` and the pinned ε for (σ=1, q=0.01, 1000 steps, δ=1e-5)."""

    name: ClassVar[str]
    cls: ClassVar[type]
    known_epsilon: ClassVar[float]

    def test_public_api(self) -> None:
        acc = self.cls()
        assert isinstance(acc, Accountant)
        assert acc.mechanism == self.name
        assert type(make_accountant(self.name)) is self.cls

    def test_fresh_and_zero_steps_spend_nothing(self) -> None:
        acc = self.cls()
        assert acc.epsilon(delta=DELTA) == 0.0
        acc.step(noise_multiplier=1.0, sample_rate=0.01, steps=0)
        assert acc.history == [] and acc.epsilon(delta=DELTA) == 0.0

    def test_save_reload_round_trip_gives_the_same_epsilon(self) -> None:
        acc = self.cls()
        acc.step(noise_multiplier=1.1, sample_rate=0.02, steps=30)
        acc.step(noise_multiplier=0.9, sample_rate=1 / 3, steps=7)
        saved = json.loads(json.dumps(acc.state_dict()))  # must survive JSON unchanged
        assert saved == {"mechanism": self.name, "history": [[1.1, 0.02, 30], [0.9, 1 / 3, 7]]}
        twin = self.cls()
        twin.load_state_dict(saved)
        assert twin.history == acc.history
        assert twin.epsilon(delta=DELTA) == acc.epsilon(delta=DELTA)

    def test_history_merges_consecutive_identical_entries(self) -> None:
        acc = self.cls()
        acc.step(noise_multiplier=1.0, sample_rate=0.1, steps=3)
        acc.step(noise_multiplier=1.0, sample_rate=0.1)
        acc.step(noise_multiplier=2.0, sample_rate=0.1, steps=2)
        acc.step(noise_multiplier=1.0, sample_rate=0.1, steps=5)
        assert acc.history == [(1.0, 0.1, 4), (2.0, 0.1, 2), (1.0, 0.1, 5)]
        assert acc.state_dict()["history"] == [[1.0, 0.1, 4], [2.0, 0.1, 2], [1.0, 0.1, 5]]

    def test_multi_step_equals_single_steps_and_opacus_own_history(self) -> None:
        ours, theirs = self.cls(), create_accountant(self.name)
        for _ in range(5):
            ours.step(noise_multiplier=1.3, sample_rate=0.05)
            theirs.step(noise_multiplier=1.3, sample_rate=0.05)
        bulk = self.cls()
        bulk.step(noise_multiplier=1.3, sample_rate=0.05, steps=5)
        assert ours.history == bulk.history == theirs.history == [(1.3, 0.05, 5)]

    def test_known_value_matches_opacus(self) -> None:
        acc = self.cls()
        acc.step(noise_multiplier=1.0, sample_rate=0.01, steps=1000)
        reference = create_accountant(self.name)
        reference.history = [(1.0, 0.01, 1000)]  # what 1000 Opacus steps leave (see the test above)
        assert acc.epsilon(delta=DELTA) == float(reference.get_epsilon(DELTA))
        assert acc.epsilon(delta=DELTA) == pytest.approx(self.known_epsilon, rel=5e-3)

    def test_epsilon_grows_with_steps(self) -> None:
        values = []
        for steps in (1, 10, 100, 1000):
            acc = self.cls()
            acc.step(noise_multiplier=1.0, sample_rate=0.05, steps=steps)
            values.append(acc.epsilon(delta=DELTA))
        assert values == sorted(values) and values[0] < values[-1]

    def test_property_epsilon_is_monotone_in_steps(self) -> None:
        # @given sits on an inner function: one per implementation, so Hypothesis sees one executor each
        @settings(max_examples=4, deadline=None)
        @given(steps=st.integers(min_value=1, max_value=100), extra=st.integers(min_value=1, max_value=100),
               sigma=st.floats(min_value=0.6, max_value=4.0), q=st.floats(min_value=0.001, max_value=0.3))
        def check(steps: int, extra: int, sigma: float, q: float) -> None:
            acc = self.cls()
            acc.step(noise_multiplier=sigma, sample_rate=q, steps=steps)
            before = acc.epsilon(delta=DELTA)
            acc.step(noise_multiplier=sigma, sample_rate=q, steps=extra)
            # PRV's ε is a numerical upper bound (error ≤ 0.01), so allow that much slack
            assert acc.epsilon(delta=DELTA) >= before - 0.01

        check()

    @pytest.mark.parametrize(("kwargs", "match"), [
        ({"noise_multiplier": 0.0, "sample_rate": 0.1}, r"noise_multiplier .* \(0, inf\), got 0.0"),
        ({"noise_multiplier": -1.0, "sample_rate": 0.1}, "noise_multiplier"),
        ({"noise_multiplier": math.nan, "sample_rate": 0.1}, "noise_multiplier"),
        ({"noise_multiplier": 1.0, "sample_rate": 0.0}, r"sample_rate .* \(0, 1\], got 0.0"),
        ({"noise_multiplier": 1.0, "sample_rate": 1.5}, "sample_rate"),
        ({"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": -1}, "steps must be an integer ≥ 0, got -1"),
        ({"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 2.5}, "steps"),
        ({"noise_multiplier": True, "sample_rate": 0.1}, "noise_multiplier must be a number"),
    ])
    def test_step_rejects_out_of_range_arguments(self, kwargs: dict, match: str) -> None:
        acc = self.cls()
        with pytest.raises(ValueError, match=match):
            acc.step(**kwargs)
        assert acc.history == []

    def test_arguments_are_keyword_only_and_typos_fail(self) -> None:
        acc = self.cls()
        with pytest.raises(TypeError):
            acc.step(1.0, 0.1)  # type: ignore[misc]
        with pytest.raises(TypeError):
            acc.step(noise_multiplier=1.0, sample_rate=0.1, step=3)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            acc.epsilon(1e-5)  # type: ignore[misc]
        for delta in (0.0, 1.0, -1e-5):
            with pytest.raises(ConfigError, match=r"delta must be a finite number in \(0, 1\)"):
                acc.epsilon(delta=delta)

    @pytest.mark.parametrize("bad", [
        None, {"history": []}, {"mechanism": "gdp", "history": []}, {"mechanism": "?", "history": [], "extra": 1},
        {"mechanism": "NAME", "history": [[1.0, 0.1]]}, {"mechanism": "NAME", "history": [[1.0, 2.0, 3]]},
        {"mechanism": "NAME", "history": [[1.0, 0.1, 0]]}, {"mechanism": "NAME", "history": "[]"},
    ])
    def test_load_rejects_malformed_or_foreign_state(self, bad: dict | None) -> None:
        if isinstance(bad, dict) and bad.get("mechanism") == "NAME":
            bad = {**bad, "mechanism": self.name}
        acc = self.cls()
        acc.step(noise_multiplier=1.0, sample_rate=0.1)
        with pytest.raises(ConfigError):
            acc.load_state_dict(bad)  # type: ignore[arg-type]
        assert acc.history == [(1.0, 0.1, 1)]  # unchanged on failure

    def test_load_merges_and_accepts_integral_floats(self) -> None:
        acc = self.cls()
        acc.load_state_dict({"mechanism": self.name, "history": [[1, 0.1, 2], [1.0, 0.1, 3]]})
        assert acc.history == [(1.0, 0.1, 5)]

    def test_copy_is_independent(self) -> None:
        acc = self.cls()
        acc.step(noise_multiplier=1.0, sample_rate=0.1)
        twin = acc.copy()
        twin.step(noise_multiplier=1.0, sample_rate=0.1)
        assert acc.history == [(1.0, 0.1, 1)] and twin.history == [(1.0, 0.1, 2)]


class TestRDPAccountant(AccountantSuite):
    name, cls, known_epsilon = "rdp", RDPAccountant, 2.10  # computed once with Opacus 1.6.0


class TestPRVAccountant(AccountantSuite):
    name, cls, known_epsilon = "prv", PRVAccountant, 1.84  # computed once with Opacus 1.6.0


def test_merge_history_sums_only_consecutive_equal_entries() -> None:
    assert merge_history([(1.0, 0.1, 1), (1.0, 0.1, 2), (1.0, 0.2, 1), (1.0, 0.1, 1)]) == [
        (1.0, 0.1, 3), (1.0, 0.2, 1), (1.0, 0.1, 1)]
