"""One federation, as the ServerApp runs it: verify and distribute the bundle, run FedAvg
rounds, write the final model.

1. The coordinator's bundle is verified with its own public key (nothing unverified leaves).
2. Bundle distribution (``query.bundle`` messages): each site says whether it has the bundle's
   sha256 cached; those that do not get the files once, verify them with the key pinned in
   their node config, and cache them.
3. With knowledge guidance, the coordinator pretrains the shared model on patients drawn
   from the bundle's public knowledge alone (:mod:`shared.baselines.prior`; no patient data,
   no privacy cost): the sites' DP-SGD then starts from the textbook, not from zero.
4. The disease mix (``query.disease_mix``, before round 1): each site releases its disease
   histogram plus Gaussian noise once, charged to its budget (:mod:`client.disease_mix`), or
   resends the release it already made (a resumed run, a later run on the same data: no new
   charge), or declines. The sum is the mix ``generate`` draws conditions from.
5. ``strategy.start``: each round sends the global weights and the round config (with the
   bundle's hash only); sites train with DP-SGD and reply with weights and numbers.
6. The final weights become ``RUN/model`` (what ``raregraph generate`` reads).
7. Federated evaluation (``eval.per-disease`` > 0): a synthetic sample goes to every site,
   which returns the evaluation suite's numbers against its own patients
   (:mod:`server.site_evaluation`; ``RUN/evaluation``).

A coordinator that stopped mid-run (crash, kill, reboot) and is started again on the same
run folder and settings resumes after the last checkpointed round.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from server.config import RunConfig
from server.site_evaluation import evaluate_at_sites
from server.strategy import Resume, SiteFedAvg, read_checkpoint
from shared import protocol as P
from shared.bundle import StudyBundle, read_files
from shared.errors import RareGraphError
from shared.model import META_FILE
from shared.model.checkpoint import TrainedModel, build, model_meta
from shared.model.fit import train_local
from shared.privacy import statements
from shared.privacy.ledger.consortium import ConsortiumRecord
from shared.runs import RunFolder
from shared.baselines.prior import PriorSampler
from shared.model.settings import TrainConfig
from shared.atomic import write_bytes_atomic
from shared.signing.keys import load_public_key

log = logging.getLogger("raregraph.server")
#: ``progress(total)`` → a context that yields ``on_step(step, loss)``: how a caller shows the
#: coordinator's pretraining (``raregraph federate``: :func:`shared.console.step_progress`)
StepProgress = Callable[[int], AbstractContextManager[Callable[[int, float], None] | None]]
MIX_FLOOR = 1.0  # patients: the least weight a study disease keeps in the pooled noisy mix, so none is never drawn


def _resume_point(run: RunConfig) -> Resume | None:
    """The checkpoint to resume from, after checking it belongs to a run with these settings."""
    resume = read_checkpoint(run.run_dir)
    if resume is None:
        return None
    if (RunFolder(run.run_dir).model / META_FILE).is_file():
        raise FederationError(f"{run.run_dir}: this run finished (it has a model); start a new run in a new folder")
    recorded = json.loads(RunFolder(run.run_dir).settings.read_text())
    changed = sorted(k for k, v in run.as_mapping().items() if recorded.get(k) != v and k != "fed.round-timeout")
    if changed or recorded.get("run_id") != resume.run_id:
        raise FederationError(f"{run.run_dir}: cannot resume run {resume.run_id}: its settings differ "
                              f"({', '.join(changed) or 'run id'}); resume with the same run config or use a new folder")
    return resume


def update_bound(run: RunConfig, model: torch.nn.Module) -> float:
    """The norm each site's change of the weights is clipped to: ``fed.max-update-norm``, or by
    default lr × local steps × √(number of weights), the change of a round in which every AdamW
    step moved every weight by the learning rate. Honest rounds stay far below it (the demo: change
    norms 16.6 against a bound of 95.7), so clipping costs them nothing; a poisoned update (× 1000)
    is cut to it."""
    if run.max_update_norm > 0:
        return run.max_update_norm
    weights = sum(p.numel() for p in model.state_dict().values() if p.dtype.is_floating_point)
    return run.lr * run.local_steps * math.sqrt(weights)


class FederationError(RareGraphError):
    """The federation could not run (too few sites, no verified bundle, no round aggregated)."""


def wait_for_sites(grid: Grid, minimum: int, timeout: float) -> list[int]:
    """Node ids once at least ``minimum`` sites are connected."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() > deadline:
            raise FederationError(f"only {len(nodes)} of the {minimum} required sites connected in {timeout:.0f} s")
        time.sleep(1.0)


