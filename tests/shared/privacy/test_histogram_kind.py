"""The disease-mix release as a ledger kind: charged like an evaluation release (one Gaussian
step, q = 1), caught up by ``reconcile`` after a crash, restored from a ledger copy, and
recomputed by the audit with both accountants."""

from __future__ import annotations

import pytest

from shared.privacy.audit.audit import audit_ledgers
from shared.privacy.budget import PrivacyBudget, epsilon_for
from shared.privacy.ledger import Ledger, read_ledger, round_key, verify_chain
from shared.privacy.ledger.restore import restore_privacy_folder
from shared.privacy.state import PrivacyState
from shared.signing.keys import load_private_key, load_public_key, new_keypair

SITE = "hospital-a"
FP = "sha256:" + "ef" * 32


def _charge_histogram_then_train(state: PrivacyState) -> None:
    state.record_round(round_id=round_key("run1", 0, "histogram"), steps=1, noise_multiplier=5.0, sample_rate=1.0,
                       clip_norm=1.0, noise_multiplicity=1)
    state.record_round(round_id=round_key("run1", 1, "train"), steps=20, noise_multiplier=1.0, sample_rate=0.05,
                       clip_norm=1.0, noise_multiplicity=1)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_a_histogram_charge_is_reconciled_restored_and_recomputed(tmp_path, accountant) -> None:
    key, pub = new_keypair(tmp_path / "keys" / SITE)
    state = PrivacyState.load_or_create(tmp_path / "site", fingerprint=FP, budget=PrivacyBudget(epsilon=8.0, delta=1e-5),
                                        accountant=accountant)
    assert round_key("run1", 0, "histogram") == "run1:0:histogram"
    _charge_histogram_then_train(state)  # a crash before either ledger append
    ledger = Ledger(tmp_path / "site" / "ledger.jsonl", SITE, load_private_key(key))
    added = ledger.reconcile(state)
    assert [(e.run_id, e.round, e.kind) for e in added] == [("run1", 0, "histogram"), ("run1", 1, "train")]
    histogram = added[0]
    assert (histogram.mechanism.sample_rate, histogram.mechanism.steps, histogram.mechanism.noise_multiplier) == (
        1.0, 1, 5.0)
    assert histogram.epsilon == pytest.approx(epsilon_for(noise_multiplier=5.0, sample_rate=1.0, steps=1, delta=1e-5,
                                                          accountant=accountant), rel=1e-9)
    assert verify_chain(read_ledger(ledger.path), load_public_key(pub), site_id=SITE) == []
    # restored from the coordinator's copy, the state charges the same rounds under the same ids
    copy = tmp_path / "copy.jsonl"
    copy.write_text(ledger.path.read_text())
    restore_privacy_folder(copy, tmp_path / "restored", site_key=key)
    restored = PrivacyState.read(tmp_path / "restored")
    assert [r.round_id for r in restored.rounds] == ["run1:0:histogram", "run1:1"]
    assert restored.epsilon() == pytest.approx(state.epsilon(), rel=1e-9)
    # the audit recomputes every charge, the histogram included, with an independent accountant
    (tmp_path / "ledgers").mkdir()
    (tmp_path / "ledgers" / f"{SITE}.jsonl").write_text(ledger.path.read_text())
    result = audit_ledgers(tmp_path / "ledgers", tmp_path / "keys")
    assert result.ok, result.all_problems
    (site,) = result.sites
    assert [(c.kind, c.agrees) for c in site.entries] == [("histogram", True), ("train", True)]
    assert site.entries[0].independent_epsilon == pytest.approx(histogram.epsilon, rel=0.01, abs=0.02)
