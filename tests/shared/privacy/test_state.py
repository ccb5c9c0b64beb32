"""PrivacyState: the site's lifetime spend survives reloads, refuses overruns and bad files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import shared.privacy.state as state_module
from shared.errors import ConfigError, InputError
from shared.privacy.budget import BudgetExceededError, MechanismPlan, PrivacyBudget, PrivacyWarning, epsilon_for
from shared.privacy.state import BudgetRaiseError, FingerprintMismatchError, PrivacyState
from shared.privacy.state_file import STATE_FILE

FP = "sha256:" + "ab" * 32
BUDGET = PrivacyBudget(epsilon=4.0, delta=1e-5)
ROUND = {"steps": 20, "noise_multiplier": 1.0, "sample_rate": 0.05}  # ε ≈ 1.4 after one round, ≈ 3.6 after four (rdp)
EXTRA = {"clip_norm": 1.0, "noise_multiplicity": 2}


def _open(folder: Path, **overrides) -> PrivacyState:
    args = {"fingerprint": FP, "budget": BUDGET, "accountant": "rdp", **overrides}
    return PrivacyState.load_or_create(folder, **args)


def _record(state: PrivacyState, round_id: str) -> float:
    return state.record_round(round_id=round_id, **ROUND, **EXTRA)


def test_new_state_is_written_at_once_and_spends_nothing(tmp_path) -> None:
    state = _open(tmp_path / "site")
    doc = json.loads((tmp_path / "site" / STATE_FILE).read_text())
    assert doc["fingerprint"] == FP and doc["accountant"] == {"mechanism": "rdp", "history": []}
    assert doc["budget"] == {"epsilon": 4.0, "delta": 1e-5} and doc["rounds"] == [] and doc["plan"] is None
    assert state.epsilon() == 0.0 and state.rounds == () and state.mechanism == "rdp"


def test_two_plus_two_rounds_with_reloads_equal_four_rounds_in_one_go(tmp_path) -> None:
    single = _open(tmp_path / "single")
    single_eps = [_record(single, f"r{i}") for i in range(4)]
    first = _open(tmp_path / "split")
    split_eps = [_record(first, "r0"), _record(first, "r1")]
    resumed = _open(tmp_path / "split")
    assert resumed.epsilon() == first.epsilon() == split_eps[-1]  # ε continues, nothing reset
    split_eps += [_record(resumed, "r2"), _record(resumed, "r3")]
    again = PrivacyState.read(tmp_path / "split")
    assert split_eps == single_eps and again.epsilon() == single.epsilon()
    assert again.history == single.history == [(1.0, 0.05, 80)]
    assert single_eps == sorted(single_eps)
    assert single_eps[-1] == epsilon_for(noise_multiplier=1.0, sample_rate=0.05, steps=80, delta=1e-5)
    rec = again.rounds[-1]
    assert (rec.round_id, rec.steps, rec.clip_norm, rec.noise_multiplicity, rec.epsilon, rec.delta, rec.accountant) == (
        "r3", 20, 1.0, 2, single_eps[-1], 1e-5, "rdp")


def test_epsilon_after_and_can_afford_change_nothing(tmp_path) -> None:
    state = _open(tmp_path)
    _record(state, "r0")
    before = (tmp_path / STATE_FILE).read_bytes()
    assert state.epsilon_after(**ROUND) > state.epsilon()
    assert state.can_afford(**ROUND)
    assert not state.can_afford(steps=2000, noise_multiplier=1.0, sample_rate=0.05)
    assert (tmp_path / STATE_FILE).read_bytes() == before and len(state.rounds) == 1


def test_round_over_budget_is_refused_and_nothing_is_charged(tmp_path) -> None:
    state = _open(tmp_path)
    for i in range(4):
        _record(state, f"r{i}")
    before = (tmp_path / STATE_FILE).read_bytes()
    assert not state.can_afford(**ROUND)
    with pytest.raises(BudgetExceededError, match=r"round 'r4' refused: ε spent so far 3\.\d+, ε after it would be "
                                                  r"4\.\d+, budget ε = 4 at δ = 1e-05 \(rdp accountant\)"):
        _record(state, "r4")
    assert (tmp_path / STATE_FILE).read_bytes() == before and len(_open(tmp_path).rounds) == 4


def test_lowering_the_budget_below_the_spend_keeps_history_and_refuses(tmp_path) -> None:
    _record(_open(tmp_path), "r0")
    _record(_open(tmp_path), "r1")
    spent = _open(tmp_path).epsilon()
    with pytest.warns(PrivacyWarning, match="budget changed .* still counts"):
        lowered = _open(tmp_path, budget=PrivacyBudget(epsilon=1.0, delta=1e-5))
    assert lowered.epsilon() == spent > 1.0 and len(lowered.rounds) == 2
    assert not lowered.can_afford(steps=1, noise_multiplier=10.0, sample_rate=0.05)
    with pytest.raises(BudgetExceededError, match="budget ε = 1 at"):
        _record(lowered, "r2")
    with pytest.raises(BudgetRaiseError, match="a budget is raised only on purpose: set budget-raise = true"):
        _open(tmp_path, budget=PrivacyBudget(epsilon=8.0, delta=1e-5))  # an edited config raises nothing
    with pytest.raises(BudgetRaiseError):
        _open(tmp_path, budget=PrivacyBudget(epsilon=1.0, delta=1e-4))  # a larger δ is a raise too
    with pytest.warns(PrivacyWarning):
        raised = _open(tmp_path, budget=PrivacyBudget(epsilon=8.0, delta=1e-5), allow_budget_raise=True)
    assert raised.epsilon() == spent and _record(raised, "r2") > spent
    changes = raised.to_json()["changes"]
    assert [(c["what"], c["new"]["epsilon"], c["after_rounds"]) for c in changes] == [("budget", 1.0, 2), ("budget", 8.0, 2)]


def test_another_dataset_is_refused(tmp_path) -> None:
    _record(_open(tmp_path), "r0")
    with pytest.raises(FingerprintMismatchError, match=rf"{STATE_FILE}: .*fingerprint 'sha256:abab.*'sha256:other'"):
        _open(tmp_path, fingerprint="sha256:other")
    with pytest.raises(ConfigError, match="fingerprint"):
        _open(tmp_path, fingerprint="")


@pytest.mark.parametrize("damage", ["truncate", "empty", "missing_key", "tampered_history", "bad_entry", "other_version"])
def test_a_damaged_state_file_is_an_input_error_and_is_left_alone(tmp_path, damage: str) -> None:
    state = _open(tmp_path)
    _record(state, "r0")
    path = tmp_path / STATE_FILE
    text = path.read_text()
    doc = json.loads(text)
    if damage == "truncate":
        text = text[: len(text) // 2]
    elif damage == "empty":
        text = ""
    else:
        if damage == "missing_key":
            del doc["rounds"]
        elif damage == "tampered_history":
            doc["accountant"]["history"] = [[1.0, 0.05, 5]]  # fewer steps than the rounds charged
        elif damage == "bad_entry":
            doc["accountant"]["history"] = [[-1.0, 0.05, 20]]
        else:
            doc["version"] = 99
        text = json.dumps(doc)
    path.write_text(text)
    with pytest.raises(InputError, match=rf"^{path}: .*(restore it from a backup|Restore it from a backup)"):
        _open(tmp_path)
    assert path.read_text() == text  # never silently replaced by a fresh state


def test_a_state_changed_by_another_process_is_not_overwritten(tmp_path) -> None:
    mine, theirs = _open(tmp_path), _open(tmp_path)
    _record(theirs, "r0")
    with pytest.raises(InputError, match="changed on disk since it was loaded"):
        _record(mine, "r1")
    assert [r.round_id for r in _open(tmp_path).rounds] == ["r0"]


def test_round_ids_are_unique_and_arguments_checked(tmp_path) -> None:
    state = _open(tmp_path)
    _record(state, "run-1:1")
    with pytest.raises(ConfigError, match="round_id 'run-1:1' is already recorded"):
        _record(state, "run-1:1")
    with pytest.raises(ConfigError, match="steps must be an integer ≥ 1, got 0"):
        state.record_round(round_id="x", steps=0, noise_multiplier=1.0, sample_rate=0.05, **EXTRA)
    with pytest.raises(ConfigError, match="clip_norm"):
        state.record_round(round_id="x", **ROUND, clip_norm=0.0, noise_multiplicity=1)
    with pytest.raises(TypeError):
        state.record_round("x", **ROUND, **EXTRA)  # type: ignore[misc]
    assert len(state.rounds) == 1


def test_a_failed_save_charges_nothing(tmp_path, monkeypatch) -> None:
    state = _open(tmp_path)

    def fail(path: Path, data: bytes, **kwargs) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(state_module, "write_bytes_atomic", fail)
    with pytest.raises(OSError, match="No space left"):
        _record(state, "r0")
    monkeypatch.undo()
    assert state.epsilon() == 0.0 and state.rounds == () and _record(state, "r0") > 0


def test_plan_is_stored_and_a_changed_plan_is_logged(tmp_path) -> None:
    plan = MechanismPlan(noise_multiplier=1.0, sample_rate=0.05, steps_per_round=20, rounds=4, clip_norm=1.0)
    assert _open(tmp_path, plan=plan).plan == plan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _open(tmp_path).plan == plan and _open(tmp_path, plan=plan).plan == plan  # unchanged: no warning
    longer = MechanismPlan(noise_multiplier=1.2, sample_rate=0.05, steps_per_round=20, rounds=6, clip_norm=1.0)
    with pytest.warns(PrivacyWarning, match="plan changed"):
        assert _open(tmp_path, plan=longer).plan == longer


def test_switching_accountant_reaccounts_the_whole_history(tmp_path) -> None:
    rdp = _open(tmp_path)
    _record(rdp, "r0")
    with pytest.warns(PrivacyWarning, match="accountant changed from rdp to prv"):
        prv = _open(tmp_path, accountant="prv")
    assert prv.mechanism == "prv" and prv.history == rdp.history
    assert 0 < prv.epsilon() < rdp.epsilon()  # PRV is tighter; the history is kept, not reset


def test_calibrate_remaining_uses_what_is_left(tmp_path) -> None:
    state = _open(tmp_path)
    _record(state, "r0")
    sigma = state.calibrate_remaining(sample_rate=0.05, steps=60)
    assert state.epsilon_after(steps=60, noise_multiplier=sigma, sample_rate=0.05) <= BUDGET.epsilon
    assert state.epsilon_after(steps=60, noise_multiplier=sigma * 0.95, sample_rate=0.05) > BUDGET.epsilon - 0.05
    with pytest.warns(PrivacyWarning):
        spent = _open(tmp_path, budget=PrivacyBudget(epsilon=1.0, delta=1e-5))
    with pytest.raises(BudgetExceededError, match="a plan of 60 more steps refused"):
        spent.calibrate_remaining(sample_rate=0.05, steps=60)


def test_read_without_a_state_is_an_input_error(tmp_path) -> None:
    with pytest.raises(InputError, match=f"{STATE_FILE}: no privacy state here"):
        PrivacyState.read(tmp_path)
