"""One federated round at a site: check, plan, refuse or train with DP-SGD, charge, reply.

1. The cached bundle (by the hash the server names) is verified against the pinned key.
2. The site's OMOP export is read and tensorized; its fingerprint (sha256 of the files)
   ties the privacy state to this dataset.
3. The mechanism: σ is calibrated once for the planned participation and kept in the
   privacy state; a later round, a restarted client or a new run with the same batch
   size, steps, clip norm and multiplicity reuses it. Anything else is re-planned against
   what is left of the budget, never resetting what was spent. A site that takes part in
   DP evaluations (``eval-noise-multiplier`` > 0) plans room for one per round.
4. If the round's steps would take ε past the budget, the site refuses and sits out. A round
   it already trained (a coordinator that crashed and resumed asks again) is never trained or
   charged twice: the kept reply is resent.
5. Otherwise: DP-SGD for the round's steps from the global weights; the round is charged
   to the accountant and saved, then signed into the site's privacy ledger, *before* the
   weights leave the site. The reply carries the ledger (every entry, signed) so that the
   server keeps a copy the site cannot later roll back.

The ledger (``STATE/privacy/ledger.jsonl``, :mod:`shared.privacy.ledger`) is opened and verified
with the site's own key before anything else: a ledger that does not verify (edited,
truncated, another site's or another key's) stops the site, since a rewritten history is a
privacy incident. Charges a crash left out of it are appended from the privacy state.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from client import bundle_cache
from client.config import NodeConfig
from shared import protocol as P
from shared.bundle import StudyBundle
from shared.atomic import write_bytes_atomic
from shared.privacy.dp_sgd import Mechanism
from shared.ehr.cdm_connection import CdmDatabase
from shared.ehr.cohort import Cohort
from shared.ehr.site import data_fingerprint, read_site
from shared.privacy.ledger import Ledger, export_entries, key_use_path, round_key
from shared.model.checkpoint import build
from shared.privacy.budget import BudgetExceededError, MechanismPlan, PrivacyBudget
from shared.privacy.state import PrivacyState
from shared.signing.keys import load_private_key
from shared.trajectories.tensorize import tensorize
from shared.trajectories.tensors import TrajectoryTensors
from shared.model.fit import train_private

log = logging.getLogger("raregraph.client")


@dataclass(frozen=True)
class RoundConfig:
    """What the server says about this round (parsed from the message's config record)."""

    server_round: int
    run_id: str
    rounds: int
    local_steps: int
    lr: float
    guidance: str
    bundle_sha256: str
    accountant: str
    seed: int

    @classmethod
    def from_record(cls, record) -> RoundConfig:
        return cls(server_round=int(record[P.SERVER_ROUND]), run_id=str(record[P.RUN_ID]),
                   rounds=int(record[P.ROUNDS]), local_steps=int(record[P.LOCAL_STEPS]), lr=float(record[P.LR]),
                   guidance=str(record[P.GUIDANCE]), bundle_sha256=str(record[P.BUNDLE_SHA256]),
                   accountant=str(record[P.ACCOUNTANT]), seed=int(record[P.SEED]))


@dataclass
class RoundOutcome:
    weights: dict[str, torch.Tensor] | None  # None when the site sat out
    metrics: dict[str, float]
    ledger: str  # the site's whole signed ledger (JSON Lines), for the server's copy


@dataclass(frozen=True)
class Site:
    """What a round works with, opened and checked: bundle, patients, privacy state, ledger."""

    bundle: StudyBundle
    tensors: TrajectoryTensors
    state: PrivacyState
    ledger: Ledger


LAST_REPLY = "last_reply.pt"  # the last round's reply, resent if a resumed coordinator asks for it again


def privacy_folder(node: NodeConfig) -> Path:
    return node.state_path / "privacy"


def ledger_file(node: NodeConfig) -> Path:
    return privacy_folder(node) / "ledger.jsonl"


def open_privacy(node: NodeConfig, fingerprint: str, cfg: RoundConfig) -> tuple[PrivacyState, Ledger]:
    """The site's ledger, verified with its key and checked against the key's use record, then
    the privacy state (created only once the ledger passed), reconciled with the ledger; a budget
    changed since the last entry (raised only with ``budget-raise``) is signed as its own entry.

    Raises
    ------
    LedgerError
        The ledger does not verify, is another dataset's, lacks the head the key-use record holds
        (the privacy folder was lost), or disagrees with the state (reset or edited).
    SignatureError, InputError
        The site key cannot be read; the state is unreadable or another dataset's.
    """
    ledger = Ledger(ledger_file(node), node.site_id, load_private_key(node.site_key), key_use=key_use_path(node.site_key))
    ledger.check_key_use(fingerprint)
    state = PrivacyState.load_or_create(privacy_folder(node), fingerprint=fingerprint,
                                        budget=PrivacyBudget(epsilon=node.epsilon, delta=node.delta),
                                        accountant=cfg.accountant, allow_budget_raise=node.budget_raise)
    for entry in ledger.reconcile(state):
        log.warning("site %s: ledger entry %d (run %s round %d, %s) added from the privacy state: a charge an earlier "
                    "process recorded but did not sign", node.site_id, entry.seq, entry.run_id, entry.round, entry.kind)
    changed = ledger.append_budget(state, run_id=cfg.run_id, server_round=cfg.server_round)
    if changed is not None:
        log.warning("site %s: budget changed from ε = %g, δ = %g to ε = %g, δ = %g: signed as ledger entry %d",
                    node.site_id, changed.previous_budget["epsilon"], changed.previous_budget["delta"],
                    changed.budget_epsilon, changed.delta, changed.seq)
    return state, ledger


def _plan(state: PrivacyState, node: NodeConfig, cfg: RoundConfig, sample_rate: float) -> PrivacyState:
    plan = state.plan
    same = plan is not None and (plan.sample_rate, plan.steps_per_round, plan.clip_norm, plan.noise_multiplicity) == (
        sample_rate, cfg.local_steps, node.clip_norm, node.noise_multiplicity)
    if same:
        return state
    remaining = max(1, cfg.rounds - cfg.server_round + 1)
    # room for one DP evaluation per remaining round when the site takes part in them
    reserve = ((remaining, node.eval_noise_multiplier, 1.0),) if node.eval_noise_multiplier > 0 else ()
    sigma = state.calibrate_remaining(sample_rate=sample_rate, steps=remaining * cfg.local_steps, reserve=reserve)
    new_plan = MechanismPlan(noise_multiplier=sigma, sample_rate=sample_rate, steps_per_round=cfg.local_steps,
                             rounds=remaining, clip_norm=node.clip_norm, noise_multiplicity=node.noise_multiplicity)
    log.info("site %s: σ = %.3f planned for %d rounds × %d steps at q = %.4f", node.site_id, sigma, remaining,
             cfg.local_steps, sample_rate)
    return PrivacyState.load_or_create(privacy_folder(node), fingerprint=state.fingerprint, budget=state.budget,
                                       accountant=cfg.accountant, plan=new_plan)


def open_site(node: NodeConfig, cfg: RoundConfig) -> Site:
    """The site's privacy state and verified ledger, the verified cached bundle, and the
    site's patients as tensors.

    Raises
    ------
    LedgerError
        The site's ledger does not verify, lacks what the key-use record holds, or disagrees with
        its privacy state.
    SignatureError
        The bundle is not cached or does not verify.
    InputError
        Bad site data or a privacy state for another dataset.
    """
    torch.set_num_threads(node.threads)
    state, ledger = open_privacy(node, data_fingerprint(node.data_source), cfg)
    bundle = bundle_cache.load(node.state_path, cfg.bundle_sha256, node.coordinator_pub)
    return Site(bundle, read_tensors(node, bundle, node.data_source), state, ledger)


def read_cohort(node: NodeConfig, bundle: StudyBundle, folder: Path | CdmDatabase) -> Cohort:
    """A site folder (OMOP or FHIR Bulk) or CDM database read with the node's code settings; from
    a database only the persons who may have a study diagnosis are read (the filter runs in SQL:
    :mod:`shared.ehr.omop_db`).

    Raises
    ------
    InputError
        Bad site data.
    """
    cohort, _ = read_site(folder, skip_bad_rows=node.skip_bad_rows, bundle=bundle, sex_codes=node.sex_code_map,
                          accept=node.code_accept, site_codemap=node.site_code_map,  # type: ignore[arg-type]
                          study_only=True)
    return cohort


def read_tensors(node: NodeConfig, bundle: StudyBundle, folder: Path | CdmDatabase) -> TrajectoryTensors:
    """:func:`read_cohort`, tensorized with the bundle."""
    return tensorize(read_cohort(node, bundle, folder), bundle)[0]


def train_round(node: NodeConfig, cfg: RoundConfig, global_weights: dict[str, torch.Tensor]) -> RoundOutcome:
    """Run one round at the site (see the module docstring).

    Raises
    ------
    SignatureError
        The bundle is not cached or does not verify (the site refuses to train).
    InputError
        Bad site data or a privacy state for another dataset.
    """
    site = open_site(node, cfg)
    bundle, tensors, state = site.bundle, site.tensors, site.state
    n = tensors.n
    sample_rate = min(1.0, node.batch_size / n)
    try:
        state = _plan(state, node, cfg, sample_rate)
    except BudgetExceededError:  # nothing meaningful is left: sit out with the previous plan's numbers
        pass
    plan = state.plan
    sigma = plan.noise_multiplier if plan is not None else float("inf")
    base = {P.DELTA: node.delta, P.NOISE_MULTIPLIER: sigma, P.SAMPLE_RATE: sample_rate,
            P.STEPS: float(cfg.local_steps), P.CLIP_NORM: node.clip_norm,
            P.NOISE_MULTIPLICITY: float(node.noise_multiplicity), P.BUDGET_EPSILON: node.epsilon}
    charged = round_key(cfg.run_id, cfg.server_round, "train")
    if any(r.round_id == charged for r in state.rounds):  # a coordinator that resumed asks again
        return _repeat(node, cfg, site, charged, {**base, P.NUM_EXAMPLES: 0.0, P.LOSS: 0.0, P.EPSILON: state.epsilon(),
                                                  P.REFUSED: 1.0, P.STEPS: 0.0})
    if plan is None or not state.can_afford(steps=cfg.local_steps, noise_multiplier=sigma, sample_rate=sample_rate):
        after = state.epsilon_after(steps=cfg.local_steps, noise_multiplier=sigma, sample_rate=sample_rate) \
            if plan is not None else float("inf")
        log.warning("site %s sits out round %d: ε would reach %.3f > budget %.3f (spent %.3f)", node.site_id,
                    cfg.server_round, after, node.epsilon, state.epsilon())
        return RoundOutcome(None, {**base, P.NUM_EXAMPLES: 0.0, P.LOSS: 0.0, P.EPSILON: state.epsilon(),
                                   P.REFUSED: 1.0, P.STEPS: 0.0}, export_entries(site.ledger.entries))

    seed = (cfg.seed * 1_000_003 + cfg.server_round * 7919 + int(hashlib.sha256(node.site_id.encode()).hexdigest()[:8], 16))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model, schedule, tables, layout = build(bundle, guidance=cfg.guidance)
    model.load_state_dict(global_weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    mechanism = Mechanism(noise_multiplier=plan.noise_multiplier, clip_norm=node.clip_norm, sample_rate=sample_rate,
                          noise_multiplicity=node.noise_multiplicity)
    x0 = layout.to_vectors(tensors)
    disease = torch.from_numpy(np.array(tensors.disease, dtype=np.int64))
    losses, epsilon = train_private(model, optimizer, x0, disease, mechanism=mechanism, state=state, round_id=charged,
                                    steps=cfg.local_steps, schedule=schedule, tables=tables, cond_drop=0.1,
                                    generator=generator)
    site.ledger.append_round(state, run_id=cfg.run_id, server_round=cfg.server_round, kind="train")
    log.info("site %s round %d: %d DP-SGD steps, ε = %.3f of %.3f", node.site_id, cfg.server_round, cfg.local_steps,
             epsilon, node.epsilon)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    loss = float(np.nanmean(losses)) if np.isfinite(losses).any() else 0.0
    metrics = {**base, P.NUM_EXAMPLES: float(n), P.LOSS: loss, P.EPSILON: epsilon, P.REFUSED: 0.0}
    _save_reply(node, charged, weights, metrics)
    return RoundOutcome(weights, metrics, export_entries(site.ledger.entries))


def _save_reply(node: NodeConfig, round_id: str, weights: dict[str, torch.Tensor], metrics: dict[str, float]) -> None:
    """Keep the round's reply (weights already released, so no new privacy cost to resend)."""
    buffer = io.BytesIO()
    torch.save({"round_id": round_id, "weights": weights, "metrics": metrics}, buffer)
    write_bytes_atomic(privacy_folder(node) / LAST_REPLY, buffer.getvalue())


def _repeat(node: NodeConfig, cfg: RoundConfig, site: Site, round_id: str, sat_out: dict[str, float]) -> RoundOutcome:
    """A round this site already trained and was charged for: resend that reply, never train
    (and charge) it again; sit out if the reply is not kept (it was not the last one)."""
    path = privacy_folder(node) / LAST_REPLY
    saved = torch.load(path, weights_only=True) if path.is_file() else None
    ledger = export_entries(site.ledger.entries)
    if saved is not None and saved["round_id"] == round_id:
        log.info("site %s: round %d of run %s was already trained; resending that reply", node.site_id,
                 cfg.server_round, cfg.run_id)
        return RoundOutcome(saved["weights"], saved["metrics"], ledger)
    log.warning("site %s sits out round %d of run %s: it was already trained and charged, and its reply is no longer "
                "kept", node.site_id, cfg.server_round, cfg.run_id)
    return RoundOutcome(None, sat_out, ledger)
