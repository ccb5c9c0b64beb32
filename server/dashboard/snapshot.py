"""A run folder as the live view shows it: one JSON-able summary, read without writing anything.

Everything comes from the files the coordinator already holds (:class:`shared.runs.RunFolder`):
``run.json`` (settings, parsed by :meth:`server.config.RunConfig.from_mapping`),
``checkpoint/state.json`` (rounds done, per-round metrics, rejected updates: written by
:class:`server.strategy.SiteFedAvg`), ``privacy.json`` (each site's rounds, σ, q, ε), the ledgers
(through the audit, :mod:`server.dashboard.audit_view`) and ``evaluation/summary.json``. These are
numbers about the training, the privacy spend and the evaluation: nothing row-level is in them, and
nothing row-level is shown.

The coordinator writes each file atomically (a temporary file renamed into place), so a read sees
an old or a new version, never half of one; ``state.json`` and ``privacy.json`` are two files, so
for a moment one may be a round ahead of the other.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.config import RunConfig
from shared import protocol as P
from shared.errors import ConfigError, InputError
from shared.model import META_FILE
from shared.runs import (RESOLVED_CONFIG, CHECKPOINT_DIR, EVALUATION_DIR, LEDGER_DIR, MODEL_DIR, PRIVACY_FILE, RUN_FILE, SITE_KEYS_DIR,
                         STATE_DIR, RunFolder)

FORMAT = "raregraph-dashboard/1"
NOTICE = ("Aggregate numbers only (rounds, losses, ε per site, evaluation metrics): no patient record or "
          "row-level value is read or shown here.")
#: the evaluation numbers the page shows, as in `raregraph federate`'s table: (title, key in summary.json)
EVALUATION_COLUMNS = (("patients", "counts.real"), ("held out", "counts.holdout"), ("MMD²_u", "fidelity.mmd2"),
                      ("real vs held-out MMD²_u", "fidelity.mmd2_baseline_holdout"),
                      ("prevalence R²", "fidelity.prevalence_r2_identity"),
                      ("phenotype pairs supported", "plausibility.phenotype_pairs_supported"),
                      ("DCR membership AUROC", "privacy.dcr_membership_auroc"),
                      ("DOMIAS AUROC", "privacy.domias_auroc"))
#: what marks a folder as a run folder (any one of them): the coordinator writes site-keys/ and state/
#: before run.json, so a run that is starting holds only those
RUN_ENTRIES = (RUN_FILE, CHECKPOINT_DIR, PRIVACY_FILE, LEDGER_DIR, SITE_KEYS_DIR, STATE_DIR, MODEL_DIR, EVALUATION_DIR,
               RESOLVED_CONFIG)

AuditFn = Callable[..., dict[str, Any]]


def check_run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` if it can be watched: an existing folder, empty (the run has not started) or
    holding a run's files.

    Raises
    ------
    InputError
        The folder is missing, is a file, is a model folder (``model.json``), or holds none of a
        run's files (``run.json``, ``checkpoint/``, ``privacy.json``, ``ledger/``).
    """
    path = Path(run_dir)
    if not path.exists():
        raise InputError("no such run folder (give the folder `raregraph federate --out` or run-dir writes)",
                         file=path)
    if not path.is_dir():
        raise InputError("not a folder: give the run folder (the one holding run.json)", file=path)
    names = {p.name for p in path.iterdir()}
    if META_FILE in names:
        raise InputError(f"this is a model folder, not a run folder: give its parent {path.resolve().parent}",
                         file=path)
    if names and not names & set(RUN_ENTRIES):
        raise InputError(f"not a run folder: it holds none of {', '.join(RUN_ENTRIES)}", file=path)
    return path


def _read_json(path: Path, *, attempts: int = 4) -> Any | None:
    """The file's JSON, or None when it does not exist yet.

    run.json is written in place, not renamed into place (:func:`server.federation.run_federation`),
    so a read at that moment can see it empty or cut: such a read is retried a few times, 50 ms
    apart, before the file counts as broken.
    """
    for attempt in range(attempts):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            if attempt == attempts - 1:
                raise InputError(f"cannot read it as JSON ({exc})", file=path) from None
            time.sleep(0.05)
    return None


def _settings(run: RunFolder) -> dict[str, Any] | None:
    raw = _read_json(run.settings)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InputError("run.json must hold an object", file=run.settings)
    try:
        config = RunConfig.from_mapping({k: v for k, v in raw.items() if k != "run_id"})
    except ConfigError as exc:
        raise InputError(str(exc), file=run.settings) from None
    return {"run_id": str(raw.get("run_id", "")), "rounds": config.rounds,
            "planned_rounds": config.participation_rounds, "local_steps": config.local_steps,
            "accountant": config.accountant, "guidance": config.guidance, "min_sites": config.min_sites,
            "evaluate_fraction": config.evaluate_fraction, "eval_per_disease": config.eval_per_disease,
            "aggregate": config.aggregate}


