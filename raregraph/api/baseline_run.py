"""A baseline fitted at simulated sites and pooled, into a run folder that ``raregraph generate``,
``evaluate``, ``release`` and ``audit`` read as they read a federation's (``raregraph federate
--method marginals|dpgan|prior``).

The sites are simulated in this process (no Flower: these baselines have no federated protocol
of their own), each from its node config as :func:`raregraph.api.federation.plan_federation`
made it: its patients are read as its ClientApp reads them, and every DP charge goes to its own
persistent privacy state and signed ledger under ``STATE/<site>/privacy``
(:mod:`shared.baselines.site_charge`), then into the run's copy ``RUN/ledger/<site>.jsonl``,
checked against the key the site published in ``RUN/site-keys``. The run folder::

    RUN/model/          the pooled baseline (:mod:`shared.baselines.model_folder`)
    RUN/privacy.json    {"run_id", "method", "sites": {site: [one row: ε, δ, σ, q, steps, ledger]}}
    RUN/ledger/, RUN/site-keys/, RUN/state/   as for a federation (no ledger without a charge)
"""

from __future__ import annotations

import json
import math
import uuid
from typing import TYPE_CHECKING

import numpy as np

from shared import protocol as P
from shared.atomic import write_bytes_atomic
from shared.console import err_console
from shared.runs import RunFolder

if TYPE_CHECKING:
    from client.config import NodeConfig
    from server.config import RunConfig
    from shared.baselines.site_charge import BaselineSite, SiteCharge


def run_baseline(run: RunConfig, nodes: list[NodeConfig], *, method: str, private: bool,
                 show_progress: bool = False) -> dict:
    """Fit ``method`` at the sites of ``nodes`` under their budget (none when ``private`` is
    False), pool it, write the run folder ``run.run_dir``; returns privacy.json's content.

    Parameters
    ----------
    run
        The run's paths (run folder, bundle, key, site keys) and the DP-GAN's rounds, local steps
        and seed.
    nodes
        One node config per site (its data, state folder, key, budget, batch size, clip norm), as
        :func:`raregraph.api.federation.plan_federation` made them.
    method
        ``marginals``, ``dpgan`` or ``prior``.
    private
        False: fit without DP (a reference); nothing is charged.
    show_progress
        Say what is being done on stderr.

    Raises
    ------
    InputError
        A site export that cannot be read or placed on the study's grid.
    BudgetExceededError
        A site's remaining budget cannot cover the fit (checked at every site before any fits).
    LedgerError
        A site's ledger does not verify, or the run's copy refuses it.
    """
    from shared.baselines.consortium import fit_dpgan, fit_marginals, fit_prior
    from shared.baselines.model_folder import save_baseline
    from shared.baselines.site_charge import STATEMENTS, plan_charges
    from shared.bundle import StudyBundle

    run_id = f"{method}-{uuid.uuid4().hex[:12]}"
    bundle = StudyBundle.load(run.bundle_path, run.bundle_pub)
    n_diseases = len(bundle.diseases)
    say = (lambda text: err_console.print(text, highlight=False)) if show_progress else (lambda _text: None)
    node = nodes[0]  # every node carries the run's budget and DP settings
    rounds, steps = run.rounds, run.rounds * run.local_steps
    sites = [] if method == "prior" else _read_sites(nodes, bundle, say)
    charges = []
    if private and sites:
        charges = plan_charges(sites, method=method, epsilon=node.epsilon, delta=node.delta, run_id=run_id,
                               steps=steps, batch_size=node.batch_size, clip_norm=node.clip_norm,
                               accountant=run.accountant)
    sigmas = [c.mechanism.noise_multiplier for c in charges] if charges else None
    epsilon = node.epsilon if private else None
    say(f"fitting {method} at {len(nodes)} sites" + ("" if private else " WITHOUT differential privacy"))
    if method == "marginals":
        generator = fit_marginals([s.tensors for s in sites], n_diseases, epsilon=epsilon, delta=node.delta,
                                  noise_multipliers=sigmas)
        counts = np.maximum(generator.patients, 0.0)  # the releases' noisy counts: post-processing
        mix = "the sites' noisy patient counts per disease (from the marginals' release)"
    elif method == "dpgan":
        generator = fit_dpgan([s.tensors for s in sites], bundle, epsilon=epsilon, delta=node.delta, rounds=rounds,
                              local_steps=run.local_steps, seed=run.seed, batch_size=node.batch_size,
                              clip_norm=node.clip_norm, noise_multipliers=sigmas)
        counts, mix = np.ones(n_diseases), "uniform (the DP-GAN releases no disease mix)"
    else:
        generator, counts, mix = fit_prior(bundle), np.ones(n_diseases), "uniform (the prior reads no patient)"
    if not counts.sum() > 0:
        counts, mix = np.ones(n_diseases), "uniform (the noisy counts summed to 0)"
    rows = (_charge_rows(run, charges, run_id=run_id) if charges else
            _uncharged_rows(nodes, sites, method=method, private=private, run_id=run_id,
                            steps=1 if method == "marginals" else steps))
    privacy = {"run_id": run_id, "method": method, "sites": rows, "note": _privacy_note(method, private)}
    statement = STATEMENTS[method if private or method == "prior" else None]
    settings = {} if method == "prior" else {"epsilon": node.epsilon if private else None, "delta": node.delta}
    if method == "dpgan":
        settings |= {"rounds": rounds, "local_steps": run.local_steps, "batch_size": node.batch_size,
                     "clip_norm": node.clip_norm, "seed": run.seed}
    save_baseline(generator, RunFolder(run.run_dir).model, bundle=bundle, disease_counts=[float(c) for c in counts],
                  settings=settings,
                  training={"run_id": run_id, "sites": sorted(rows), "patients": sum(s.tensors.n for s in sites),
                            "disease_mix": mix},
                  privacy={"mechanism": _mechanism(method, private), "statement": statement,
                           # null: no DP, so no ε (privacy.json records it as infinity, as a federation does)
                           "epsilon_per_site": {site: r[0]["epsilon"] if math.isfinite(r[0]["epsilon"]) else None
                                                for site, r in rows.items()}})
    write_bytes_atomic(RunFolder(run.run_dir).privacy, (json.dumps(privacy, indent=2) + "\n").encode())
    return privacy


