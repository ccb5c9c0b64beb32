"""The signed, hash-chained privacy ledger: a clean chain verifies, every tampering is caught."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import shared.atomic as atomic_module
from shared.errors import InputError
from shared.privacy.ledger import (
    FORMAT,
    GENESIS,
    Ledger,
    LedgerEntry,
    LedgerError,
    MechanismRecord,
    canonical_json,
    check_chain,
    export_entries,
    ledger_path,
    merge_site_entries,
    parse_entries,
    read_ledger,
    scan_ledger,
    verify_chain,
)
from shared.privacy.budget import PrivacyBudget
from shared.privacy.state import PrivacyState
from shared.signing.keys import key_id, load_private_key, load_public_key, new_keypair, sign

SITE = "hospital-a"
FP = "sha256:" + "cd" * 32
MECH = MechanismRecord(sample_rate=0.05, noise_multiplier=1.0, clip_norm=1.0, steps=20, noise_multiplicity=1)


@pytest.fixture
def keys(tmp_path):
    """Private and public keys of the site and of another site."""
    a_key, a_pub = new_keypair(tmp_path / "keys" / SITE)
    b_key, b_pub = new_keypair(tmp_path / "keys" / "hospital-b")
    return {"a": load_private_key(a_key), "a_pub": load_public_key(a_pub),
            "b": load_private_key(b_key), "b_pub": load_public_key(b_pub)}


def _append(ledger: Ledger, server_round: int, epsilon: float, **overrides) -> LedgerEntry:
    args = {"run_id": "run1", "server_round": server_round, "kind": "train", "mechanism": MECH, "accountant": "rdp",
            "epsilon": epsilon, "delta": 1e-5, "budget_epsilon": 8.0, "dataset_fingerprint": FP, **overrides}
    return ledger.append(**args)


@pytest.fixture
def chain(tmp_path, keys) -> Path:
    """A clean ledger of 5 entries, rounds 1–5."""
    ledger = Ledger(tmp_path / "site" / "ledger.jsonl", SITE, keys["a"])
    for r in range(1, 6):
        _append(ledger, r, 0.5 * r)
    return ledger.path


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _forge(key, base: dict, **changes) -> str:
    """A validly signed line: ``base`` with ``changes``, signed with ``key``."""
    body = {k: v for k, v in {**base, **changes}.items() if k != "signature"}
    return canonical_json({**body, "signature": sign(key, canonical_json(body))}).decode()


def _kinds(problems) -> set[str]:
    return {p.kind for p in problems}


def test_a_clean_chain_of_five_verifies_and_lines_are_canonical(chain, keys) -> None:
    entries = read_ledger(chain)
    assert [e.seq for e in entries] == [0, 1, 2, 3, 4] and [e.round for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS
    for before, after in zip(entries, entries[1:], strict=False):
        assert after.prev_hash == hashlib.sha256(before.line.encode()).hexdigest() == before.entry_hash
    assert verify_chain(entries, keys["a_pub"], site_id=SITE) == []
    check_chain(entries, keys["a_pub"], site_id=SITE)
    first = json.loads(_lines(chain)[0])
    assert _lines(chain)[0] == json.dumps(first, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert first["format"] == FORMAT and first["key_id"] == key_id(keys["a_pub"]) and first["site_id"] == SITE
    assert first["mechanism"] == {"sample_rate": 0.05, "noise_multiplier": 1.0, "clip_norm": 1.0, "steps": 20,
                                  "noise_multiplicity": 1, "neighbouring": "add/remove-one", "sampling": "poisson"}
    assert set(first) == {"format", "seq", "site_id", "run_id", "round", "time", "kind", "mechanism", "accountant",
                          "epsilon", "delta", "budget_epsilon", "dataset_fingerprint", "key_id", "prev_hash",
                          "signature"}
    assert first["time"].endswith("+00:00")


def test_reopening_continues_the_chain(chain, keys) -> None:
    reopened = Ledger(chain, SITE, keys["a"])
    assert len(reopened) == 5 and reopened.head.round == 5
    entry = _append(reopened, 6, 3.0)
    assert entry.seq == 5 and entry.prev_hash == read_ledger(chain)[4].entry_hash
    assert verify_chain(read_ledger(chain), keys["a_pub"], site_id=SITE) == []
    assert len(Ledger(chain, SITE, keys["a"])) == 6


@pytest.mark.parametrize(("field", "value"), [
    ("epsilon", 0.1), ("delta", 1e-6), ("budget_epsilon", 80.0), ("run_id", "run9"), ("time", "2020-01-01T00:00:00+00:00"),
    ("accountant", "prv"), ("dataset_fingerprint", "sha256:" + "00" * 32), ("kind", "evaluate"),
    ("mechanism", {**MECH.to_json(), "noise_multiplier": 5.0}), ("mechanism", {**MECH.to_json(), "steps": 1}),
])
def test_any_changed_field_breaks_the_signature(chain, keys, field, value) -> None:
    lines = _lines(chain)
    doc = json.loads(lines[2])
    doc[field] = value
    lines[2] = canonical_json(doc).decode()
    _write(chain, lines)
    problems = verify_chain(read_ledger(chain), keys["a_pub"], site_id=SITE)
    assert [(p.kind, p.seq, p.round) for p in problems] == [("signature", 2, 3)]
    assert "site hospital-a, round 3 (seq 2)" in problems[0].message
    with pytest.raises(LedgerError, match="site hospital-a, round 3"):
        Ledger(chain, SITE, keys["a"])


def test_a_dropped_entry_is_a_gap(chain, keys) -> None:
    lines = _lines(chain)
    _write(chain, lines[:2] + lines[3:])
    problems = verify_chain(read_ledger(chain), keys["a_pub"], site_id=SITE)
    assert [(p.kind, p.seq) for p in problems] == [("seq-gap", 3)]
    assert "site hospital-a, round 4" in problems[0].message and "seq 2 missing" in problems[0].message
    _write(chain, lines[1:])  # the first one dropped
    assert [(p.kind, p.seq) for p in verify_chain(read_ledger(chain), keys["a_pub"], site_id=SITE)] == [("seq-gap", 1)]


def test_two_swapped_entries_are_reordered(chain, keys) -> None:
    lines = _lines(chain)
    lines[1], lines[2] = lines[2], lines[1]
    _write(chain, lines)
    problems = verify_chain(read_ledger(chain), keys["a_pub"], site_id=SITE)
    assert [(p.kind, p.seq, p.round) for p in problems] == [("reordered", 1, 2)]
    assert "site hospital-a, round 2" in problems[0].message


def test_an_entry_replayed_under_another_site_id(tmp_path, chain, keys) -> None:
    other = Ledger(tmp_path / "b.jsonl", "hospital-b", keys["b"])
    for r in range(1, 7):
        _append(other, r, 0.5 * r)
    lines = _lines(chain)
    _write(chain, [*lines, _lines(other.path)[5]])  # site b's seq 5, as if it were a's next entry
    problems = verify_chain(read_ledger(chain), keys["a_pub"], site_id=SITE)
    assert _kinds(problems) >= {"wrong-site", "wrong-key"}
    assert all(p.seq == 5 and p.round == 6 and "site hospital-a, round 6" in p.message for p in problems)
    relabelled = json.loads(_lines(other.path)[0])
    relabelled["site_id"] = SITE  # relabelling the entry breaks b's signature, and a's key never signed it
    assert "wrong-key" in _kinds(verify_chain([LedgerEntry.from_json(relabelled)], keys["a_pub"], site_id=SITE))
    assert "signature" in _kinds(verify_chain([LedgerEntry.from_json(relabelled)], keys["b_pub"], site_id=SITE))


def test_a_fork_two_signed_entries_after_the_same_head(tmp_path, chain, keys) -> None:
    twin = tmp_path / "twin.jsonl"
    twin.write_bytes(chain.read_bytes())
    _append(Ledger(chain, SITE, keys["a"]), 6, 3.0)
    _append(Ledger(twin, SITE, keys["a"]), 6, 2.6, run_id="run2")
    _write(chain, [*_lines(chain), _lines(twin)[5]])
    problems = verify_chain(read_ledger(chain), keys["a_pub"], site_id=SITE)
    assert [(p.kind, p.seq, p.round) for p in problems] == [("fork", 5, 6)]
    assert "site hospital-a, round 6" in problems[0].message and "forks" in problems[0].message


def test_wrong_key(chain, keys) -> None:
    problems = verify_chain(read_ledger(chain), keys["b_pub"], site_id=SITE)
    assert [p.kind for p in problems] == ["wrong-key"] * 5
    assert key_id(keys["b_pub"]) in problems[0].message and "site hospital-a, round 1" in problems[0].message
    lines = _lines(chain)  # signed with b's key but claiming a's key id
    lines[4] = _forge(keys["b"], json.loads(lines[4]))
    _write(chain, lines)
    assert [(p.kind, p.round) for p in verify_chain(read_ledger(chain), keys["a_pub"], site_id=SITE)] == [
        ("signature", 5)]
    with pytest.raises(LedgerError, match="hospital-a"):
        Ledger(chain, SITE, keys["b"])


def test_a_truncated_last_line(chain, keys) -> None:
    data = chain.read_bytes()
    chain.write_bytes(data[:-40])
    entries, problems = scan_ledger(chain)
    assert len(entries) == 4 and [(p.kind, p.site) for p in problems] == [("truncated", SITE)]
    assert "site hospital-a" in problems[0].message and "after seq 3, round 4" in problems[0].message
    assert f"{chain}:5" in problems[0].message
    with pytest.raises(LedgerError, match="cut off"):
        read_ledger(chain)
    with pytest.raises(LedgerError, match="site hospital-a"):
        Ledger(chain, SITE, keys["a"])


def test_a_malformed_middle_line_names_file_and_line(chain) -> None:
    lines = _lines(chain)
    lines[1] = lines[1][:-10]
    _write(chain, lines)
    with pytest.raises(InputError, match=rf"{chain}:2: not a JSON ledger entry"):
        scan_ledger(chain)
    doc = json.loads(lines[0])
    doc["mechanism"]["sampling"] = "shuffle"
    _write(chain, [canonical_json(doc).decode()])
    with pytest.raises(InputError, match=rf"{chain}:1: invalid ledger entry: .*sampling"):
        read_ledger(chain)


def test_epsilon_past_the_budget_and_a_reset_are_flagged_and_refused(chain, keys) -> None:
    lines = _lines(chain)
    head = read_ledger(chain)[-1]
    over = _forge(keys["a"], {**head.raw, "seq": 5, "round": 6, "epsilon": 9.0, "prev_hash": head.entry_hash})
    _write(chain, [*lines, over])
    problems = verify_chain(read_ledger(chain), keys["a_pub"], site_id=SITE)
    assert [(p.kind, p.round) for p in problems] == [("over-budget", 6)]
    assert "site hospital-a, round 6" in problems[0].message and "budget ε = 8" in problems[0].message
    reset = _forge(keys["a"], {**head.raw, "seq": 5, "round": 6, "epsilon": 0.4, "prev_hash": head.entry_hash})
    _write(chain, [*lines, reset])
    problems = verify_chain(read_ledger(chain), keys["a_pub"], site_id=SITE)
    assert [(p.kind, p.round) for p in problems] == [("epsilon-decreased", 6)]
    assert "site hospital-a, round 6" in problems[0].message and "reset" in problems[0].message
    _write(chain, lines)
    ledger = Ledger(chain, SITE, keys["a"])
    with pytest.raises(LedgerError, match="past the budget"):
        _append(ledger, 6, 9.0)
    with pytest.raises(LedgerError, match="never reset"):
        _append(ledger, 6, 0.4)
    with pytest.raises(LedgerError, match="already in the ledger"):
        _append(ledger, 5, 2.6)
    assert chain.read_text().splitlines() == lines


def test_a_crash_during_append_leaves_the_old_file(chain, keys, monkeypatch) -> None:
    before = chain.read_bytes()
    ledger = Ledger(chain, SITE, keys["a"])

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        _append(ledger, 6, 3.0)
    monkeypatch.undo()
    assert chain.read_bytes() == before and not [p for p in os.listdir(chain.parent) if ".tmp-" in p]
    assert len(Ledger(chain, SITE, keys["a"])) == 5


def _state(folder: Path) -> PrivacyState:
    return PrivacyState.load_or_create(folder, fingerprint=FP, budget=PrivacyBudget(epsilon=8.0, delta=1e-5),
                                       accountant="rdp")


def _charge(state: PrivacyState, round_id: str, **mech) -> float:
    args = {"steps": 20, "noise_multiplier": 1.0, "sample_rate": 0.05, "clip_norm": 1.0, "noise_multiplicity": 1, **mech}
    return state.record_round(round_id=round_id, **args)


def test_append_round_mirrors_the_privacy_state_and_reconcile_catches_up(tmp_path, keys) -> None:
    state = _state(tmp_path / "state")
    ledger = Ledger(tmp_path / "state" / "ledger.jsonl", SITE, keys["a"])
    eps = _charge(state, "run1:1")
    entry = ledger.append_round(state, run_id="run1", server_round=1)
    record = state.rounds[0]
    assert (entry.epsilon, entry.delta, entry.accountant, entry.budget_epsilon, entry.dataset_fingerprint) == (
        eps, 1e-5, "rdp", 8.0, FP)
    assert entry.mechanism.to_json()["steps"] == 20 and entry.time == record.recorded_at
    _charge(state, "run1:1:evaluate", steps=1, noise_multiplier=20.0, sample_rate=1.0, clip_norm=5.0,
            noise_multiplicity=4)
    _charge(state, "run1:2")  # a crash before both ledger appends
    _charge(state, "legacy-id")
    with pytest.raises(LedgerError, match="has no round 'run1:3'"):
        ledger.append_round(state, run_id="run1", server_round=3)
    added = Ledger(ledger.path, SITE, keys["a"]).reconcile(state)
    assert [(e.run_id, e.round, e.kind) for e in added] == [("run1", 1, "evaluate"), ("run1", 2, "train"),
                                                           ("legacy-id", 0, "train")]
    assert added[0].mechanism.sample_rate == 1.0 and added[0].mechanism.noise_multiplicity == 4
    assert Ledger(ledger.path, SITE, keys["a"]).reconcile(state) == []
    entries = read_ledger(ledger.path)
    assert verify_chain(entries, keys["a_pub"], site_id=SITE) == [] and entries[-1].epsilon == state.epsilon()
    with pytest.raises(LedgerError, match="state was reset"):  # a fresh state beside an old ledger
        Ledger(ledger.path, SITE, keys["a"]).reconcile(_state(tmp_path / "fresh"))


def test_server_merge_is_idempotent_and_refuses_conflicts_gaps_and_rollbacks(tmp_path, chain, keys) -> None:
    run = tmp_path / "run"
    entries = parse_entries(export_entries(read_ledger(chain)))
    assert [e.raw for e in entries] == [e.raw for e in read_ledger(chain)]
    result = merge_site_entries(run, entries[:3], public_key=keys["a_pub"])
    assert (result.added, result.head_seq, result.path) == (3, 2, ledger_path(run, SITE))
    assert merge_site_entries(run, entries, public_key=keys["a_pub"]).added == 2
    assert merge_site_entries(run, entries).added == 0  # idempotent
    assert merge_site_entries(run, entries[4:]).added == 0
    assert ledger_path(run, SITE).read_bytes() == chain.read_bytes()
    before = ledger_path(run, SITE).read_bytes()
    with pytest.raises(LedgerError, match="rolled back"):
        merge_site_entries(run, entries[:3])
    twin = tmp_path / "twin.jsonl"
    twin.write_bytes(chain.read_bytes())
    _append(Ledger(chain, SITE, keys["a"]), 6, 3.0)
    _append(Ledger(chain, SITE, keys["a"]), 7, 3.5)
    _append(Ledger(twin, SITE, keys["a"]), 6, 2.7)
    merge_site_entries(run, read_ledger(twin)[5:])  # the server now holds the twin's round 6
    with pytest.raises(LedgerError, match="differs from the entry the server holds for seq 5 .*fork or a rewrite"):
        merge_site_entries(run, read_ledger(chain))
    with pytest.raises(LedgerError, match="not a chain"):
        merge_site_entries(run, [entries[0], entries[2]])
    with pytest.raises(LedgerError, match="does not extend"):
        merge_site_entries(tmp_path / "run2", read_ledger(chain)[6:])
    assert ledger_path(run, SITE).read_bytes() == before + read_ledger(twin)[5].line.encode() + b"\n"


def test_the_key_use_record_refuses_an_empty_shorter_or_other_ledger(tmp_path, keys, caplog) -> None:
    """Every append records the head beside the key; a ledger that lacks it is refused by dataset;
    a record of another key is refused; a read-only key folder keeps no record, with a warning."""
    from shared.privacy.ledger import KeyUseRecord, key_use_path

    record = key_use_path(tmp_path / "keys" / f"{SITE}.key")
    ledger = Ledger(tmp_path / "site" / "ledger.jsonl", SITE, keys["a"], key_use=record)
    ledger.check_key_use(FP)  # nothing signed yet: a first start is fine
    for r in (1, 2):
        _append(ledger, r, 0.5 * r)
    assert json.loads(record.read_text())["ledgers"][FP]["seq"] == 1
    ledger.check_key_use("sha256:" + "ef" * 32)  # another dataset starts its own budget
    shorter = tmp_path / "shorter.jsonl"
    _write(shorter, _lines(ledger.path)[:1])
    for path, what in ((tmp_path / "lost" / "ledger.jsonl", "is empty or missing"), (shorter, "ends at seq 0")):
        with pytest.raises(LedgerError, match=f"{what}, but this site's key has signed .* up to seq 1"):
            Ledger(path, SITE, keys["a"], key_use=record).check_key_use(FP)
    other = Ledger(tmp_path / "forked" / "ledger.jsonl", SITE, keys["a"])  # a second history signed by the same key
    for r in (1, 3):
        _append(other, r, 0.5 * r)
    with pytest.raises(LedgerError, match="holds another entry at seq 1"):
        Ledger(other.path, SITE, keys["a"], key_use=record).check_key_use(FP)
    with pytest.raises(InputError, match="a key was replaced without its record"):
        KeyUseRecord(record, key_id(keys["b"].public_key()))

    locked_dir = tmp_path / "ro"
    locked_dir.mkdir()
    os.chmod(locked_dir, 0o500)
    try:
        ro = Ledger(tmp_path / "ro-site" / "ledger.jsonl", SITE, keys["b"], key_use=locked_dir / "k.key-use.json")
        if os.access(locked_dir, os.W_OK):  # root writes anywhere: make the write fail another way
            (locked_dir / "k.key-use.json").mkdir()
        with caplog.at_level("WARNING", logger="raregraph.privacy"):
            _append(ro, 1, 0.5)
            _append(ro, 2, 1.0)
        assert len(read_ledger(ro.path)) == 2
        assert sum("cannot keep the key-use record" in r.message for r in caplog.records) == 1
    finally:
        os.chmod(locked_dir, 0o700)
