"""Make a synthetic release from a federated run: generate, check plausibility and the
site-reported privacy numbers against the gate, and write everything at once or nothing: the
OMOP CDM v5.4 tables (:mod:`shared.ehr.cdm_release`), the data card, the report and, when
asked, the same tables in a new database schema (loaded last, in one transaction)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import atomic_dir
from shared.bundle import StudyBundle
from shared.ehr.cdm_release import ReleaseTarget, Vocabulary, load_release, write_release_folder
from shared.ehr.cohort import Cohort
from shared.errors import InputError
from shared.evaluation.plausibility import GraphKnowledge, plausibility
from shared.baselines.model_folder import BaselineModel, baseline_data_card, generate_baseline
from shared.model.generation import data_card, generate
from shared.model.checkpoint import TrainedModel
from shared.runs import RunFolder
from server.release.gate import Check, GateConfig, SitePrivacy, apply_gate, read_site_privacy
from server.release.report import EVALUATION_SHOWN, plots, render_html

REPORT_NAME = "report.html"
METHOD = "knowledge-graph-guided diffusion (DDIM sampling), trained federated with DP-SGD at each site"


@dataclass
class Release:
    """A generated cohort with its gate verdict; ``ok`` only when no check failed."""

    cohort: Cohort
    checks: list[Check]
    card: dict[str, Any]
    disease_counts: np.ndarray

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]


def site_epsilons(run_dir: str | Path) -> tuple[str, dict[str, dict[str, float]]]:
    """(run id, {site: {"epsilon", "delta"}}) from ``RUN/privacy.json``: the largest ε a site
    reported (its accountant composes, so the last charge is the largest).

    Raises
    ------
    InputError
        The file is missing or is not the federation's privacy record.
    """
    path = RunFolder(Path(run_dir)).privacy
    if not path.is_file():
        raise InputError("not found: a release needs the run's per-site ε (a run folder of `raregraph federate`)",
                         file=path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        sites = {site: {"epsilon": max(float(r["epsilon"]) for r in rows),
                        "delta": max(float(r["delta"]) for r in rows)} for site, rows in doc["sites"].items() if rows}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError("not a privacy record ({\"run_id\", \"sites\": {site: [{epsilon, delta, …}]}})",
                         file=path) from None
    if not sites:
        raise InputError("no site spent any privacy budget in this run", file=path)
    return str(doc.get("run_id", "")), sites


def prepare_release(trained: TrainedModel | BaselineModel, bundle: StudyBundle, run_dir: str | Path, *, n: int,
                    seed: int, steps: int, gate: GateConfig) -> Release:
    """Generate ``n`` patients and judge them against ``gate``; writes nothing.

    Parameters
    ----------
    trained
        ``RUN/model``, loaded against ``bundle``: our model, or a baseline's
        (``federate --method``, :mod:`shared.baselines.model_folder`).
    run_dir
        The run folder: ``privacy.json`` (ε per site) and optional ``evaluation/<site>/metrics.json``.
    n, seed, steps
        Patients, sampling seed, DDIM steps.

    Raises
    ------
    InputError
        ``privacy.json`` or a site's metrics.json is missing or malformed.
    """
    run_id, epsilons = site_epsilons(run_dir)
    reported: list[SitePrivacy] = read_site_privacy(run_dir)
    if isinstance(trained, BaselineModel):
        cohort, tensors = generate_baseline(trained, bundle, n=n, disease=None, seed=seed)
        card = baseline_data_card(trained, bundle, cohort, seed=seed, disease=None)
        card["method"] = f"baseline: {trained.method}"
    else:
        cohort, tensors = generate(trained, bundle, n=n, disease=None, seed=seed, steps=steps, guidance_scale=1.0,
                                   eta=0.0)
        card = data_card(trained, bundle, cohort, seed=seed, steps=steps, guidance_scale=1.0, eta=0.0, disease=None)
        card["method"] = METHOD
    metrics = plausibility(tensors, GraphKnowledge.from_bundle(bundle, tensors))
    checks = apply_gate(metrics, reported, gate, epsilons)
    card["release"] = {
        "run_id": run_id, "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "epsilon_per_site": epsilons, "gate": asdict(gate), "gate_loosened": gate.loosened(),
        "checks": [c.to_json() for c in checks],
        "plausibility": {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in metrics.items()},
        "site_privacy": [asdict(s) for s in reported],
        "site_evaluation": site_evaluation(run_dir),
        "contents": contents(tensors, bundle),
    }
    counts = np.bincount(tensors.disease, minlength=len(bundle.diseases))
    return Release(cohort=cohort, checks=checks, card=card, disease_counts=counts)


TOP_FEATURES = 10  # features per domain the report names


def site_evaluation(run_dir: str | Path) -> dict | None:
    """Fidelity and utility as the sites measured them on the run's synthetic sample (pooled by
    training patients, and per site): :data:`EVALUATION_SHOWN` from ``RUN/evaluation/summary.json``;
    None when the run had no federated evaluation."""
    path = RunFolder(run_dir).evaluation_summary
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    pick = lambda values: {key: values.get(key) for key, _ in EVALUATION_SHOWN}  # noqa: E731
    return {"pooled": pick(summary.get("pooled", {})),
            "sites": {site: pick(values) for site, values in sorted(summary.get("sites", {}).items())}}


def contents(tensors, bundle: StudyBundle) -> dict:
    """What the release holds, by name: patients per disease, and per domain the features most
    synthetic patients carry (share of patients with the feature in any window)."""
    names = dict(zip(bundle.vocabulary["code"], bundle.vocabulary["name"]))
    diseases = [{"code": code, "name": name, "patients": int((tensors.disease == i).sum())}
                for i, (code, name) in enumerate(zip(bundle.diseases["id"], bundle.diseases["name"]))]
    out: dict[str, list[dict]] = {"diseases": diseases}
    present = tensors.events.max(axis=1) if tensors.n else np.zeros((0, len(tensors.binary_codes)))
    share = present.mean(axis=0) if tensors.n else np.zeros(len(tensors.binary_codes))
    for domain in ("phenotype", "drug", "adverse_event"):
        cols = [j for j, d in enumerate(tensors.binary_domains) if d == domain]
        top = sorted(cols, key=lambda j: (-share[j], tensors.binary_codes[j]))[:TOP_FEATURES]
        out[domain] = [{"code": tensors.binary_codes[j], "name": names.get(tensors.binary_codes[j], ""),
                        "share": round(float(share[j]), 4)} for j in top]
    measured = tensors.lab_mask.max(axis=1).mean(axis=0) if tensors.n else np.zeros(len(tensors.lab_codes))
    top = sorted(range(len(tensors.lab_codes)), key=lambda j: (-measured[j], tensors.lab_codes[j]))[:TOP_FEATURES]
    out["lab"] = [{"code": tensors.lab_codes[j], "name": names.get(tensors.lab_codes[j], ""),
                   "share": round(float(measured[j]), 4)} for j in top]
    return out


def write_release(release: Release, bundle: StudyBundle, out: str | Path, *, overwrite: bool = False,
                  fmt: str = "csv", vocabulary: Vocabulary | None = None,
                  database: ReleaseTarget | None = None) -> dict[str, Any]:
    """OMOP CDM tables, ``data_card.json`` and ``report.html`` in ``out``, all or nothing; with
    ``database``, the tables also go into a new schema there (last, in one transaction: a
    failure leaves neither the schema nor the folder).

    Returns the data card as written (with its ``cdm`` section).

    Raises
    ------
    ValueError
        The release failed its gate (it must never be written).
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    InputError
        The vocabulary cannot be read, or the database refused the load.
    """
    if not release.ok:
        raise ValueError(f"refusing to write a release that failed {len(release.failed)} gate(s)")
    pngs = plots(release.checks, [f"{name} ({code})" if name else code for code, name in
                                  zip(bundle.diseases["id"], bundle.diseases["name"])], release.disease_counts)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tables, card = write_release_folder(release.cohort, tmp, card=release.card, fmt=fmt, vocabulary=vocabulary)
        (tmp / REPORT_NAME).write_text(render_html(card, release.checks, pngs), encoding="utf-8")
        tmp.chmod(0o755)  # a release is for sharing; mkdtemp makes the folder private
        if database is not None:
            load_release(tables, database)
    return card