def distribute_bundle(grid: Grid, nodes: list[int], bundle: StudyBundle, timeout: float) -> list[int]:
    """Send the bundle to sites that lack it; return the nodes that have it verified."""
    offer = ConfigRecord({P.BUNDLE_SHA256: bundle.bundle_hash})
    replies = grid.send_and_receive(
        [Message(content=RecordDict({P.BUNDLE_OFFER: offer}), dst_node_id=n, message_type=P.BUNDLE_QUERY) for n in nodes],
        timeout=timeout)
    ready, need = [], []
    for r in replies:
        if r.has_error():
            log.warning("node %s did not answer the bundle offer: %s", r.metadata.src_node_id, r.error.reason)
            continue
        (ready if r.content[P.BUNDLE_STATUS]["status"] == P.CACHED else need).append(r.metadata.src_node_id)
    if need:
        files = ConfigRecord({name: data for name, data in read_files(bundle.path).items()})
        replies = grid.send_and_receive(
            [Message(content=RecordDict({P.BUNDLE_OFFER: offer, P.BUNDLE_FILES: files}), dst_node_id=n,
                     message_type=P.BUNDLE_QUERY) for n in need], timeout=timeout)
        for r in replies:
            if r.has_error():
                log.warning("node %s refused the bundle: %s", r.metadata.src_node_id, r.error.reason)
            else:
                ready.append(r.metadata.src_node_id)
    return sorted(ready)


def collect_disease_mix(grid: Grid, nodes: list[int], strategy: SiteFedAvg, config: ConfigRecord, *,
                        n_diseases: int, timeout: float) -> dict[str, dict]:
    """Ask every site for its disease-mix release (round 0 of the run's config); the verified
    releases by site (:meth:`server.strategy.SiteFedAvg.merge_disease_mix`)."""
    record = ConfigRecord({**dict(config), P.SERVER_ROUND: 0})
    replies = grid.send_and_receive(
        [Message(content=RecordDict({P.CONFIG: record}), dst_node_id=n, message_type=P.MIX_QUERY) for n in nodes],
        timeout=timeout)
    return strategy.merge_disease_mix(replies, n_diseases=n_diseases)


def pooled_disease_counts(releases: dict[str, dict], uniform: dict[str, float], n_diseases: int) -> list[float]:
    """Patients per study disease for the model's ``disease_counts``: post-processing of DP releases.

    ==============  ==================================================
    symbol          variable
    ==============  ==================================================
    h̃_s             ``releases[s]["counts"]`` (histogram + N(0, σ_s² I))
    n_u             ``uniform[u]``: a declining site's patient count
    K               ``n_diseases``
    c_min           :data:`MIX_FLOOR`
    ==============  ==================================================

    1. Sum the released histograms: Σ_s h̃_s (its noise sd per disease is √(Σ_s σ_s²)).
    2. Add each declining site as a uniform mix of its patients: n_u / K per disease.
    3. Clip below at c_min (noise can make a count negative; a disease keeps a little weight).

    Returns all ones (a uniform mix) when no site released and none reported a patient count.
    """
    if not releases and not uniform:
        return [1.0] * n_diseases
    counts = np.zeros(n_diseases, dtype=np.float64)
    for release in releases.values():
        counts += np.asarray(release["counts"], dtype=np.float64)
    counts += sum(uniform.values(), 0.0) / n_diseases
    return [round(float(c), 3) for c in np.maximum(counts, MIX_FLOOR)]