def _mtime(path: Path) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    except FileNotFoundError:
        return None


def _site_round(server_round: int, site: str, rows: list[dict], rejected: list[dict],
                averaged: set[str] | None) -> dict[str, str]:
    """What a site did in one round: averaged, sat out, rejected, replied, or no reply."""
    why = [r["reason"] for r in rejected if r["round"] == server_round and r["site"] == site]
    if why:
        return {"status": "rejected", "why": "; ".join(why)}
    train = [r for r in rows if r["round"] == server_round and r.get("kind") == "train"]
    if not train:
        return {"status": "no reply", "why": "no reply this round (failed, timed out or not connected)"}
    row = train[-1]
    if row.get(P.REFUSED):
        return {"status": "sat out", "why": f"privacy budget: ε spent {float(row[P.EPSILON]):.3f} of "
                                            f"{float(row[P.BUDGET_EPSILON]):.3f}, the next round would cross it"}
    if averaged is not None and site in averaged:
        return {"status": "averaged", "why": ""}
    return {"status": "replied", "why": ""}


def _site(site: str, rows: list[dict], rounds: list[dict], rejected: list[dict], done: int,
          audit: dict[str, Any]) -> dict[str, Any]:
    """One site's status, ε series, budget and projection."""
    by_round = {r["round"]: set(r.get("updates", {})) for r in rounds}
    history = {str(n): _site_round(n, site, rows, rejected, by_round.get(n)) for n in range(1, done + 1)}
    series: dict[int, float] = {}
    for r in rows:  # ε after each round: the largest of its charges (training, then an evaluation release)
        series[r["round"]] = max(series.get(r["round"], 0.0), float(r[P.EPSILON]))
    train = [r for r in rows if r.get("kind") == "train"]
    last = train[-1] if train else (rows[-1] if rows else None)
    audited = audit.get("sites", {}).get(site, {})
    budget = (float(last[P.BUDGET_EPSILON]) if last is not None and P.BUDGET_EPSILON in last
              else (audited.get("budget") or {}).get("epsilon"))
    epsilon = max(series.values()) if series else audited.get("epsilon")
    projection = audited.get("projection")
    if last is not None and last.get(P.REFUSED) and epsilon is not None:
        projection = {"from_round": last["round"], "round": projection["round"] if projection else last["round"],
                      "epsilon": epsilon, "method": None, "note": "sits out: its budget is spent"}
    if projection is not None and budget is not None:
        projection = {**projection, "exceeds_budget": projection["epsilon"] > budget}
    current = history[str(done)] if done else {"status": "waiting", "why": "no round finished yet"}
    return {"site": site, **current, "rounds": history,
            "epsilon": epsilon, "budget_epsilon": budget,
            "delta": None if last is None else float(last.get(P.DELTA, 0.0)) or None,
            "accountant": None if last is None else last.get("accountant") or None,
            "noise_multiplier": None if last is None or P.NOISE_MULTIPLIER not in last else float(last[P.NOISE_MULTIPLIER]),
            "sample_rate": None if last is None or P.SAMPLE_RATE not in last else float(last[P.SAMPLE_RATE]),
            "series": [{"round": n, "epsilon": e} for n, e in sorted(series.items())],
            "projection": projection, "ledger_ok": audited.get("ok")}


def _evaluation(run: RunFolder) -> dict[str, Any] | None:
    summary = _read_json(run.evaluation_summary)
    if summary is None:
        return None
    rows = [*sorted(summary.get("sites", {}).items()), ("pooled", summary.get("pooled", {}))]
    return {"columns": [title for title, _ in EVALUATION_COLUMNS],
            "rows": [{"site": site, "cells": [values.get(key) for _, key in EVALUATION_COLUMNS]} for site, values in rows],
            "declined": dict(summary.get("declined", {})), "failed": dict(summary.get("failed", {})),
            "note": str(summary.get("note", "")), "written": _mtime(run.evaluation_summary)}


def _phase(settings: dict | None, done: int, model: bool, evaluation: dict | None,
           aggregated: int = 1) -> tuple[str, str]:
    """(phase, one status line); ``aggregated``: updates averaged over all rounds."""
    if settings is None:
        return ("waiting", "waiting for the run to start (no run.json yet)") if done == 0 else \
            ("training", f"round {done} done (run.json missing)")
    total = settings["rounds"]
    if model and (evaluation is not None or settings["eval_per_disease"] == 0):
        return "finished", f"finished: round {done} of {total}; model written"
    if model:
        return "evaluating", f"round {done} of {total} done; model written; the sites are evaluating a synthetic sample"
    if done == 0:
        return "starting", f"round 0 of {total}: sites verifying the bundle, coordinator pretraining, round 1 running"
    if done >= total and not aggregated:
        return "failed", (f"round {done} of {total} done, but no round averaged any site's update: the coordinator "
                          "stops without a model (see the rejected updates)")
    if done >= total:
        return "finishing", f"round {done} of {total} done; writing the model"
    return "training", f"round {done} of {total} done; round {done + 1} running"


