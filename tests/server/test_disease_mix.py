"""The federated model's disease mix: the sites' DP histogram releases, merged by the server
(each verified against the ledger entry that charged it), summed into ``disease_counts``, and
charged once per site even when the coordinator is restarted."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from client.config import DEFAULT_HISTOGRAM_NOISE
from client.training import read_tensors
from deploy.simulation import publish_site_keys, run_simulated, site_nodes
from server.config import RunConfig
from server.federation import MIX_FLOOR, pooled_disease_counts
from server.strategy import SiteFedAvg
from shared import protocol as P
from shared.bundle import StudyBundle
from shared.privacy import statements
from shared.privacy.audit.audit import audit_run
from shared.privacy.budget import epsilon_for
from shared.privacy.ledger import Ledger, MechanismRecord, export_entries, ledger_path, read_ledger
from shared.privacy.registry import make_accountant
from shared.runs import RunFolder
from shared.signing.keys import load_private_key, new_keypair
from shared.simulation.consortium import fresh_patients, knowledge_from_bundle, simulate_consortium, write_consortium

SIGMA = 5.0  # the node-config default


def test_pooled_counts_sum_releases_spread_decliners_and_clip_at_the_floor() -> None:
    releases = {"a": {"counts": [10.0, -4.0, 2.5]}, "b": {"counts": [5.0, 1.0, -9.0]}}
    assert pooled_disease_counts(releases, {}, 3) == [15.0, MIX_FLOOR, MIX_FLOOR]
    assert pooled_disease_counts(releases, {"c": 30.0}, 3) == [25.0, 7.0, 3.5]
    assert pooled_disease_counts({}, {"c": 30.0}, 3) == [10.0, 10.0, 10.0]
    assert pooled_disease_counts({}, {}, 4) == [1.0] * 4  # nothing known: uniform, as before


MECH = MechanismRecord(sample_rate=1.0, noise_multiplier=SIGMA, clip_norm=1.0, steps=1, noise_multiplicity=1)


def mix_reply(ledger: Ledger, *, charged_in: str, epsilon: float, counts: list[float]) -> Message:
    meta = Metadata(run_id=1, message_id="m", src_node_id=1, dst_node_id=0, reply_to_message_id="x", group_id="1",
                    created_at=time.time(), ttl=600.0, message_type=P.MIX_QUERY)
    metrics = {P.EPSILON: epsilon, P.DELTA: 1e-5, P.BUDGET_EPSILON: 8.0, P.NOISE_MULTIPLIER: SIGMA, P.REFUSED: 0.0}
    return Message(content=RecordDict({
        P.MIX: ConfigRecord({P.MIX_COUNTS: counts, P.MIX_RUN: charged_in}), P.METRICS: MetricRecord(metrics),
        P.SITE: ConfigRecord({P.SITE_ID: ledger.site_id, "accountant": "rdp"}),
        P.LEDGER: ConfigRecord({P.LEDGER_ENTRIES: export_entries(ledger.entries)})}), metadata=meta)


def test_a_release_is_kept_only_with_the_entry_that_charged_it(tmp_path) -> None:
    ledgers = {}
    for site in ("site-1", "site-2", "site-3"):
        ledgers[site] = Ledger(tmp_path / f"{site}.jsonl", site, load_private_key(new_keypair(tmp_path / site)[0]))
    fp = "sha256:" + "ab" * 32
    ledgers["site-1"].append(run_id="run-b", server_round=0, kind="histogram", mechanism=MECH, accountant="rdp",
                             epsilon=0.8, delta=1e-5, budget_epsilon=8.0, dataset_fingerprint=fp)
    ledgers["site-2"].append(run_id="run-a", server_round=0, kind="histogram", mechanism=MECH, accountant="rdp",
                             epsilon=0.8, delta=1e-5, budget_epsilon=8.0, dataset_fingerprint=fp)
    strategy = SiteFedAvg(run_dir=tmp_path / "run", run_id="run-b", outlier_factor=10.0, min_sites=1)
    (tmp_path / "run").mkdir()
    kept = strategy.merge_disease_mix([
        mix_reply(ledgers["site-1"], charged_in="run-b", epsilon=0.8, counts=[3.0, 4.0]),
        mix_reply(ledgers["site-2"], charged_in="run-a", epsilon=0.8, counts=[1.0, 2.0]),  # resent from run a
        mix_reply(ledgers["site-3"], charged_in="run-b", epsilon=0.8, counts=[9.0, 9.0]),  # never charged
    ], n_diseases=2)
    assert sorted(kept) == ["site-1", "site-2"] and kept["site-2"]["charged-in"] == "run-a"
    assert [r["site"] for r in strategy.rejected] == ["site-3"]
    assert "no entry for run run-b" in strategy.rejected[0]["reason"]
    # only a charge of this run is a row of its privacy record
    rows = [(s, r["kind"], r["round"]) for s, site_rows in strategy.privacy.items() for r in site_rows]
    assert rows == [("site-1", "histogram", 0)]
    written = json.loads(RunFolder(tmp_path / "run").privacy.read_text())
    assert written["disease_mix"]["site-1"]["counts"] == [3.0, 4.0]
    wrong = strategy.merge_disease_mix([mix_reply(ledgers["site-1"], charged_in="run-b", epsilon=0.8, counts=[1.0])],
                                       n_diseases=2)
    assert "not 2 finite ones" in strategy.rejected[-1]["reason"] and wrong["site-1"]["counts"] == [3.0, 4.0]


SIZES = (120, 80, 40)  # site-1 has only disease 0, site-2 only disease 1, site-3 every disease alike


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def sites(tmp_path_factory, bundle) -> list:
    k = len(bundle.diseases)
    mixes = [tuple(float(i == 0) for i in range(k)), tuple(float(i == 1) for i in range(k)), tuple([1 / k] * k)]
    result = []
    for (profile, _), mix, n in zip(simulate_consortium(knowledge_from_bundle(bundle), sites=3, seed=3,
                                                         min_patients=30, max_patients=30), mixes, SIZES):
        profile = dataclasses.replace(profile, disease_mix=mix, n_patients=n)
        result.append((profile, fresh_patients(profile, n, seed=profile.site)))
    out = tmp_path_factory.mktemp("mix") / "sites"
    write_consortium(result, out)
    return [out / f"site-{i}" for i in (1, 2, 3)]


@pytest.mark.slow
def test_a_federation_learns_the_sites_disease_mix_through_one_charged_release(sites, bundle, demo_bundle,
                                                                              coordinator_key, tmp_path) -> None:
    """Three sites of clearly different mixes; site-3 declines (σ = 0) and counts as a uniform
    mix of its patients. The coordinator dies after round 1 and resumes: the sites resend their
    releases, nobody is charged twice, and the audit recomputes every charge."""
    nodes = site_nodes(sites, state_root=tmp_path / "state", pub=coordinator_key[1], epsilon=8.0, delta=1e-5,
                       clip_norm=1.0, batch_size=16, noise_multiplicity=1,
                       histogram_noise_multiplier=DEFAULT_HISTOGRAM_NOISE)
    nodes[2] = dataclasses.replace(nodes[2], histogram_noise_multiplier=0.0)
    keys = publish_site_keys(nodes, RunFolder(tmp_path / "run").site_keys)
    run = RunConfig(run_dir=tmp_path / "run", bundle_path=demo_bundle, bundle_pub=coordinator_key[1], rounds=2,
                    min_sites=1, local_steps=2, lr=1e-3, pretrain_steps=10, pretrain_patients=64, site_keys=keys)

    def crash(row):
        if row["round"] == 1:
            raise RuntimeError("coordinator killed")

    with pytest.raises(RuntimeError, match="coordinator killed"):
        run_simulated(run, nodes, show_progress=False, after_round=crash)
    privacy = run_simulated(run, nodes, show_progress=False)

    # 1. each releasing site charged exactly one histogram, at ε of one Gaussian step; site-3 none
    alone = epsilon_for(noise_multiplier=SIGMA, sample_rate=1.0, steps=1, delta=1e-5)
    for site in ("site-1", "site-2", "site-3"):
        held = read_ledger(ledger_path(tmp_path / "run", site))
        assert [(e.kind, e.round) for e in held] == ([("histogram", 0)] if site != "site-3" else []) + \
            [("train", 1), ("train", 2)]
        rows = [r for r in privacy["sites"][site] if r["kind"] == "histogram"]
        if site == "site-3":
            assert not rows and site not in privacy["disease_mix"]
            sigma, q = held[-1].mechanism.noise_multiplier, held[-1].mechanism.sample_rate
            assert held[-1].epsilon == pytest.approx(epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=4,
                                                                 delta=1e-5), rel=1e-9)  # training only
            continue
        (histogram,) = [e for e in held if e.kind == "histogram"]
        assert histogram.mechanism.noise_multiplier == SIGMA and histogram.epsilon == pytest.approx(alone, rel=1e-9)
        assert [r["epsilon"] for r in rows] == [histogram.epsilon]
        composed = make_accountant("rdp")
        for e in held:
            composed.step(noise_multiplier=e.mechanism.noise_multiplier, sample_rate=e.mechanism.sample_rate,
                          steps=e.mechanism.steps)
        assert held[-1].epsilon == pytest.approx(composed.epsilon(delta=1e-5), rel=1e-9) and held[-1].epsilon <= 8.0
    audit = audit_run(tmp_path / "run")
    assert audit.ok, audit.all_problems
    checked = [c for s in audit.sites for c in s.entries if c.kind == "histogram"]
    assert len(checked) == 2 and all(c.agrees and c.independent_epsilon == pytest.approx(alone, rel=0.01)
                                     for c in checked)

    # 2. the model's mix: the sum of the releases (noise sd σ√2 per disease) plus site-3 spread evenly
    meta = json.loads((RunFolder(tmp_path / "run").model / "model.json").read_text())
    k = len(bundle.diseases)
    truth = sum(np.bincount(read_tensors(n, bundle, n.data_source).disease, minlength=k) for n in nodes[:2])
    assert list(truth[:2]) == list(SIZES[:2]) and truth[2:].sum() == 0
    expected = truth + SIZES[2] / k
    assert meta["disease_counts"] == pooled_disease_counts(privacy["disease_mix"], {"site-3": float(SIZES[2])}, k)
    # 6 sd of N(0, 2σ²) bounds each disease (a false alarm has probability < 2e-9 per disease); the
    # uniform mix the model had before is off by more than that on diseases 0 and 1
    bound = 6 * SIGMA * np.sqrt(2)
    counts = np.array(meta["disease_counts"])
    assert np.all(np.abs(counts - expected) <= bound)
    assert np.all(np.abs(expected[:2] - expected.sum() / k) > bound)
    mix = meta["privacy"]["disease_mix"]
    assert mix["source"] == "dp-histogram" and mix["uniform_sites"] == {"site-3": SIZES[2]}
    assert {s: v["noise_multiplier"] for s, v in mix["sites"].items()} == {"site-1": SIGMA, "site-2": SIGMA}
    assert statements.FEDERATED_DISEASE_MIX_DP in meta["privacy"]["statement"]
