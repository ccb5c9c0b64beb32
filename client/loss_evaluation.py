"""Federated evaluation at a site: the global model's denoising loss on the site's patients,
released with differential privacy and charged to the site's budget.

A loss measured on the site's patients is a statistic of them, so it leaves only through a
mechanism the accountant knows. Each patient i contributes the vector

    v_i = (min(ℓ_i, B) / B, 1) / √2,        ‖v_i‖ ≤ 1,

where ℓ_i is the patient's denoising loss (the training objective, averaged over K fixed
noise draws, the condition kept) and B the node's ``eval-loss-clip``. The site releases
Σ_i v_i + N(0, σ_e² I₂): the Gaussian mechanism with L2 sensitivity 1 under add/remove-one,
which is exactly one DP-SGD step with sample rate 1 and noise multiplier σ_e — the site's
accountant composes it with its training and the ledger records it. The server pools the
noisy sums over sites (loss = Σ sums / Σ counts), which averages the noise down.

A site evaluates only when its node config sets ``eval-noise-multiplier`` > 0 and the charge
leaves enough budget for the training rounds still planned in this run; otherwise it
declines and reports nothing measured on its data. Training always comes first.
"""

from __future__ import annotations

import logging
import math
import secrets

import numpy as np
import torch

from client.config import NodeConfig
from client.training import RoundConfig, open_site
from shared import protocol as P
from shared.privacy.ledger import export_entries, round_key
from shared.model.checkpoint import build
from shared.model.training import per_sample_loss

log = logging.getLogger("raregraph.client")

EVAL_DRAWS = 8  # noise draws per patient in the evaluation loss


def declined(node: NodeConfig, epsilon: float) -> dict[str, float]:
    return {P.EVAL_LOSS_SUM: 0.0, P.EVAL_COUNT: 0.0, P.EVAL_LOSS_SUM_STD: 0.0, P.EVAL_COUNT_STD: 0.0, P.EPSILON: epsilon,
            P.BUDGET_EPSILON: node.epsilon, P.DELTA: node.delta, P.REFUSED: 1.0}


def evaluate_round(node: NodeConfig, cfg: RoundConfig,
                   global_weights: dict[str, torch.Tensor]) -> tuple[dict[str, float], str | None]:
    """Evaluate the global weights on the site's patients (see the module docstring).

    Returns
    -------
    tuple
        The metrics: ``eval-loss-sum`` and ``eval-count`` (noisy; loss units and patients)
        with the standard deviations of their noise, ε spent so far, and ``refused`` = 1 when
        the site declined; and the site's signed ledger (``None`` when the site declined
        without opening its state).

    Raises
    ------
    LedgerError, SignatureError, InputError
        As for training: a ledger or bundle that does not verify, bad site data, a foreign state.
    """
    if node.eval_noise_multiplier == 0:
        log.info("site %s declines evaluation round %d: eval-noise-multiplier is 0", node.site_id, cfg.server_round)
        return declined(node, float("nan")), None
    site = open_site(node, cfg)
    bundle, tensors, state = site.bundle, site.tensors, site.state
    if any(r.round_id == round_key(cfg.run_id, cfg.server_round, "evaluate") for r in state.rounds):
        log.info("site %s declines evaluation round %d of run %s: already released", node.site_id, cfg.server_round,
                 cfg.run_id)
        return declined(node, state.epsilon()), export_entries(site.ledger.entries)
    sigma = node.eval_noise_multiplier
    remaining = []
    plan = state.plan
    if plan is not None and cfg.rounds > cfg.server_round:
        remaining = [(plan.steps_per_round * (cfg.rounds - cfg.server_round), plan.noise_multiplier,
                      plan.sample_rate)]
    after = state.epsilon_after_all([(1, sigma, 1.0), *remaining])
    if after > node.epsilon:
        log.warning("site %s declines evaluation round %d: ε with the %d training rounds still planned would reach "
                    "%.3f > budget %.3f", node.site_id, cfg.server_round, cfg.rounds - cfg.server_round, after,
                    node.epsilon)
        return declined(node, state.epsilon()), export_entries(site.ledger.entries)

    model, schedule, tables, layout = build(bundle, guidance=cfg.guidance)
    model.load_state_dict(global_weights)
    model.eval()
    x0 = layout.to_vectors(tensors)
    disease = torch.from_numpy(np.array(tensors.disease, dtype=np.int64))
    draws = torch.Generator().manual_seed(cfg.seed * 1_000_003 + cfg.server_round)  # the same noise at every site
    with torch.no_grad():
        losses = per_sample_loss(model, schedule, tables, x0, disease, cond_drop=0.0, generator=draws,
                                 multiplicity=EVAL_DRAWS)
    clip = node.eval_loss_clip
    contribution = torch.stack([losses.clamp(0.0, clip) / clip, torch.ones_like(losses)], dim=1) / math.sqrt(2.0)
    noise = torch.Generator().manual_seed(secrets.randbits(63))  # never predictable from the run's seed
    released = contribution.sum(dim=0) + sigma * torch.randn(2, generator=noise)
    epsilon = state.record_round(round_id=round_key(cfg.run_id, cfg.server_round, "evaluate"), steps=1,
                                 noise_multiplier=sigma, sample_rate=1.0, clip_norm=clip,
                                 noise_multiplicity=EVAL_DRAWS)
    site.ledger.append_round(state, run_id=cfg.run_id, server_round=cfg.server_round, kind="evaluate")
    log.info("site %s evaluation round %d: ε = %.3f of %.3f", node.site_id, cfg.server_round, epsilon, node.epsilon)
    scale = math.sqrt(2.0)
    metrics = {P.EVAL_LOSS_SUM: float(released[0]) * scale * clip, P.EVAL_COUNT: float(released[1]) * scale,
               P.EVAL_LOSS_SUM_STD: sigma * scale * clip, P.EVAL_COUNT_STD: sigma * scale, P.EPSILON: epsilon,
               P.BUDGET_EPSILON: node.epsilon, P.DELTA: node.delta, P.REFUSED: 0.0}
    return metrics, export_entries(site.ledger.entries)