def _declined_sizes(strategy: SiteFedAvg) -> dict[str, float]:
    """Patient counts (num-examples, reported in the clear with training) of the sites that
    trained in this run without releasing a disease mix."""
    sizes = {}
    for site, rows in strategy.privacy.items():
        trained = [r[P.NUM_EXAMPLES] for r in rows if r["kind"] == "train" and r.get(P.NUM_EXAMPLES, 0) > 0]
        if site not in strategy.disease_mix and trained:
            sizes[site] = float(max(trained))
    return sizes


def _mix_meta(releases: dict[str, dict], uniform: dict[str, float]) -> dict:
    """What model.json (and so every data card) says about where the disease mix comes from."""
    return {"source": "dp-histogram" if releases else "uniform", "floor": MIX_FLOOR,
            "sites": {site: {"noise_multiplier": r["noise-multiplier"], "charged_in": r["charged-in"],
                             "epsilon_after": r["epsilon"]} for site, r in sorted(releases.items())},
            "uniform_sites": {site: n for site, n in sorted(uniform.items())},
            "noise_sd_per_disease": round(math.sqrt(sum(r["noise-multiplier"] ** 2 for r in releases.values())), 6)}


def run_federation(grid: Grid, run: RunConfig, *, on_round=None, pretrain_progress: StepProgress | None = None) -> dict:
    """Run all rounds; return a summary. Writes RUN/model, RUN/privacy.json, RUN/checkpoint.

    A run folder that holds a checkpoint but no model is resumed from its last round (same run
    id, same settings, the checkpointed weights, no pretraining); one that holds a model is
    finished and refused. ``pretrain_progress(total)``, when given, is entered around the
    pretraining and its ``on_step(step, loss)`` called after every step.
    """
    run.run_dir.mkdir(parents=True, exist_ok=True)
    bundle = StudyBundle.load(run.bundle_path, run.bundle_pub)
    resume = _resume_point(run)
    run_id = resume.run_id if resume is not None else uuid.uuid4().hex[:12]
    if resume is None:
        write_bytes_atomic(RunFolder(run.run_dir).settings,
                           (json.dumps({"run_id": run_id, **run.as_mapping()}, indent=2) + "\n").encode())
    else:
        log.warning("resuming run %s after round %d of %d from %s", run_id, resume.round, run.rounds,
                    RunFolder(run.run_dir).checkpoint)
    nodes = wait_for_sites(grid, run.min_sites, run.round_timeout)
    ready = distribute_bundle(grid, nodes, bundle, run.round_timeout)
    log.info("bundle %s verified at %d of %d sites", bundle.bundle_hash[:16], len(ready), len(nodes))
    if len(ready) < run.min_sites:
        raise FederationError(f"only {len(ready)} sites verified the bundle; {run.min_sites} needed")

    torch.manual_seed(run.seed)
    model, schedule, tables, layout = build(bundle, guidance=run.guidance)
    pretraining = None
    if resume is not None and resume.weights is not None:
        model.load_state_dict(resume.weights)
    elif run.guidance == "kg" and run.pretrain_steps:
        started = time.perf_counter()
        prior = PriorSampler(bundle)
        public = prior.sample(prior.uniform_conditions(run.pretrain_patients, seed=run.seed), seed=run.seed)
        with (pretrain_progress or (lambda _total: nullcontext()))(run.pretrain_steps) as on_step:
            pretrained, losses = train_local(public, bundle, guidance=run.guidance,
                                             config=TrainConfig(steps=run.pretrain_steps, seed=run.seed),
                                             on_step=on_step)
        model.load_state_dict(pretrained.model.state_dict())
        pretraining = {"patients": run.pretrain_patients, "steps": run.pretrain_steps, "final_loss": losses[-1],
                       "seconds": round(time.perf_counter() - started, 1), "source": "public knowledge (bundle)"}
        log.info("pretrained on %d public-prior patients, %d steps, %.0f s", run.pretrain_patients,
                 run.pretrain_steps, pretraining["seconds"])
    strategy = SiteFedAvg(run_dir=run.run_dir, run_id=run_id, outlier_factor=run.outlier_factor,
                          min_sites=run.min_sites, evaluate_fraction=run.evaluate_fraction,
                          site_keys=run.site_keys, resume=resume, on_round=on_round,
                          max_update_norm=update_bound(run, model), max_site_patients=run.max_site_patients,
                          max_site_share=run.max_site_share, rule=run.aggregate,  # type: ignore[arg-type]
                          consortium=ConsortiumRecord(run.consortium_record or RunFolder(run.run_dir).consortium_record,
                                                      auditor_pub=None if run.auditor_pub is None
                                                      else load_public_key(run.auditor_pub)))
    if resume is not None:
        strategy.record_resume()
    train_config = ConfigRecord({P.RUN_ID: run_id, P.ROUNDS: run.participation_rounds, P.LOCAL_STEPS: run.local_steps, P.LR: run.lr,
                                 P.GUIDANCE: run.guidance, P.BUNDLE_SHA256: bundle.bundle_hash,
                                 P.ACCOUNTANT: run.accountant, P.SEED: run.seed})
    collect_disease_mix(grid, ready, strategy, train_config, n_diseases=len(bundle.diseases),
                        timeout=run.round_timeout)
    started = time.perf_counter()
    remaining = run.rounds - strategy.done
    if remaining > 0:
        initial = ArrayRecord(model.state_dict())
        result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=remaining, timeout=run.round_timeout,
                                train_config=train_config, evaluate_config=ConfigRecord(dict(train_config)))
        if result.arrays is not None and len(result.arrays):
            model.load_state_dict(result.arrays.to_torch_state_dict())
    seconds = time.perf_counter() - started
    if not any(r["aggregated"] for r in strategy.rounds_log):
        raise FederationError("no round aggregated any site's update")
    epsilons = {site: max(r["epsilon"] for r in rows) for site, rows in strategy.privacy.items()}
    uniform = _declined_sizes(strategy)
    mix = _mix_meta(strategy.disease_mix, uniform)
    private = all(math.isfinite(e) for e in epsilons.values())  # one site without DP: the model is not private
    statement = " ".join((statements.FEDERATED_DP, statements.FEDERATED_DISEASE_MIX_DP if strategy.disease_mix
                          else statements.FEDERATED_DISEASE_MIX_UNIFORM)) if private else statements.NON_PRIVATE_FEDERATED
    meta = model_meta(
        model, schedule, bundle, guidance=run.guidance,
        disease_counts=pooled_disease_counts(strategy.disease_mix, uniform, len(bundle.diseases)),
        train={"rounds": run.rounds, "local_steps": run.local_steps, "lr": run.lr, "seed": run.seed,
               "pretraining": pretraining},
        training={"patients": None, "steps": run.rounds * run.local_steps, "seconds": round(seconds, 1),
                  "final_loss": strategy.rounds_log[-1]["metrics"].get(P.LOSS), "run_id": run_id,
                  "sites": sorted(strategy.privacy)},
        privacy={"mechanism": "DP-SGD per site" if private else "none", "epsilon_per_site": epsilons,
                 "statement": statement,
                 "disease_mix": mix})
    trained = TrainedModel(model=model, schedule=schedule, tables=tables, layout=layout, meta=meta)
    trained.save(RunFolder(run.run_dir).model, losses=[r["metrics"].get(P.LOSS, float("nan")) for r in strategy.rounds_log])
    evaluation = None
    if run.eval_per_disease:
        evaluation = evaluate_at_sites(grid, ready, trained, bundle, run_dir=run.run_dir, run_id=run_id,
                                       per_disease=run.eval_per_disease, seed=run.seed, timeout=run.round_timeout)
    return {"run_id": run_id, "seconds": seconds, "rounds": strategy.rounds_log, "epsilon": epsilons,
            "rejected": strategy.rejected, "evaluation": evaluation}
