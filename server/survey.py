"""A survey run, as the ServerApp runs it (``survey.run = true``): no training; every site releases,
once and with differential privacy, noisy counts of the bundle's public candidate codes outside its
vocabulary and of its event times (:mod:`client.vocabulary_survey`), and the coordinator pools them into
``RUN/survey.json`` for ``raregraph bundle grow`` (:mod:`kg.growth`), which cuts the second signed
bundle from them.

1. The bundle is verified and distributed as for training (:func:`server.federation.distribute_bundle`).
2. ``query.survey`` goes to every site with the request (:class:`shared.survey.SurveyRequest`); a
   release is kept only when the site's ledger verifies and holds the entry that charged it
   (:meth:`server.strategy.SiteFedAvg.merge_releases`), as for the disease mix.
3. Pooling is a sum (post-processing): per candidate code, Σ_s r_{s,c} with noise sd
   √(Σ_s sd_s²); per time bin the same. ``patients`` estimates the number of study patients
   with events (each one's time shares sum to 1).

``survey.json`` holds every candidate whose pooled count exceeds one noise sd (the rest is noise
for any threshold ``bundle grow`` would use), with its domain; the time bins whole.
"""

from __future__ import annotations

import json
import logging
import math
import uuid

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from server.config import RunConfig
from server.federation import FederationError, distribute_bundle, wait_for_sites
from server.strategy import SiteFedAvg
from shared import protocol as P
from shared.atomic import write_bytes_atomic
from shared.bundle import StudyBundle
from shared.privacy.ledger.consortium import ConsortiumRecord
from shared.runs import RunFolder
from shared.signing.keys import load_public_key
from shared.survey import SURVEY_FORMAT, SurveyRequest

log = logging.getLogger("raregraph.server")


def pool_survey(releases: dict[str, dict], candidates, request: SurveyRequest) -> dict:
    """The pooled release (``survey.json`` without its header): see the module docstring."""
    codes = np.zeros(len(candidates), dtype=np.float64)
    time = np.zeros(request.bins, dtype=np.float64)
    for release in releases.values():
        codes += np.asarray(release["codes"], dtype=np.float64)
        time += np.asarray(release["time"], dtype=np.float64)
    code_sd = math.sqrt(sum(request.code_sd(r["noise-multiplier"]) ** 2 for r in releases.values()))
    time_sd = math.sqrt(sum(request.time_sd(r["noise-multiplier"]) ** 2 for r in releases.values()))
    keep = np.flatnonzero(codes > code_sd)
    domains = candidates["domain"].to_numpy()
    names = candidates["code"].to_numpy()
    return {
        "code_noise_sd": round(code_sd, 4), "time_noise_sd": round(time_sd, 4),
        "patients": round(float(time.sum()), 2),
        "codes": {str(names[j]): {"count": round(float(codes[j]), 3), "domain": str(domains[j])} for j in keep},
        "time": {"edges": list(request.time_edges), "mass": [round(float(t), 3) for t in time]},
    }


def run_survey(grid: Grid, run: RunConfig) -> dict:
    """Run a survey (see the module docstring); write ``RUN/survey.json`` and ``RUN/privacy.json``.

    Raises
    ------
    FederationError
        The bundle has no survey candidates, too few sites verified it, or no site released.
    """
    run.run_dir.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(run.run_dir)
    bundle = StudyBundle.load(run.bundle_path, run.bundle_pub)
    candidates = bundle.survey_candidates()
    if candidates is None:
        raise FederationError(f"{run.bundle_path}: the bundle has no survey candidates (candidates.parquet); make it "
                              "again with this version's `raregraph bundle make`")
    if folder.survey.exists():
        raise FederationError(f"{run.run_dir}: this survey finished (it has survey.json); start a new one in a new folder")
    request = run.survey_request()
    run_id = uuid.uuid4().hex[:12]
    write_bytes_atomic(folder.settings, (json.dumps({"run_id": run_id, **run.as_mapping()}, indent=2) + "\n").encode())
    nodes = wait_for_sites(grid, run.min_sites, run.round_timeout)
    ready = distribute_bundle(grid, nodes, bundle, run.round_timeout)
    if len(ready) < run.min_sites:
        raise FederationError(f"only {len(ready)} sites verified the bundle; {run.min_sites} needed")
    strategy = SiteFedAvg(run_dir=run.run_dir, run_id=run_id, outlier_factor=run.outlier_factor,
                          min_sites=run.min_sites, evaluate_fraction=0.0, site_keys=run.site_keys, resume=None,
                          on_round=None, max_update_norm=1.0, max_site_patients=run.max_site_patients,
                          max_site_share=run.max_site_share, rule=run.aggregate,  # type: ignore[arg-type]
                          consortium=ConsortiumRecord(run.consortium_record or folder.consortium_record,
                                                      auditor_pub=None if run.auditor_pub is None
                                                      else load_public_key(run.auditor_pub)))
    config = ConfigRecord({P.RUN_ID: run_id, P.ROUNDS: run.participation_rounds, P.LOCAL_STEPS: run.local_steps,
                           P.LR: run.lr, P.GUIDANCE: run.guidance, P.BUNDLE_SHA256: bundle.bundle_hash,
                           P.ACCOUNTANT: run.accountant, P.SEED: run.seed, P.SERVER_ROUND: 0})
    replies = grid.send_and_receive(
        [Message(content=RecordDict({P.CONFIG: config, P.SURVEY: ConfigRecord(request.to_record())}), dst_node_id=n,
                 message_type=P.SURVEY_QUERY) for n in ready], timeout=run.round_timeout)
    size = len(candidates) + request.bins

    def problem(record) -> str | None:
        values = [*record[P.SURVEY_CODES], *record[P.SURVEY_TIME]]
        if len(record[P.SURVEY_CODES]) != len(candidates) or len(values) != size or \
                not all(math.isfinite(float(v)) for v in values):
            return f"a survey release of {len(values)} values, not {size} finite ones"
        return None

    releases = {site: {"codes": list(rec[P.SURVEY_CODES]), "time": list(rec[P.SURVEY_TIME]),
                       "noise-multiplier": float(m[P.NOISE_MULTIPLIER]), "epsilon": float(m[P.EPSILON]),
                       "charged-in": charged_in}
                for site, m, rec, charged_in in strategy.merge_releases(replies, record=P.SURVEY, run_key=P.SURVEY_RUN,
                                                                        what="vocabulary survey", problem=problem)}
    strategy.save_records()
    if not releases:
        rejected = "; ".join(f"{r['site']}: {r['reason']}" for r in strategy.rejected[:1])
        raise FederationError("no site's vocabulary survey was accepted: "
                              + (f"{len(strategy.rejected)} rejected (first: {rejected})" if rejected else
                                 "every site declined or failed (a site opts in with survey-noise-multiplier > 0 "
                                 "in its node config; see the sites' logs)"))
    survey = {"format": SURVEY_FORMAT, "run_id": run_id, "bundle_sha256": bundle.bundle_hash,
              "request": request.to_record(),
              "sites": {site: {"noise_multiplier": r["noise-multiplier"], "epsilon_after": r["epsilon"],
                               "charged_in": r["charged-in"]} for site, r in sorted(releases.items())},
              "sites_asked": len(ready),
              "candidates": len(candidates), **pool_survey(releases, candidates, request)}
    write_bytes_atomic(folder.survey, (json.dumps(survey, indent=2) + "\n").encode())
    log.info("survey %s: %d sites released; %d candidate codes above one noise sd (%.1f patients)", run_id,
             len(releases), len(survey["codes"]), survey["code_noise_sd"])
    return survey