def _read_sites(nodes: list[NodeConfig], bundle, say) -> list[BaselineSite]:
    """Every site's patients, read and tensorized as its ClientApp reads them, with its dataset's
    fingerprint and its privacy folder and key."""
    from client.training import privacy_folder, read_tensors
    from shared.baselines.site_charge import BaselineSite
    from shared.ehr.site import data_fingerprint

    sites = []
    for node in nodes:
        say(f"reading site {node.site_id}")
        sites.append(BaselineSite(site_id=node.site_id, tensors=read_tensors(node, bundle, node.data_source),
                                  fingerprint=data_fingerprint(node.data_source), state_path=privacy_folder(node),
                                  site_key=node.site_key))
    return sites


def _charge_rows(run: RunConfig, charges: list[SiteCharge], *, run_id: str) -> dict[str, list[dict]]:
    """Charge every site (its state, then its signed ledger, then the run's copy, checked with the
    key the site published) and return privacy.json's rows: one per site, as a federation's."""
    from shared.privacy.ledger import merge_site_entries
    from shared.signing.keys import load_public_key

    rows: dict[str, list[dict]] = {}
    for c in charges:
        entry = c.record(run_id=run_id)
        site_id, m = c.site.site_id, c.mechanism
        merge_site_entries(run.run_dir, c.ledger.entries, public_key=load_public_key(run.site_keys / f"{site_id}.pub"))
        rows[site_id] = [{"round": 1, "run_id": run_id, "kind": "train", P.NUM_EXAMPLES: float(c.site.tensors.n),
                          P.EPSILON: entry.epsilon, P.DELTA: entry.delta, P.BUDGET_EPSILON: entry.budget_epsilon,
                          P.NOISE_MULTIPLIER: m.noise_multiplier, P.SAMPLE_RATE: m.sample_rate,
                          P.STEPS: float(c.steps), P.CLIP_NORM: m.clip_norm, P.REFUSED: 0.0,
                          "accountant": entry.accountant, "ledger": True}]
    return rows


def _uncharged_rows(nodes: list[NodeConfig], sites: list[BaselineSite], *, method: str, private: bool, run_id: str,
                    steps: int) -> dict[str, list[dict]]:
    """privacy.json's rows of a fit that charged nothing: the prior (ε = 0) or one without DP (ε = ∞)."""
    patients = {s.site_id: float(s.tensors.n) for s in sites}
    base = {"round": 1, "run_id": run_id, P.REFUSED: 0.0, "ledger": False}
    if method == "prior":  # reads no patient: nothing spent, nothing to ledger
        return {n.site_id: [{**base, "kind": "public", P.NUM_EXAMPLES: 0.0, P.EPSILON: 0.0, P.DELTA: 0.0,
                             P.BUDGET_EPSILON: n.epsilon if private else math.inf}] for n in nodes}
    return {n.site_id: [{**base, "kind": "train", P.NUM_EXAMPLES: patients[n.site_id], P.EPSILON: math.inf,
                         P.DELTA: 0.0, P.BUDGET_EPSILON: math.inf, P.NOISE_MULTIPLIER: 0.0, P.SAMPLE_RATE: 0.0,
                         P.STEPS: float(steps), "accountant": "none"}] for n in nodes}


def _mechanism(method: str, private: bool) -> str:
    """model.json's one-line name of what protected the sites' patients."""
    if method == "prior":
        return "none needed: no patient data"
    if not private:
        return "none"
    return {"marginals": "Gaussian release of bounded sums per site", "dpgan": "DP-SGD on the discriminator per site"}[method]


def _privacy_note(method: str, private: bool) -> str:
    """privacy.json's note: how the baseline's spending was recorded, and what the ledger holds."""
    if method == "prior":
        return ("The prior sampler reads no patient record: no site spent any budget and no ledger entry was "
                "written (ε = 0 per site).")
    if not private:
        return ("Fitted WITHOUT differential privacy (epsilon = inf): no mechanism ran, nothing was charged and no "
                "ledger entry was written; a reference for evaluation only, not for release.")
    what = ("one Gaussian release (sample rate 1, one step, clip norm 1: the sensitivity)" if method == "marginals"
            else "DP-SGD on the discriminator (Poisson rate, σ, clip norm, rounds × local steps)")
    return (f"Each site's {what} was charged to its persistent privacy state and signed into its ledger as one "
            "entry of kind 'train', round 1 of this run, fitted in the coordinator's process on simulated sites; "
            "`raregraph audit` recomputes ε from the recorded mechanism.")
