"""The site's disease-mix release called through the ClientApp (no Flower engine): a Gaussian
release of its disease histogram, charged once per dataset and signed into its ledger, resent
without a new charge, declined at σ = 0 or when training still needs the budget."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

from client.app import make_app
from client.config import DEFAULT_HISTOGRAM_NOISE, NodeConfig
from client.disease_mix import KEPT
from client.training import read_tensors
from shared import protocol as P
from shared.bundle import StudyBundle, read_files
from shared.model.checkpoint import build
from shared.privacy.budget import epsilon_for
from shared.privacy.ledger import parse_entries, verify_chain
from shared.privacy.state import PrivacyState
from shared.signing.keys import load_private_key, new_keypair
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium, write_consortium


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
    write_consortium(simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=5, min_patients=60,
                                         max_patients=60), root / "sites")
    site_key, _ = new_keypair(root / "identity" / "site-1")
    node = NodeConfig(site_id="site-1", data_path=root / "sites" / "site-1", state_path=root / "state",
                      coordinator_pub=coordinator_key[1], site_key=site_key, epsilon=8.0, delta=1e-5, batch_size=8,
                      noise_multiplicity=1, histogram_noise_multiplier=DEFAULT_HISTOGRAM_NOISE)
    call(node, message(RecordDict({P.BUNDLE_OFFER: ConfigRecord({P.BUNDLE_SHA256: bundle.bundle_hash}),
                                   P.BUNDLE_FILES: ConfigRecord(read_files(bundle.path))}), P.BUNDLE_QUERY))
    return node


def call(node: NodeConfig, msg: Message) -> Message:
    app = make_app(lambda _context: node)
    return app(msg, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={}))


def config(bundle: StudyBundle, *, run_id: str = "run-a", server_round: int = 0, rounds: int = 2) -> ConfigRecord:
    return ConfigRecord({P.SERVER_ROUND: server_round, P.RUN_ID: run_id, P.ROUNDS: rounds, P.LOCAL_STEPS: 2,
                         P.LR: 1e-3, P.GUIDANCE: "kg", P.BUNDLE_SHA256: bundle.bundle_hash, P.ACCOUNTANT: "rdp",
                         P.SEED: 0})


def ask(node: NodeConfig, bundle: StudyBundle, **kw) -> Message:
    reply = call(node, message(RecordDict({P.CONFIG: config(bundle, **kw)}), P.MIX_QUERY))
    assert not reply.has_error(), reply.error
    return reply


def train(node: NodeConfig, bundle: StudyBundle, **kw) -> Message:
    model, *_ = build(bundle, guidance="kg")
    return call(node, message(RecordDict({P.ARRAYS: ArrayRecord(model.state_dict()), P.CONFIG: config(bundle, **kw)}),
                              "train"))


def histogram_entries(reply: Message):
    return [e for e in parse_entries(reply.content[P.LEDGER][P.LEDGER_ENTRIES]) if e.kind == "histogram"]


def test_a_site_with_histogram_noise_0_declines_and_reads_nothing(node, bundle) -> None:
    node = NodeConfig(**{**vars(node), "histogram_noise_multiplier": 0.0})
    reply = ask(node, bundle)
    assert reply.content[P.METRICS][P.REFUSED] == 1 and list(reply.content[P.MIX][P.MIX_COUNTS]) == []
    # nothing opened, nothing charged
    assert P.LEDGER not in reply.content and not (node.state_path / "privacy").exists()


def test_the_release_is_a_charged_gaussian_histogram_made_once_per_dataset(node, bundle) -> None:
    reply = ask(node, bundle)
    metrics, mix = dict(reply.content[P.METRICS]), reply.content[P.MIX]
    assert set(metrics) == set(P.MIX_METRICS) and metrics[P.REFUSED] == 0 and metrics[P.NOISE_MULTIPLIER] == 5.0
    assert set(reply.content.keys()) == {P.MIX, P.METRICS, P.SITE, P.LEDGER}
    counts = np.array(list(mix[P.MIX_COUNTS]))
    truth = np.bincount(read_tensors(node, bundle, node.data_source).disease, minlength=len(bundle.diseases))
    assert counts.shape == truth.shape and truth.sum() == 60
    # each count is its bin plus N(0, 5²): 6 sd bounds every bin (a false alarm has probability < 1e-8 per bin)
    assert np.all(np.abs(counts - truth) < 6 * 5.0) and not np.array_equal(counts, truth)
    (entry,) = histogram_entries(reply)
    assert (entry.run_id, entry.round, entry.mechanism.sample_rate, entry.mechanism.steps) == ("run-a", 0, 1.0, 1)
    assert entry.mechanism.noise_multiplier == 5.0 and entry.epsilon == metrics[P.EPSILON]
    assert metrics[P.EPSILON] == pytest.approx(epsilon_for(noise_multiplier=5.0, sample_rate=1.0, steps=1,
                                                           delta=1e-5), rel=1e-9)
    assert not verify_chain(parse_entries(reply.content[P.LEDGER][P.LEDGER_ENTRIES]),
                            load_private_key(node.site_key).public_key(), site_id="site-1")
    assert str(mix[P.MIX_RUN]) == "run-a"
    # asked again (a resumed coordinator) or by a later run: the same release, no new charge
    for run_id in ("run-a", "run-b"):
        again = ask(node, bundle, run_id=run_id)
        assert list(again.content[P.MIX][P.MIX_COUNTS]) == list(counts)
        assert str(again.content[P.MIX][P.MIX_RUN]) == "run-a"
        assert again.content[P.METRICS][P.EPSILON] == metrics[P.EPSILON] and len(histogram_entries(again)) == 1
    state = PrivacyState.read(node.state_path / "privacy")
    assert [r.round_id for r in state.rounds] == ["run-a:0:histogram"]


def test_a_lost_release_is_not_made_again_in_the_same_run(node, bundle) -> None:
    ask(node, bundle)
    (node.state_path / "privacy" / KEPT).unlink()
    reply = ask(node, bundle)
    assert reply.content[P.METRICS][P.REFUSED] == 1 and len(histogram_entries(reply)) == 1
    # a new run may release again (a new charge, signed as its own entry)
    fresh = ask(node, bundle, run_id="run-b")
    assert fresh.content[P.METRICS][P.REFUSED] == 0
    assert [e.run_id for e in histogram_entries(fresh)] == ["run-a", "run-b"]


def test_a_kept_release_of_other_diseases_is_not_resent(node, bundle) -> None:
    ask(node, bundle)
    path = node.state_path / "privacy" / KEPT
    kept = json.loads(path.read_text())
    path.write_text(json.dumps({**kept, "diseases": kept["diseases"][::-1]}))
    reply = ask(node, bundle, run_id="run-b")
    assert reply.content[P.METRICS][P.REFUSED] == 0 and str(reply.content[P.MIX][P.MIX_RUN]) == "run-b"
    assert len(histogram_entries(reply)) == 2


@pytest.mark.slow
def test_training_plans_around_the_release_and_a_later_one_never_takes_its_budget(node, bundle) -> None:
    released = ask(node, bundle).content[P.METRICS][P.EPSILON]
    for r in (1, 2):  # σ is calibrated after the release: the two rounds end at the budget, not past it
        trained = train(node, bundle, server_round=r).content
        assert trained[P.METRICS][P.REFUSED] == 0
    spent = trained[P.METRICS][P.EPSILON]
    assert released < spent <= node.epsilon
    assert [e.kind for e in parse_entries(trained[P.LEDGER][P.LEDGER_ENTRIES])] == ["histogram", "train", "train"]
    # the kept release lost, a new run under the same plan: the release would take what training needs
    (node.state_path / "privacy" / KEPT).unlink()
    reply = ask(node, bundle, run_id="run-b")
    assert reply.content[P.METRICS][P.REFUSED] == 1 and reply.content[P.METRICS][P.EPSILON] == spent
    assert len(histogram_entries(reply)) == 1
