"""Budget events in the ledger, and the two ways back from a lost privacy folder: a ledger copy
(restore) and, with no copy left, an auditor's acknowledgement that carries ε forward."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from shared.errors import ConfigError, InputError, SignatureError
from shared.privacy.audit.audit import audit_ledgers
from shared.privacy.budget import PrivacyBudget
from shared.privacy.ledger import Ledger, LedgerEntry, LedgerError, key_use_path, read_ledger, verify_chain
from shared.privacy.ledger.carry import make_acknowledgement, verify_acknowledgement
from shared.privacy.ledger.consortium import ConsortiumRecord
from shared.privacy.ledger.restore import carry_forward_folder, restore_privacy_folder
from shared.privacy.state import PrivacyState
from shared.signing.keys import load_private_key, load_public_key, new_keypair

SITE = "site-1"
FP = "sha256:" + "ab" * 32
BUDGET = PrivacyBudget(epsilon=8.0, delta=1e-5)
MECH = {"steps": 20, "noise_multiplier": 1.0, "sample_rate": 0.05, "clip_norm": 1.0, "noise_multiplicity": 1}


@pytest.fixture
def keys(tmp_path):
    site_key, site_pub = new_keypair(tmp_path / "keys" / SITE)
    auditor_key, auditor_pub = new_keypair(tmp_path / "keys" / "auditor")
    other_key, other_pub = new_keypair(tmp_path / "keys" / "someone")
    (tmp_path / "site-keys").mkdir()
    shutil.copy(site_pub, tmp_path / "site-keys" / f"{SITE}.pub")
    return {"site": site_key, "site_pub": site_pub, "auditor": auditor_key, "auditor_pub": auditor_pub,
            "other": other_key, "other_pub": other_pub}


def _open(folder, keys, budget: PrivacyBudget = BUDGET, raise_budget: bool = False) -> tuple[PrivacyState, Ledger]:
    """What a site does before a round: ledger (checked against its key's record), state, reconcile, budget event."""
    ledger = Ledger(folder / "ledger.jsonl", SITE, load_private_key(keys["site"]), key_use=key_use_path(keys["site"]))
    ledger.check_key_use(FP)
    state = PrivacyState.load_or_create(folder, fingerprint=FP, budget=budget, accountant="rdp",
                                        allow_budget_raise=raise_budget)
    ledger.reconcile(state)
    ledger.append_budget(state, run_id="run", server_round=0)
    return state, ledger


def _train(folder, keys, run: str, rounds: range, **kwargs) -> Ledger:
    state, ledger = _open(folder, keys, **kwargs)
    for r in rounds:
        state.record_round(round_id=f"{run}:{r}", **MECH)
        ledger.append_round(state, run_id=run, server_round=r)
    return ledger


def _audit(tmp_path, ledger: Ledger, auditor_pub=None):
    folder = tmp_path / "audit-in"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    shutil.copy(ledger.path, folder / f"{SITE}.jsonl")
    return audit_ledgers(folder, tmp_path / "site-keys", auditor_pub=auditor_pub)


def test_a_budget_change_is_its_own_signed_entry_and_the_audit_shows_it(tmp_path, keys) -> None:
    folder = tmp_path / "privacy"
    ledger = _train(folder, keys, "r1", range(1, 3))
    with pytest.raises(InputError, match="a budget is raised only on purpose"):
        _open(folder, keys, budget=PrivacyBudget(epsilon=50.0, delta=2e-5))
    ledger = _train(folder, keys, "r2", range(1, 2), budget=PrivacyBudget(epsilon=50.0, delta=2e-5), raise_budget=True)
    kinds = [(e.kind, e.budget_epsilon, e.delta) for e in ledger.entries]
    assert kinds == [("train", 8.0, 1e-5), ("train", 8.0, 1e-5), ("budget", 50.0, 2e-5), ("train", 50.0, 2e-5)]
    event = ledger.entries[2]
    assert event.mechanism is None and event.previous_budget == {"epsilon": 8.0, "delta": 1e-5}
    assert event.epsilon < ledger.entries[1].epsilon  # ε at the larger δ: not a reset
    assert verify_chain(list(ledger.entries), load_public_key(keys["site_pub"]), site_id=SITE) == []
    assert _open(folder, keys, budget=PrivacyBudget(epsilon=50.0, delta=2e-5))[1].head.seq == 3  # no second event

    result = _audit(tmp_path, ledger)
    assert [p.kind for p in result.all_problems] == ["budget-raised"]
    assert "by a signed budget entry" in result.all_problems[0].message
    assert [c.agrees for c in result.sites[0].entries] == [True] * 4  # the event's ε is recomputed at its δ too
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(f'[{SITE}]\nepsilon = 50.0\ndelta = 2e-5\n')
    assert audit_ledgers(tmp_path / "audit-in", tmp_path / "site-keys", budgets).ok


def test_event_entries_are_validated(tmp_path, keys) -> None:
    ledger = _train(tmp_path / "privacy", keys, "r1", range(1, 2))
    raw = ledger.entries[0].to_json()
    with pytest.raises(ConfigError, match="mechanism must be null in a budget entry"):
        LedgerEntry.from_json({**raw, "kind": "budget", "previous_budget": {"epsilon": 1.0, "delta": 1e-5}})
    with pytest.raises(ConfigError, match=r"fields \(budget\): missing \['previous_budget'\]"):
        LedgerEntry.from_json({**raw, "kind": "budget", "mechanism": None})
    with pytest.raises(ConfigError, match=r"fields \(train\).*unknown \['carried'\]"):
        LedgerEntry.from_json({**raw, "carried": {}})
    with pytest.raises(ConfigError, match="carried.delta"):
        LedgerEntry.from_json({**raw, "kind": "carry", "mechanism": None,
                               "carried": {"epsilon": 1.0, "delta": 2.0, "acknowledgement": {}}})


def _lose_everything(tmp_path, keys) -> tuple[ConsortiumRecord, Ledger, dict]:
    """A site trains 3 rounds, the coordinator records its head, then every copy is lost; the auditor
    signs the acknowledgement from the record."""
    ledger = _train(tmp_path / "privacy", keys, "r1", range(1, 4))
    record = ConsortiumRecord(tmp_path / "consortium.json")
    record.check(ledger.entries)
    record.advance(ledger.entries, run_id="r1")
    head = record.head(SITE, FP)
    assert (head["seq"], head["delta"], head["start"]) == (2, 1e-5, ledger.entries[0].entry_hash)
    shutil.rmtree(tmp_path / "privacy")
    ack = make_acknowledgement(site_id=SITE, dataset_fingerprint=FP, epsilon=head["epsilon"], delta=head["delta"],
                               lost_head={k: head[k] for k in ("seq", "hash", "key_id", "run_id")},
                               reason="disk replaced; no backup", auditor_key=load_private_key(keys["auditor"]))
    (tmp_path / "ack.json").write_text(json.dumps(ack))
    return record, ledger, ack


def test_with_no_copy_left_an_auditor_acknowledgement_carries_the_epsilon_forward(tmp_path, keys) -> None:
    record, old, ack = _lose_everything(tmp_path, keys)
    spent = old.head.epsilon
    folder = tmp_path / "privacy"
    with pytest.raises(LedgerError, match="up to seq 2"):
        _open(folder, keys)  # the site refuses to start again from 0
    assert not folder.exists() or not any(folder.iterdir())
    with pytest.raises(SignatureError):
        carry_forward_folder(tmp_path / "ack.json", folder, site_key=keys["site"], auditor_pub=keys["other_pub"],
                             budget=PrivacyBudget(epsilon=8.0, delta=2e-5))
    with pytest.raises(InputError, match="leaves nothing after the carried"):  # δ budget spent by δ₀
        carry_forward_folder(tmp_path / "ack.json", folder, site_key=keys["site"], auditor_pub=keys["auditor_pub"],
                             budget=BUDGET)
    assert not folder.exists()

    budget = PrivacyBudget(epsilon=8.0, delta=2e-5)
    carry_forward_folder(tmp_path / "ack.json", folder, site_key=keys["site"], auditor_pub=keys["auditor_pub"],
                         budget=budget)
    ledger = _train(folder, keys, "r2", range(1, 3), budget=budget)
    assert [e.kind for e in ledger.entries] == ["carry", "train", "train"]
    state = PrivacyState.read(folder)
    fresh = PrivacyState.load_or_create(tmp_path / "fresh", fingerprint=FP, budget=PrivacyBudget(epsilon=8.0, delta=1e-5),
                                        accountant="rdp")
    for r in (1, 2):
        fresh.record_round(round_id=f"x:{r}", **MECH)
    assert math.isclose(state.epsilon(), spent + fresh.epsilon(), rel_tol=1e-9)  # ε₀ + ε(δ − δ₀): basic composition

    with pytest.raises(LedgerError, match="no auditor key is configured"):
        record.check(ledger.entries)
    trusting = ConsortiumRecord(record.path, auditor_pub=load_public_key(keys["auditor_pub"]))
    trusting.check(ledger.entries)
    trusting.advance(ledger.entries, run_id="r2")
    assert trusting.head(SITE, FP)["seq"] == 2 and trusting.head(SITE, FP)["start"] == ledger.entries[0].entry_hash
    ConsortiumRecord(record.path, auditor_pub=load_public_key(keys["auditor_pub"])).check(ledger.entries)

    result = _audit(tmp_path, ledger)
    assert [p.kind for p in result.all_problems] == ["carry-unverified"]
    result = _audit(tmp_path, ledger, auditor_pub=load_public_key(keys["auditor_pub"]))
    assert result.ok and [c.agrees for c in result.sites[0].entries] == [True, True, True]
    assert not _audit(tmp_path, ledger, auditor_pub=load_public_key(keys["other_pub"])).ok

    copy = tmp_path / "copy.jsonl"
    shutil.copy(ledger.path, copy)
    shutil.rmtree(folder)
    restored = restore_privacy_folder(copy, folder, site_key=keys["site"])  # a carried ledger restores too
    assert restored.epsilon == ledger.head.epsilon and PrivacyState.read(folder).carried == state.carried


def test_an_acknowledgement_must_name_the_recorded_head(tmp_path, keys) -> None:
    record, old, ack = _lose_everything(tmp_path, keys)
    low = make_acknowledgement(site_id=SITE, dataset_fingerprint=FP, epsilon=0.1, delta=1e-5,
                               lost_head=ack["lost_head"], reason="understated", auditor_key=load_private_key(keys["auditor"]))
    (tmp_path / "low.json").write_text(json.dumps(low))
    with pytest.raises(LedgerError, match="it would forget a charge"):  # the site key's own record knows better
        carry_forward_folder(tmp_path / "low.json", tmp_path / "privacy", site_key=keys["site"],
                             auditor_pub=keys["auditor_pub"], budget=PrivacyBudget(epsilon=8.0, delta=2e-5))
    new_key, _ = new_keypair(tmp_path / "keys" / "new-site")  # a site whose key was lost too has no such record
    carry_forward_folder(tmp_path / "low.json", tmp_path / "privacy", site_key=new_key,
                         auditor_pub=keys["auditor_pub"], budget=PrivacyBudget(epsilon=8.0, delta=2e-5))
    entries = read_ledger(tmp_path / "privacy" / "ledger.jsonl")
    trusting = ConsortiumRecord(record.path, auditor_pub=load_public_key(keys["auditor_pub"]))
    with pytest.raises(LedgerError, match="the auditor must acknowledge that head"):  # the coordinator does too
        trusting.check(entries)
    tampered = {**ack, "epsilon": 0.1}
    with pytest.raises(SignatureError):
        verify_acknowledgement(tampered, load_public_key(keys["auditor_pub"]))
