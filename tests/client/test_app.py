"""The ClientApp called directly (no Flower engine): bundle handshake, refusal of a bundle
that does not verify, and what a site sends — weights, counts and metrics only."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict

from client.app import BUNDLE_REFUSED, REFUSED_CODE, make_app
from client.config import NodeConfig
from shared import protocol as P
from shared.bundle import StudyBundle, read_files
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium, write_consortium
from shared.model.checkpoint import build
from shared.privacy.ledger import parse_entries, verify_chain
from shared.signing.keys import load_private_key, new_keypair, sign


def message(content: RecordDict, message_type: str) -> Message:
    meta = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="1",
                    created_at=time.time(), ttl=600.0, message_type=message_type)
    return Message(content=content, metadata=meta)


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture()
def node(tmp_path_factory, bundle, coordinator_key) -> NodeConfig:
    root = tmp_path_factory.mktemp("site")
    write_consortium(simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=2, min_patients=40,
                                         max_patients=40), root / "sites")
    site_key, _ = new_keypair(root / "identity" / "site-1")
    return NodeConfig(site_id="site-1", data_path=root / "sites" / "site-1", state_path=root / "state",
                      coordinator_pub=coordinator_key[1], site_key=site_key, epsilon=8.0, delta=1e-5, batch_size=8,
                      noise_multiplicity=2)


def call(node: NodeConfig, msg: Message) -> Message:
    app = make_app(lambda _context: node)
    return app(msg, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={}))


def offer(bundle: StudyBundle, files: dict | None = None) -> Message:
    content = {P.BUNDLE_OFFER: ConfigRecord({P.BUNDLE_SHA256: bundle.bundle_hash})}
    if files is not None:
        content[P.BUNDLE_FILES] = ConfigRecord(files)
    return message(RecordDict(content), P.BUNDLE_QUERY)


def test_bundle_handshake_and_cache(node, bundle) -> None:
    assert call(node, offer(bundle)).content[P.BUNDLE_STATUS]["status"] == P.NEED
    assert call(node, offer(bundle, read_files(bundle.path))).content[P.BUNDLE_STATUS]["status"] == P.VERIFIED
    assert call(node, offer(bundle)).content[P.BUNDLE_STATUS]["status"] == P.CACHED


def test_a_bundle_that_does_not_verify_is_refused_and_not_cached(node, bundle, tmp_path, caplog) -> None:
    files = read_files(bundle.path)
    tampered = bytearray(files["vocabulary.parquet"])
    tampered[50] ^= 0xFF
    reply = call(node, offer(bundle, {**files, "vocabulary.parquet": bytes(tampered)}))
    assert reply.has_error() and reply.error.code == REFUSED_CODE
    assert reply.error.reason == BUNDLE_REFUSED  # the detail stays in the site's own log
    assert "vocabulary.parquet: content differs" in caplog.text
    other_key, _ = new_keypair(tmp_path / "other")
    foreign = NodeConfig(**{**vars(node), "coordinator_pub": other_key.with_suffix(".pub")})
    reply = call(foreign, offer(bundle, files))
    assert reply.has_error() and reply.error.reason == BUNDLE_REFUSED and "does not verify" in caplog.text
    assert call(node, offer(bundle)).content[P.BUNDLE_STATUS]["status"] == P.NEED


def signed_offer(files: dict[str, bytes], key_path, edit) -> Message:
    """What a coordinator holding its key can send: any manifest, signed, with its announced hash."""
    manifest = json.loads(files["manifest.json"])
    edit(manifest)
    raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    files = {**files, "manifest.json": raw, "manifest.sig": (sign(load_private_key(key_path), raw) + "\n").encode()}
    content = {P.BUNDLE_OFFER: ConfigRecord({P.BUNDLE_SHA256: hashlib.sha256(raw).hexdigest()}),
               P.BUNDLE_FILES: ConfigRecord(files)}
    return message(RecordDict(content), P.BUNDLE_QUERY)


def test_a_signed_manifest_cannot_probe_the_sites_disk(node, bundle, coordinator_key, caplog) -> None:
    """Before: a listed '../../x' or absolute name was read and hashed on the site, and the reply
    said "missing", "content differs" or verified it: whether a path exists, and what it holds.
    Now every such bundle gets the same fixed reason, and the name is refused before any look."""
    secret = node.state_path / "secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(b"secret")
    right = {"sha256": hashlib.sha256(b"secret").hexdigest(), "bytes": 6}
    wrong = {"sha256": "0" * 64, "bytes": 6}
    files = read_files(bundle.path)
    reasons = set()
    for name in ("../../secret.txt", str(secret), "../../absent.txt", str(node.state_path / "absent.txt")):
        for meta in (right, wrong):
            reply = call(node, signed_offer(files, coordinator_key[0], lambda m: m["files"].update({name: meta})))
            assert reply.has_error() and reply.error.code == REFUSED_CODE
            reasons.add(reply.error.reason)
    assert reasons == {BUNDLE_REFUSED} and str(node.state_path) not in BUNDLE_REFUSED
    assert "file name '../../secret.txt' has a '..' part" in caplog.text and "is an absolute path" in caplog.text
    assert "missing" not in caplog.text and "differs" not in caplog.text  # nothing outside was looked at
    assert sorted(p.name for p in (node.state_path / "bundles").iterdir()) == []  # nothing cached or left behind


def test_an_offered_bundle_id_cannot_probe_the_sites_disk(node, bundle) -> None:
    """Before: the offered id was joined to the cache path unchecked, so '../probe' answered
    "cached" exactly when STATE/probe/manifest.json exists."""
    (node.state_path / "bundles").mkdir(parents=True)
    (node.state_path / "probe").mkdir()
    (node.state_path / "probe" / "manifest.json").write_text("{}")
    for sha in ("../probe", "../nothing", str(node.state_path / "probe"), bundle.bundle_hash.upper()):
        msg = message(RecordDict({P.BUNDLE_OFFER: ConfigRecord({P.BUNDLE_SHA256: sha})}), P.BUNDLE_QUERY)
        reply = call(node, msg)
        assert reply.has_error() and reply.error.reason == BUNDLE_REFUSED


def test_a_linked_cache_entry_is_refused_not_cached(node, bundle, tmp_path) -> None:
    """Before: a bundle folder in the cache replaced by a link answered "cached"."""
    assert call(node, offer(bundle, read_files(bundle.path))).content[P.BUNDLE_STATUS]["status"] == P.VERIFIED
    entry = node.state_path / "bundles" / bundle.bundle_hash
    entry.rename(tmp_path / "elsewhere")
    entry.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    reply = call(node, offer(bundle))
    assert reply.has_error() and reply.error.reason == BUNDLE_REFUSED
    reply = call(node, offer(bundle, read_files(bundle.path)))
    assert reply.has_error() and reply.error.reason == BUNDLE_REFUSED and entry.is_symlink()


def train_message(bundle: StudyBundle, *, server_round: int = 1, rounds: int = 2, steps: int = 3) -> Message:
    model, *_ = build(bundle, guidance="kg")
    config = ConfigRecord({P.SERVER_ROUND: server_round, P.RUN_ID: "test", P.ROUNDS: rounds, P.LOCAL_STEPS: steps,
                           P.LR: 1e-3, P.GUIDANCE: "kg", P.BUNDLE_SHA256: bundle.bundle_hash, P.ACCOUNTANT: "rdp",
                           P.SEED: 0})
    return message(RecordDict({P.ARRAYS: ArrayRecord(model.state_dict()), P.CONFIG: config}), "train")


def test_training_without_the_bundle_is_refused(node, bundle) -> None:
    reply = call(node, train_message(bundle))
    assert reply.has_error() and "not in this site's cache" in reply.error.reason


@pytest.mark.slow
def test_a_site_sends_only_weights_counts_and_metrics(node, bundle) -> None:
    call(node, offer(bundle, read_files(bundle.path)))
    sent = train_message(bundle)
    reply = call(node, sent)
    assert not reply.has_error(), reply.error
    content = reply.content
    assert set(content.keys()) == {P.ARRAYS, P.METRICS, P.SITE, P.LEDGER}
    assert isinstance(content[P.ARRAYS], ArrayRecord) and isinstance(content[P.METRICS], MetricRecord)
    weights = content[P.ARRAYS].to_torch_state_dict()
    expected = sent.content[P.ARRAYS].to_torch_state_dict()
    assert weights.keys() == expected.keys()
    assert all(weights[k].shape == expected[k].shape for k in weights)
    assert any(not torch.equal(weights[k], expected[k]) for k in weights)
    metrics = dict(content[P.METRICS])
    assert set(metrics) == set(P.TRAIN_METRICS)
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics[P.NUM_EXAMPLES] == 40 and metrics[P.REFUSED] == 0 and 0 < metrics[P.EPSILON] <= 8.0
    assert dict(content[P.SITE]) == {P.SITE_ID: "site-1", "accountant": "rdp"}
    # the ledger: signed mechanism and ε per charge, nothing about any patient
    assert set(dict(content[P.LEDGER])) == {P.LEDGER_ENTRIES}
    (entry,) = parse_entries(content[P.LEDGER][P.LEDGER_ENTRIES])
    assert set(entry.to_json()) == LEDGER_FIELDS
    assert (entry.site_id, entry.run_id, entry.round, entry.kind) == ("site-1", "test", 1, "train")
    assert entry.epsilon == metrics[P.EPSILON] and entry.mechanism.steps == metrics[P.STEPS]
    second = call(node, train_message(bundle, server_round=2))
    assert second.content[P.METRICS][P.EPSILON] > metrics[P.EPSILON]
    third = call(node, train_message(bundle, server_round=3))  # planned for 2 rounds: the budget is spent
    assert third.content[P.METRICS][P.REFUSED] == 1 and third.content[P.METRICS][P.NUM_EXAMPLES] == 0
    assert third.content[P.METRICS][P.EPSILON] == second.content[P.METRICS][P.EPSILON]
    entries = parse_entries(third.content[P.LEDGER][P.LEDGER_ENTRIES])  # sitting out charges nothing
    assert [e.round for e in entries] == [1, 2] and entries[-1].epsilon == second.content[P.METRICS][P.EPSILON]
    assert not verify_chain(entries, load_private_key(node.site_key).public_key(), site_id="site-1")


LEDGER_FIELDS = {"format", "seq", "site_id", "run_id", "round", "time", "kind", "mechanism", "accountant", "epsilon",
                 "delta", "budget_epsilon", "dataset_fingerprint", "key_id", "prev_hash", "signature"}


@pytest.mark.slow
def test_a_site_whose_ledger_was_edited_or_whose_state_was_reset_refuses_to_train(node, bundle) -> None:
    call(node, offer(bundle, read_files(bundle.path)))
    assert not call(node, train_message(bundle, server_round=1)).has_error()
    ledger = node.state_path / "privacy" / "ledger.jsonl"
    honest = ledger.read_text()
    assert '"round":1,' in honest
    ledger.write_text(honest.replace('"round":1,', '"round":7,', 1))
    reply = call(node, train_message(bundle, server_round=2))
    assert reply.has_error() and "privacy ledger does not verify" in reply.error.reason
    ledger.write_text(honest)
    (node.state_path / "privacy" / "privacy_state.json").unlink()  # a reset privacy state: the ledger is the witness
    reply = call(node, train_message(bundle, server_round=2))
    assert reply.has_error() and "the state was reset" in reply.error.reason


def test_a_site_whose_privacy_folder_was_lost_refuses_by_itself_until_it_is_restored(node, bundle) -> None:
    """The whole privacy folder gone, the key kept: the site refuses (its key-use record knows it
    trained) before reading any data; restored from the ledger the reply carried (the coordinator's
    copy), it trains the next round and its ledger goes on from seq 1."""
    import shutil

    from shared.privacy.ledger.restore import restore_privacy_folder

    call(node, offer(bundle, read_files(bundle.path)))
    reply = call(node, train_message(bundle, server_round=1, rounds=3))
    copy = node.state_path.parent / "coordinator-copy.jsonl"
    copy.write_text(reply.content[P.LEDGER][P.LEDGER_ENTRIES])
    shutil.rmtree(node.state_path / "privacy")
    reply = call(node, train_message(bundle, server_round=2, rounds=3))
    assert reply.has_error() and "this site's key has signed its ledger" in reply.error.reason
    assert "up to seq 0" in reply.error.reason and not (node.state_path / "privacy" / "ledger.jsonl").exists()
    restore_privacy_folder(copy, node.state_path / "privacy", site_key=node.site_key)
    reply = call(node, train_message(bundle, server_round=2, rounds=3))
    assert not reply.has_error()
    entries = parse_entries(reply.content[P.LEDGER][P.LEDGER_ENTRIES])
    assert [(e.seq, e.round) for e in entries] == [(0, 1), (1, 2)] and entries[1].epsilon > entries[0].epsilon


def test_a_raised_budget_is_refused_unless_made_on_purpose_and_then_signed_as_its_own_entry(node, bundle) -> None:
    call(node, offer(bundle, read_files(bundle.path)))
    assert not call(node, train_message(bundle, server_round=1, rounds=3)).has_error()
    raised = NodeConfig(**{**vars(node), "epsilon": 50.0})
    reply = call(raised, train_message(bundle, server_round=2, rounds=3))
    assert reply.has_error() and "a budget is raised only on purpose" in reply.error.reason
    reply = call(NodeConfig(**{**vars(raised), "budget_raise": True}), train_message(bundle, server_round=2, rounds=3))
    assert not reply.has_error()
    entries = parse_entries(reply.content[P.LEDGER][P.LEDGER_ENTRIES])
    assert [(e.kind, e.budget_epsilon) for e in entries] == [("train", 8.0), ("budget", 50.0), ("train", 50.0)]
    assert entries[1].previous_budget == {"epsilon": 8.0, "delta": 1e-5} and entries[1].round == 2


def test_a_site_whose_privacy_state_was_edited_consistently_refuses_to_train(node, bundle) -> None:
    """A past round's σ raised to 1000 in both the rounds and the accountant's history (so the state
    file is self-consistent and spends less ε): the signed ledger still says what was spent."""
    call(node, offer(bundle, read_files(bundle.path)))
    assert not call(node, train_message(bundle, server_round=1, rounds=3)).has_error()
    path = node.state_path / "privacy" / "privacy_state.json"
    doc = json.loads(path.read_text())
    doc["rounds"][0]["noise_multiplier"] = 1000.0
    doc["accountant"]["history"] = [[1000.0, *doc["accountant"]["history"][0][1:]]]
    path.write_text(json.dumps(doc))
    reply = call(node, train_message(bundle, server_round=2, rounds=3))
    assert reply.has_error() and "the state file was edited" in reply.error.reason
    assert "noise multiplier 1000" in reply.error.reason


def evaluate_message(bundle: StudyBundle, *, server_round: int = 1, rounds: int = 2) -> Message:
    msg = train_message(bundle, server_round=server_round, rounds=rounds)
    return message(msg.content, "evaluate")


def test_a_site_without_an_evaluation_noise_declines_and_reads_nothing(node, bundle) -> None:
    reply = call(node, evaluate_message(bundle))  # bundle not even cached: nothing is opened
    assert not reply.has_error()
    metrics = dict(reply.content[P.METRICS])
    assert metrics[P.REFUSED] == 1 and metrics[P.EVAL_COUNT] == 0 and metrics[P.EVAL_LOSS_SUM] == 0


def test_evaluation_is_a_charged_gaussian_release(node, bundle) -> None:
    """The reply holds noisy sums only; the charge is one full-batch Gaussian step at σ_e."""
    from shared.privacy.budget import epsilon_for
    from shared.privacy.state import PrivacyState

    node = NodeConfig(**{**vars(node), "eval_noise_multiplier": 3.0})
    call(node, offer(bundle, read_files(bundle.path)))
    replies = [call(node, evaluate_message(bundle, server_round=r, rounds=3)) for r in (1, 2, 3)]
    metrics = [dict(r.content[P.METRICS]) for r in replies]
    assert set(replies[0].content.keys()) == {P.METRICS, P.SITE, P.LEDGER}
    entries = parse_entries(replies[-1].content[P.LEDGER][P.LEDGER_ENTRIES])
    assert [(e.round, e.kind, e.mechanism.sample_rate) for e in entries] == [(r, "evaluate", 1.0) for r in (1, 2, 3)]
    assert set(metrics[0]) == set(P.EVALUATE_METRICS)
    assert all(m[P.REFUSED] == 0 for m in metrics)
    std = metrics[0][P.EVAL_COUNT_STD]
    assert std == pytest.approx(3.0 * 2 ** 0.5)
    assert metrics[0][P.EVAL_LOSS_SUM_STD] == pytest.approx(std * node.eval_loss_clip)
    counts = [m[P.EVAL_COUNT] for m in metrics]
    assert all(abs(c - 40) < 6 * std for c in counts) and len(set(counts)) == 3  # fresh noise each time
    assert metrics[-1][P.EPSILON] == pytest.approx(epsilon_for(noise_multiplier=3.0, sample_rate=1.0, steps=3,
                                                               delta=1e-5), rel=1e-6)
    state = PrivacyState.read(node.state_path / "privacy")
    assert [r.round_id for r in state.rounds] == [f"test:{r}:evaluate" for r in (1, 2, 3)]


def test_evaluation_never_takes_budget_training_still_needs(node, bundle) -> None:
    call(node, offer(bundle, read_files(bundle.path)))
    # planned without evaluations: the two training rounds use the whole budget
    assert call(node, train_message(bundle, server_round=1, rounds=2, steps=2)).content[P.METRICS][P.REFUSED] == 0
    late = NodeConfig(**{**vars(node), "eval_noise_multiplier": 1.0})
    evaluated = call(late, evaluate_message(bundle, server_round=1, rounds=2))
    assert evaluated.content[P.METRICS][P.REFUSED] == 1  # it would leave too little for round 2
    second = call(late, train_message(bundle, server_round=2, rounds=2, steps=2))
    assert second.content[P.METRICS][P.REFUSED] == 0


def test_a_site_that_evaluates_plans_room_for_it(node, bundle) -> None:
    node = NodeConfig(**{**vars(node), "eval_noise_multiplier": 1.0})
    call(node, offer(bundle, read_files(bundle.path)))
    for r in (1, 2):
        trained = call(node, train_message(bundle, server_round=r, rounds=2, steps=2)).content[P.METRICS]
        evaluated = call(node, evaluate_message(bundle, server_round=r, rounds=2)).content[P.METRICS]
        assert trained[P.REFUSED] == 0 and evaluated[P.REFUSED] == 0
    assert evaluated[P.EPSILON] <= node.epsilon
