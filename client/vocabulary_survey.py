"""The site's vocabulary survey: which public codes its patients record, and when, released once
with differential privacy and charged to its budget.

The first bundle's vocabulary and time grid come from public knowledge only; where the graph
misses what sites record, the coordinator grows them from this release (:mod:`kg.growth`, a
second signed bundle). Per study patient i (those the bundle's tensorizer places: a study
diagnosis, its first date the index date):

- c_i ∈ {0,1}^K: which of the bundle's K public candidate codes outside its vocabulary
  (:meth:`shared.bundle.StudyBundle.survey_candidates`) the patient's records hold, study
  diagnoses aside, after the code map; a patient with more than m such codes keeps m of them,
  drawn at random (contribution bounding), so ‖c_i‖₂ ≤ √m;
- h_i ∈ [0,1]^B: the share of the patient's events (every recorded event, any code; a drug by
  its start) in each of the B bins between the request's ``time-edges`` (days from the index
  date; bin b holds edge_{b-1} ≤ day < edge_b, the first and last bins are open);
  ‖h_i‖₂ ≤ ‖h_i‖₁ = 1.

The site releases, with S = √(1 + w²) the L2 sensitivity of one patient's row,

    r = Σ_i (c_i / √m, w·h_i) + N(0, σ² S² I_{K+B}),

the Gaussian mechanism under add/remove-one (Dwork & Roth 2014, §3.5.3), charged by the site's
accountant as one step at sample rate 1 and noise multiplier σ, and signed into its ledger as
kind ``histogram`` (round 0 of the survey's run). The reply carries r rescaled to patients:
codes √m·r_c (noise sd σ·S·√m each) and time w⁻¹·r_t (noise sd σ·S/w each).

Because the candidate list is public and fixed before any site answers, a code no patient has
is released as pure noise and costs nothing more; choosing codes from the pooled release is
post-processing.

===========  ==============================
symbol       variable
===========  ==============================
m            ``request.max_codes``
w            ``request.time_weight``
σ            ``node.survey_noise_multiplier``
S            ``sensitivity``
===========  ==============================

The release is made once per dataset, bundle and request: a later identical request is answered
with the kept release (``STATE/privacy/survey.json``) at no further cost. A site declines when its
node config sets ``survey-noise-multiplier = 0`` or when the charge would leave too little budget
for the training its stored plan still needs.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from dataclasses import dataclass

import numpy as np
import pandas as pd

from client.config import NodeConfig
from client.disease_mix import planned_training, release_metrics
from client.training import RoundConfig, open_privacy, privacy_folder
from client import bundle_cache
from shared.atomic import write_bytes_atomic
from shared.bundle import StudyBundle
from shared.survey import SurveyRequest
from shared.ehr.site import data_fingerprint, read_site
from shared.errors import ConfigError
from shared.privacy.ledger import Ledger, export_entries, round_key
from shared.privacy.state import PrivacyState
from shared.trajectories.tensorize import tensorize

log = logging.getLogger("raregraph.client")

KEPT = "survey.json"  # the site's release per request, resent to later identical requests at no further cost
SURVEY_ROUND = 0  # the release's server round in the survey's run


@dataclass(frozen=True)
class SurveyRelease:
    """What the site replies: code counts in the candidates' order and time-bin masses, both in
    patients and noisy (empty when it declined), the run that charged it, metrics and its ledger."""

    codes: list[float]
    time: list[float]
    charged_in: str
    metrics: dict[str, float]
    ledger: str | None


def survey_rows(events: pd.DataFrame, persons: pd.DataFrame, candidates: list[str], request: SurveyRequest,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Σ_i c_i (bounded to ``max_codes`` per patient) and Σ_i h_i, before noise (the module docstring).

    ``persons``: ``person_id`` and ``index_date`` (datetime64[D]) of the study patients; ``events``:
    their events other than the study diagnosis (``person_id``, ``date``, ``code``).
    """
    col = {c: j for j, c in enumerate(candidates)}
    codes = np.zeros(len(candidates), dtype=np.float64)
    time = np.zeros(request.bins, dtype=np.float64)
    edges = np.asarray(request.time_edges, dtype=np.int64)
    index = dict(zip(persons["person_id"].to_numpy(), persons["index_date"].to_numpy().astype("datetime64[D]")))
    for pid, own in events.groupby("person_id", sort=True):
        js = np.unique([j for c in own["code"].unique() if (j := col.get(c)) is not None]).astype(np.int64)
        if len(js) > request.max_codes:
            js = rng.choice(js, size=request.max_codes, replace=False)
        codes[js] += 1.0
        days = (own["date"].to_numpy().astype("datetime64[D]") - index[pid]).astype(np.int64)
        time += np.bincount(np.searchsorted(edges, days, side="right"), minlength=request.bins) / len(days)
    return codes, time


