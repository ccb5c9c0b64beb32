"""Federated evaluation of the final model: a synthetic sample goes to every site, each runs
the evaluation suite against its own training and held-out patients (:mod:`client.sample_evaluation`)
and returns numbers only; the coordinator keeps them per site and pooled.

Written into the run folder:

- ``RUN/evaluation/<site>/metrics.json`` and ``report.md``: the site's suite, in the layout
  of ``raregraph evaluate --out`` (what ``raregraph release`` reads for its privacy gates);
- ``RUN/evaluation/summary.json``: per site the headline numbers, the sites that declined or
  failed, and the pooled value of every number all reporting sites give, weighted by each
  site's training patients (a mean of per-site values: the coordinator never holds the
  patients to compute one suite over all of them).

A reply is accepted only if it is JSON whose leaves are numbers, booleans or null: a site that
sent text (or anything row-level in disguise) is recorded as failed and nothing of it is kept.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from shared import protocol as P
from shared.atomic import write_bytes_atomic
from shared.bundle import StudyBundle
from shared.evaluation.numbers import flatten, numbers_only
from shared.evaluation.suite import write_report
from shared.model.generation import DEFAULT_SAMPLER_STEPS, generate_tensors
from shared.model.checkpoint import TrainedModel
from shared.runs import RunFolder

log = logging.getLogger("raregraph.server")
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a site id that is safe as a folder name
#: the numbers summary.json lists per site (dotted paths into the suite's dict)
HEADLINE = ("counts.real", "counts.holdout", "counts.synthetic", "fidelity.mmd2", "fidelity.mmd2_baseline_holdout",
            "fidelity.prevalence_r2_identity", "fidelity.discriminator_auroc",
            "plausibility.phenotype_pairs_supported", "privacy.dcr_membership_auroc", "privacy.domias_auroc",
            "privacy.domias_auroc_null_sd",
            "privacy.attribute_disclosure_gap", "privacy.exact_copy_share", "utility.disease_auroc_tstr",
            "utility.disease_auroc_trtr", "recorded.prevalence_r2_identity", "recorded.round_trip.prevalence_r2_identity",
            "recorded.codes_per_patient_relative_difference",
            "recorded.representation_ceiling.occurrences.share_representable")


def pooled(reports: dict[str, dict]) -> dict[str, float]:
    """Every number all sites report, averaged with weights = the sites' training patients."""
    flat = {site: flatten(m) for site, m in reports.items()}
    weight = {site: f.get("counts.real", 0.0) for site, f in flat.items()}
    common = set.intersection(*(set(f) for f in flat.values())) if flat else set()
    total = sum(weight.values())
    if not total:
        return {}
    return {k: sum(flat[s][k] * weight[s] for s in flat) / total for k in sorted(common)}


def sample_for_sites(trained: TrainedModel, bundle: StudyBundle, *, per_disease: int, seed: int):
    """``per_disease`` synthetic patients of every study disease."""
    conditions = np.repeat(np.arange(len(bundle.diseases)), per_disease)
    return generate_tensors(trained, bundle, n=len(conditions), disease=None, seed=seed, steps=DEFAULT_SAMPLER_STEPS,
                            guidance_scale=1.0, eta=0.0, conditions=conditions)


def evaluate_at_sites(grid: Grid, nodes: list[int], trained: TrainedModel, bundle: StudyBundle, *, run_dir: Path,
                      run_id: str, per_disease: int, seed: int, timeout: float) -> dict:
    """Send the sample, collect and write the sites' numbers; return summary.json's content."""
    synthetic = sample_for_sites(trained, bundle, per_disease=per_disease, seed=seed)
    sample = ArrayRecord({k: Array(v) for k, v in synthetic.to_arrays().items()})
    config = ConfigRecord({P.RUN_ID: run_id, P.BUNDLE_SHA256: bundle.bundle_hash, P.SEED: seed})
    replies = grid.send_and_receive(
        [Message(content=RecordDict({P.SYNTHETIC: sample, P.CONFIG: config}), dst_node_id=n, message_type=P.SUITE_QUERY)
         for n in nodes], timeout=timeout)
    reports: dict[str, dict] = {}
    declined: dict[str, str] = {}
    failed: dict[str, str] = {}
    for r in replies:
        node = str(r.metadata.src_node_id)
        if r.has_error():
            failed[f"node {node}"] = r.error.reason
            log.warning("node %s did not evaluate the synthetic sample: %s", node, r.error.reason)
            continue
        site = str(r.content[P.SITE][P.SITE_ID])
        if not SITE_NAME.match(site):
            failed[f"node {node}"] = f"site id {site!r} is not a safe folder name"
            continue
        suite = r.content[P.SUITE]
        if suite[P.SUITE_DECLINED]:
            declined[site] = str(suite[P.SUITE_DECLINED])
            continue
        try:
            metrics = json.loads(str(suite[P.SUITE_METRICS]))
        except json.JSONDecodeError:
            failed[site] = "the reply is not JSON"
            continue
        if not isinstance(metrics, dict) or (bad := numbers_only(metrics)) is not None:
            failed[site] = f"the reply holds something other than numbers at {bad if isinstance(metrics, dict) else '(top)'}"
            log.error("site %s: evaluation reply rejected: %s", site, failed[site])
            continue
        reports[site] = metrics
    folder = RunFolder(run_dir).evaluation
    for site, metrics in reports.items():
        write_report(metrics, folder / site, title=f"synthetic sample of run {run_id} evaluated at {site}",
                     overwrite=True)
    summary = {
        "run_id": run_id, "synthetic_per_disease": per_disease, "seed": seed,
        "note": ("each site compared the synthetic sample, cut to its own disease mix, with its training and "
                 "held-out patients; these aggregate numbers were released without noise (not covered by ε). "
                 "pooled: the mean over reporting sites weighted by training patients"),
        "sites": {site: {k: v for k, v in flatten(m).items() if k in HEADLINE} for site, m in sorted(reports.items())},
        "pooled": pooled(reports), "declined": declined, "failed": failed,
    }
    write_bytes_atomic(RunFolder(run_dir).evaluation_summary, (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode())
    log.info("evaluation: %d sites reported, %d declined, %d failed", len(reports), len(declined), len(failed))
    return summary
