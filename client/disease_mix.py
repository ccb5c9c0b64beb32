"""The site's disease mix, released once with differential privacy and charged to its budget.

A federated model draws the diseases of its synthetic patients in the training proportions,
and the site's disease histogram is a statistic of its patients: it leaves only through a
mechanism the accountant knows. Each patient has exactly one study disease, so patient i
contributes the one-hot vector e_{d(i)} (‖e‖ = 1) and the site releases

    h̃ = Σ_i e_{d(i)} + N(0, σ_h² I_K),        K = number of study diseases,

the Gaussian mechanism with L2 sensitivity 1 under add/remove-one (Dwork & Roth 2014, §3.5.3):
one DP-SGD step with sample rate 1 and noise multiplier σ_h, composed by the site's
accountant with its training and signed into its ledger as kind ``histogram`` (round 0).
The server sums the sites' h̃ (post-processing).

===========  ===========
symbol       variable
===========  ===========
e_{d(i)}     one row of the one-hot matrix behind ``np.bincount(tensors.disease)``
σ_h          ``node.histogram_noise_multiplier``
h̃            ``released``
===========  ===========

The release is made once per dataset and bundle: a later request (a resumed coordinator, a new
run over the same data) is answered with the kept release (``STATE/privacy/disease_mix.json``),
which costs nothing more, since it was already released. A site declines when its node config
sets ``histogram-noise-multiplier = 0``, or when the charge would leave too little budget for the
training its stored plan still needs; training comes first.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass

import numpy as np

from client.config import NodeConfig
from client.training import RoundConfig, Site, open_site, privacy_folder
from shared import protocol as P
from shared.atomic import write_bytes_atomic
from shared.privacy.ledger import export_entries, round_key
from shared.privacy.state import PrivacyState

log = logging.getLogger("raregraph.client")

KEPT = "disease_mix.json"  # the site's one release, resent to later requests at no further cost
MIX_ROUND = 0  # the release's server round: before round 1 of the run that asked first


@dataclass(frozen=True)
class MixRelease:
    """What the site replies: the noisy histogram (empty when it declined), the run whose ledger
    entry charged it, the metrics (:data:`shared.protocol.MIX_METRICS`) and the signed ledger."""

    counts: list[float]
    charged_in: str
    metrics: dict[str, float]
    ledger: str | None


def release_disease_mix(node: NodeConfig, cfg: RoundConfig) -> MixRelease:
    """The site's disease histogram plus Gaussian noise, charged once (see the module docstring).

    Parameters
    ----------
    node
        The site's node config (σ_h is ``histogram_noise_multiplier``).
    cfg
        The run's config as the server sent it (``server-round`` 0).

    Returns
    -------
    MixRelease
        ``counts``: patients per study disease in the bundle's order plus N(0, σ_h²) each
        (``[]`` when the site declined); ``charged_in``: the run it was charged in (this run, or
        an earlier one whose release is resent); ``metrics``: ε after the charge, δ, the budget, σ_h
        and ``refused`` = 1 when it declined; the site's signed ledger (``None`` when it declined
        without opening its state).

    Raises
    ------
    LedgerError, SignatureError, InputError
        As for training: a ledger or bundle that does not verify, bad site data, a foreign state.

    Assumptions
    -----------
    Every patient of the site's tensors has exactly one study disease (``tensors.disease``), so
    adding or removing one changes one bin by 1: L2 sensitivity 1. Record-level DP per site,
    add/remove-one, as for DP-SGD.
    """
    sigma = node.histogram_noise_multiplier
    if sigma == 0:
        log.info("site %s declines to release its disease mix: histogram-noise-multiplier is 0", node.site_id)
        return MixRelease([], "", release_metrics(node, float("nan"), sigma, refused=True), None)
    site = open_site(node, cfg)
    state, diseases = site.state, [str(d) for d in site.bundle.diseases["id"]]
    kept = _kept(node, state, diseases)
    if kept is not None:
        log.info("site %s resends the disease mix it released in run %s (no further charge)", node.site_id,
                 kept["run_id"])
        return MixRelease(list(kept["counts"]), kept["run_id"],
                          release_metrics(node, kept["epsilon"], kept["noise_multiplier"], refused=False),
                          export_entries(site.ledger.entries))
    round_id = round_key(cfg.run_id, MIX_ROUND, "histogram")
    if any(r.round_id == round_id for r in state.rounds):  # charged, but the kept release was lost
        log.warning("site %s declines to resend its disease mix of run %s: charged, but the release is no longer "
                    "kept", node.site_id, cfg.run_id)
        return _declined(node, site, sigma)
    after = state.epsilon_after_all([(1, sigma, 1.0), *planned_training(state, node, cfg, site.tensors.n)])
    if after > node.epsilon:
        log.warning("site %s declines to release its disease mix: ε with the training its plan still needs would "
                    "reach %.3f > budget %.3f", node.site_id, after, node.epsilon)
        return _declined(node, site, sigma)
    return _release(node, cfg, site, diseases, sigma)


def _release(node: NodeConfig, cfg: RoundConfig, site: Site, diseases: list[str], sigma: float) -> MixRelease:
    """Draw the noise, charge the accountant, sign the ledger, keep the release; in that order,
    so that nothing leaves uncharged and a crash never charges it twice."""
    histogram = np.bincount(np.asarray(site.tensors.disease, dtype=np.int64), minlength=len(diseases))
    noise = np.random.default_rng(secrets.randbits(128))  # never predictable from the run's seed
    released = [float(c) for c in histogram.astype(np.float64) + sigma * noise.standard_normal(len(diseases))]
    state = site.state
    epsilon = state.record_round(round_id=round_key(cfg.run_id, MIX_ROUND, "histogram"), steps=1,
                                 noise_multiplier=sigma, sample_rate=1.0, clip_norm=1.0, noise_multiplicity=1)
    site.ledger.append_round(state, run_id=cfg.run_id, server_round=MIX_ROUND, kind="histogram")
    kept = {"run_id": cfg.run_id, "fingerprint": state.fingerprint, "diseases": diseases, "counts": released,
            "noise_multiplier": sigma, "epsilon": epsilon}
    write_bytes_atomic(privacy_folder(node) / KEPT, (json.dumps(kept, indent=2) + "\n").encode(), durable=True)
    log.info("site %s released its disease mix (σ = %g): ε = %.3f of %.3f", node.site_id, sigma, epsilon,
             node.epsilon)
    return MixRelease(released, cfg.run_id, release_metrics(node, epsilon, sigma, refused=False),
                      export_entries(site.ledger.entries))


def _kept(node: NodeConfig, state: PrivacyState, diseases: list[str]) -> dict | None:
    """The kept release, if it is of this dataset and these study diseases (in order) and its
    charge is in the privacy state; else None (a new release is needed)."""
    path = privacy_folder(node) / KEPT
    if not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        charged = round_key(str(kept["run_id"]), MIX_ROUND, "histogram")
        usable = (kept["fingerprint"] == state.fingerprint and kept["diseases"] == diseases
                  and len(kept["counts"]) == len(diseases) and any(r.round_id == charged for r in state.rounds))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("site %s: %s is unreadable (%s); a new release would be charged", node.site_id, path, exc)
        return None
    return kept if usable else None


def planned_training(state: PrivacyState, node: NodeConfig, cfg: RoundConfig,
                      n: int) -> list[tuple[int, float, float]]:
    """The training the stored plan still needs in this run, when training will reuse it (the
    same q, steps, clip norm and multiplicity, as ``client.training`` decides); none otherwise,
    since a new plan is calibrated after the release, against what it left."""
    plan = state.plan
    if plan is None or (plan.sample_rate, plan.steps_per_round, plan.clip_norm, plan.noise_multiplicity) != (
            min(1.0, node.batch_size / n), cfg.local_steps, node.clip_norm, node.noise_multiplicity):
        return []
    return [(plan.steps_per_round * cfg.rounds, plan.noise_multiplier, plan.sample_rate)]


def _declined(node: NodeConfig, site: Site, sigma: float) -> MixRelease:
    return MixRelease([], "", release_metrics(node, site.state.epsilon(), sigma, refused=True),
                      export_entries(site.ledger.entries))


def release_metrics(node: NodeConfig, epsilon: float, sigma: float, *, refused: bool) -> dict[str, float]:
    return {P.EPSILON: float(epsilon), P.DELTA: node.delta, P.BUDGET_EPSILON: node.epsilon,
            P.NOISE_MULTIPLIER: float(sigma), P.REFUSED: 1.0 if refused else 0.0}