def read_snapshot(run_dir: str | Path, *, audit: AuditFn) -> dict[str, Any]:
    """The run folder as the page shows it.

    Parameters
    ----------
    run_dir
        The run folder (:func:`check_run_folder`); only read.
    audit
        ``audit(run_id=..., last_round=...)`` → the ledger audit's summary
        (:meth:`server.dashboard.audit_view.AuditCache.get`).

    Returns
    -------
    dict
        ``format``, ``notice``, ``phase`` and ``status`` (one line), ``run`` (settings or None),
        ``round`` (rounds done), ``checkpoint``, ``rounds`` (per round: loss, replies, averaged),
        ``sites`` (per site: this round's status and why, status per round, ε series, budget,
        projection), ``rejected``, ``events``, ``audit``, ``evaluation`` (None until
        ``evaluation/summary.json`` exists) and ``version`` (changes whenever anything shown changes).

    Raises
    ------
    InputError
        The folder is not a run folder, or one of its JSON files is unreadable.
    """
    run = RunFolder(check_run_folder(run_dir))
    # the model is written after the last checkpoint: looked at first, so that a model seen here comes
    # with the final state.json read below
    model = (run.model / META_FILE).is_file()
    settings = _settings(run)
    state = _read_json(run.checkpoint_state) or {}
    privacy = (_read_json(run.privacy) or {}).get("sites", {})
    rounds: list[dict] = list(state.get("rounds", []))
    rejected: list[dict] = list(state.get("rejected", []))
    done = int(state.get("round", 0))
    total = settings["rounds"] if settings else done
    audited = audit(run_id=settings["run_id"] if settings else None, last_round=total)
    names = set(privacy) | set(audited.get("sites", {})) | {r["site"] for r in rejected}
    if run.site_keys.is_dir():
        names |= {p.stem for p in run.site_keys.glob("*.pub")}
    sites = {s: _site(s, privacy.get(s, []), rounds, rejected, done, audited) for s in sorted(names)}
    evaluation = _evaluation(run)
    phase, status = _phase(settings, done, model, evaluation, sum(r.get("aggregated", 0) for r in rounds))
    events = []
    for r in rounds:
        events.append({"round": r["round"], "kind": "checkpoint",
                       "text": f"round {r['round']}: {r.get('aggregated', 0)} of {r.get('replies', 0)} replies "
                               f"averaged, checkpoint written"})
        for s, info in sites.items():
            step = info["rounds"].get(str(r["round"]), {})
            if step.get("status") in ("sat out", "rejected", "no reply"):
                events.append({"round": r["round"], "kind": step["status"], "text": f"round {r['round']}: site {s} "
                                                                                     f"{step['status']}: {step['why']}"})
    for r in state.get("resumes", []):
        events.append({"round": r["after_round"], "kind": "resumed",
                       "text": f"coordinator restarted at {r['at']}: resumed after round {r['after_round']}"})
    events.sort(key=lambda e: e["round"])  # stable: a restart after round n follows round n's events
    if model:
        events.append({"round": done, "kind": "model", "text": f"model written after round {done}"})
    if evaluation is not None:
        events.append({"round": done, "kind": "evaluation", "text": "federated evaluation written (evaluation/summary.json)"})
    checkpoint = None
    if run.checkpoint_state.is_file():
        checkpoint = {"round": done, "written": _mtime(run.checkpoint_state),
                      "resumable": not model}
    snap = {"format": FORMAT, "notice": NOTICE, "run_dir": str(run.root.resolve()), "phase": phase, "status": status,
            "run": settings, "round": done, "rounds_planned": total, "checkpoint": checkpoint,
            "rounds": [{"round": r["round"], "loss": r.get("metrics", {}).get(P.LOSS),
                        "eval_loss": (r.get("evaluate") or {}).get("eval-loss"),
                        "epsilon_max": r.get("metrics", {}).get(f"{P.EPSILON}-max"), "replies": r.get("replies", 0),
                        "aggregated": r.get("aggregated", 0), "errors": r.get("errors", 0),
                        "seconds": r.get("round_seconds")} for r in rounds],
            "sites": sites, "rejected": rejected, "events": events, "audit": audited, "evaluation": evaluation}
    snap["version"] = hashlib.sha256(json.dumps(snap, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return snap