def release_survey(node: NodeConfig, cfg: RoundConfig, request: SurveyRequest) -> SurveyRelease:
    """The site's survey release, charged once (see the module docstring).

    Raises
    ------
    LedgerError, SignatureError, InputError
        As for training: a ledger or bundle that does not verify, bad site data, a foreign state.
    ConfigError
        The bundle has no survey candidates (made before they existed).
    """
    sigma = node.survey_noise_multiplier
    if sigma == 0:
        log.info("site %s declines the vocabulary survey: survey-noise-multiplier is 0", node.site_id)
        return SurveyRelease([], [], "", release_metrics(node, float("nan"), sigma, refused=True), None)
    state, ledger = open_privacy(node, data_fingerprint(node.data_source), cfg)
    bundle = bundle_cache.load(node.state_path, cfg.bundle_sha256, node.coordinator_pub)
    table = bundle.survey_candidates()
    if table is None:
        raise ConfigError("the study bundle has no survey candidates (candidates.parquet): make it again with "
                          "this version's `raregraph bundle make`")
    candidates = table["code"].tolist()
    kept = _kept(node, state, bundle, request)
    if kept is not None:
        log.info("site %s resends the survey it released in run %s (no further charge)", node.site_id, kept["run_id"])
        return SurveyRelease(kept["codes"], kept["time"], kept["run_id"],
                             release_metrics(node, kept["epsilon"], sigma, refused=False), export_entries(ledger.entries))
    round_id = round_key(cfg.run_id, SURVEY_ROUND, "histogram")
    if any(r.round_id == round_id for r in state.rounds):
        log.warning("site %s declines to resend its survey of run %s: charged, but no longer kept", node.site_id,
                    cfg.run_id)
        return _declined(node, state, ledger, sigma)
    cohort, _ = read_site(node.data_source, skip_bad_rows=node.skip_bad_rows, bundle=bundle,
                          sex_codes=node.sex_code_map, accept=node.code_accept,  # type: ignore[arg-type]
                          site_codemap=node.site_code_map, study_only=True)
    tensors, _ = tensorize(cohort, bundle)
    after = state.epsilon_after_all([(1, sigma, 1.0), *planned_training(state, node, cfg, tensors.n)])
    if after > node.epsilon:
        log.warning("site %s declines the vocabulary survey: ε with the training its plan still needs would reach "
                    "%.3f > budget %.3f", node.site_id, after, node.epsilon)
        return _declined(node, state, ledger, sigma)
    persons = pd.DataFrame({"person_id": tensors.person_id, "index_date": tensors.index_date})
    diseases = set(bundle.diseases["id"])
    events = cohort.events[cohort.events["person_id"].isin(persons["person_id"]) & ~cohort.events["code"].isin(diseases)]
    rng = np.random.default_rng(secrets.randbits(128))  # contribution bounding and noise: never from the run's seed
    codes, time = survey_rows(events, persons, candidates, request, rng)
    noise = sigma * request.sensitivity
    released_codes = codes + math.sqrt(request.max_codes) * noise * rng.standard_normal(len(codes))
    released_time = time + noise / request.time_weight * rng.standard_normal(len(time))
    epsilon = state.record_round(round_id=round_id, steps=1, noise_multiplier=sigma, sample_rate=1.0,
                                 clip_norm=request.sensitivity, noise_multiplicity=1)
    ledger.append_round(state, run_id=cfg.run_id, server_round=SURVEY_ROUND, kind="histogram")
    kept = {"run_id": cfg.run_id, "fingerprint": state.fingerprint, "bundle": bundle.bundle_hash,
            "request": request.to_record(), "codes": [round(float(c), 3) for c in released_codes],
            "time": [round(float(t), 3) for t in released_time], "noise_multiplier": sigma, "epsilon": epsilon}
    write_bytes_atomic(privacy_folder(node) / KEPT, (json.dumps(kept) + "\n").encode(), durable=True)
    log.info("site %s released its vocabulary survey (%d candidates, %d patients, σ = %g): ε = %.3f of %.3f",
             node.site_id, len(candidates), tensors.n, sigma, epsilon, node.epsilon)
    return SurveyRelease(kept["codes"], kept["time"], cfg.run_id, release_metrics(node, epsilon, sigma, refused=False),
                         export_entries(ledger.entries))


def _kept(node: NodeConfig, state: PrivacyState, bundle: StudyBundle, request: SurveyRequest) -> dict | None:
    """The kept release of this dataset, bundle and request, if its charge is in the state; else None."""
    path = privacy_folder(node) / KEPT
    if not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        charged = round_key(str(kept["run_id"]), SURVEY_ROUND, "histogram")
        usable = (kept["fingerprint"] == state.fingerprint and kept["bundle"] == bundle.bundle_hash
                  and kept["request"] == request.to_record() and any(r.round_id == charged for r in state.rounds))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("site %s: %s is unreadable (%s); a new release would be charged", node.site_id, path, exc)
        return None
    return kept if usable else None


def _declined(node: NodeConfig, state: PrivacyState, ledger: Ledger, sigma: float) -> SurveyRelease:
    return SurveyRelease([], [], "", release_metrics(node, state.epsilon(), sigma, refused=True), export_entries(ledger.entries))


__all__ = ["SurveyRelease", "release_survey", "survey_rows"]
