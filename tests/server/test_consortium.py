"""The consortium record outlives runs: a site whose whole privacy folder was lost cannot start
again from ε = 0 in a new run; restoring its ledger lets it go on."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from shared.privacy.ledger.consortium import ConsortiumRecord
from server.strategy import SiteFedAvg
from shared import protocol as P
from shared.errors import InputError
from shared.privacy.ledger import Ledger, LedgerError, MechanismRecord, export_entries
from shared.signing.keys import load_private_key, new_keypair

SITE = "site-1"
FP = "sha256:" + "ab" * 32
MECH = MechanismRecord(sample_rate=0.1, noise_multiplier=1.2, clip_norm=0.1, steps=10, noise_multiplicity=1)
BASE = {"w": torch.zeros(4, 4)}


def _ledger(path, key, run_id: str, rounds: range, *, start: float = 0.0) -> Ledger:
    ledger = Ledger(path, SITE, load_private_key(key))
    for r in rounds:
        ledger.append(run_id=run_id, server_round=r, kind="train", mechanism=MECH, accountant="rdp",
                      epsilon=start + 0.5 * r, delta=1e-5, budget_epsilon=8.0, dataset_fingerprint=FP)
    return ledger


def _reply(ledger: Ledger) -> Message:
    head = ledger.head
    metrics = {P.NUM_EXAMPLES: 40.0, P.LOSS: 1.0, P.EPSILON: head.epsilon, P.DELTA: 1e-5, P.REFUSED: 0.0,
               P.BUDGET_EPSILON: 8.0}
    meta = Metadata(run_id=1, message_id="m", src_node_id=1, dst_node_id=0, reply_to_message_id="x", group_id="1",
                    created_at=time.time(), ttl=600.0, message_type="train")
    return Message(content=RecordDict({
        P.ARRAYS: ArrayRecord({"w": torch.full((4, 4), 0.01)}), P.METRICS: MetricRecord(metrics),
        P.SITE: ConfigRecord({P.SITE_ID: SITE, "accountant": "rdp"}),
        P.LEDGER: ConfigRecord({P.LEDGER_ENTRIES: export_entries(ledger.entries)})}), metadata=meta)


def _round(tmp_path, run: str, server_round: int, ledger: Ledger, record) -> SiteFedAvg:
    strategy = SiteFedAvg(run_dir=tmp_path / run, run_id=run, outlier_factor=10.0, min_sites=1,
                          consortium=ConsortiumRecord(record))
    (tmp_path / run).mkdir(exist_ok=True)
    strategy.current = ArrayRecord(BASE)
    strategy._round_started = time.perf_counter()
    strategy.done = server_round - 1
    strategy.aggregate_train(1, [_reply(ledger)])
    return strategy


@pytest.fixture
def key(tmp_path):
    return new_keypair(tmp_path / "keys" / SITE)[0]


def test_a_site_that_lost_its_privacy_folder_is_refused_in_the_next_run(tmp_path, key) -> None:
    record = tmp_path / "consortium.json"
    state = tmp_path / "state" / "ledger.jsonl"
    first = _round(tmp_path, "run-a", 2, _ledger(state, key, "run-a", range(1, 3)), record)
    assert not first.rejected
    head = json.loads(record.read_text())["sites"][SITE][FP]
    assert (head["seq"], head["epsilon"], head["run_id"]) == (1, 1.0, "run-a")

    saved = state.read_bytes()
    shutil.rmtree(tmp_path / "state")  # the disk was replaced: a new ledger starts at seq 0, ε from 0
    fresh = _round(tmp_path, "run-b", 1, _ledger(state, key, "run-b", range(1, 2)), record)
    assert len(fresh.rejected) == 1
    reason = fresh.rejected[0]["reason"]
    assert "ends before it (it started again" in reason and "seq 1 (ε = 1)" in reason and "run-a" in reason
    assert "Restore the site's state folder" in reason
    assert json.loads(record.read_text())["sites"][SITE][FP]["seq"] == 1  # the record does not move back

    state.write_bytes(saved)  # restored: the ledger continues where the record stands
    restored = _round(tmp_path, "run-c", 1, _ledger(state, key, "run-c", range(1, 2), start=1.0), record)
    assert not restored.rejected
    assert json.loads(record.read_text())["sites"][SITE][FP]["seq"] == 2


def test_a_rolled_back_ledger_is_refused(tmp_path, key) -> None:
    record = ConsortiumRecord(tmp_path / "consortium.json")
    ledger = _ledger(tmp_path / "l.jsonl", key, "run-a", range(1, 4))
    record.check(ledger.entries)
    record.advance(ledger.entries, run_id="run-a")
    with pytest.raises(LedgerError, match="ends before it"):
        record.check(ledger.entries[:2])
    record.check(ledger.entries)  # the same head again is fine
    record.advance(ledger.entries[:2], run_id="run-b")  # never moves the head back
    assert record.head(SITE, FP)["seq"] == 2


def test_a_damaged_record_is_one_clear_error(tmp_path) -> None:
    path = tmp_path / "consortium.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a readable consortium record"):
        ConsortiumRecord(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a raregraph-consortium-record version 1 file"):
        ConsortiumRecord(path)
