"""The ClientApp called directly (no Flower engine): bundle handshake, refusal of a bundle
that does not verify, and what a site sends — weights, counts and metrics only."""

from __future__ import annotations

import time

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict

from client.app import REFUSED_CODE, make_app
from client.config import NodeConfig
from shared import protocol as P
from shared.bundle import StudyBundle, read_files
from shared.ehr.simulate import knowledge_from_bundle, simulate_consortium, write_consortium
from shared.model.checkpoint import build
from shared.signing import new_keypair


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
    return NodeConfig(site_id="site-1", data_path=root / "sites" / "site-1", state_path=root / "state",
                      coordinator_pub=coordinator_key[1], epsilon=8.0, delta=1e-5, batch_size=8, noise_multiplicity=2)


def call(node: NodeConfig, msg: Message) -> Message:
    app = make_app(lambda _context: node)
    return app(msg, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={}))


def offer(bundle: StudyBundle, files: dict | None = None) -> Message:
    content = {P.BUNDLE_OFFER: ConfigRecord({P.BUNDLE_SHA256: bundle.bundle_hash})}
    if files is not None:
        content[P.BUNDLE_FILES] = ConfigRecord(files)
    return message(RecordDict(content), "query")


def test_bundle_handshake_and_cache(node, bundle) -> None:
    assert call(node, offer(bundle)).content[P.BUNDLE_STATUS]["status"] == P.NEED
    assert call(node, offer(bundle, read_files(bundle.path))).content[P.BUNDLE_STATUS]["status"] == P.VERIFIED
    assert call(node, offer(bundle)).content[P.BUNDLE_STATUS]["status"] == P.CACHED


def test_a_bundle_that_does_not_verify_is_refused_and_not_cached(node, bundle, tmp_path) -> None:
    files = read_files(bundle.path)
    tampered = bytearray(files["vocabulary.parquet"])
    tampered[50] ^= 0xFF
    reply = call(node, offer(bundle, {**files, "vocabulary.parquet": bytes(tampered)}))
    assert reply.has_error() and reply.error.code == REFUSED_CODE
    assert "site refuses the study bundle" in reply.error.reason and "vocabulary.parquet" in reply.error.reason
    other_key, _ = new_keypair(tmp_path / "other")
    foreign = NodeConfig(**{**vars(node), "coordinator_pub": other_key.with_suffix(".pub")})
    reply = call(foreign, offer(bundle, files))
    assert reply.has_error() and "does not verify" in reply.error.reason
    assert call(node, offer(bundle)).content[P.BUNDLE_STATUS]["status"] == P.NEED


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
    assert set(content.keys()) == {P.ARRAYS, P.METRICS, P.SITE}
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
    second = call(node, train_message(bundle, server_round=2))
    assert second.content[P.METRICS][P.EPSILON] > metrics[P.EPSILON]
    third = call(node, train_message(bundle, server_round=3))  # planned for 2 rounds: the budget is spent
    assert third.content[P.METRICS][P.REFUSED] == 1 and third.content[P.METRICS][P.NUM_EXAMPLES] == 0
    assert third.content[P.METRICS][P.EPSILON] == second.content[P.METRICS][P.EPSILON]
