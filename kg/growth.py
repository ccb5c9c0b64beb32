"""The second signed bundle: vocabulary and time grid grown from the sites' pooled DP survey.

The first bundle holds public knowledge only: its vocabulary is what the graph ranks highest for
the study's diseases, and its time grid is the study file's. Where that misses what the sites
record (comorbidities, codes the graph links weakly, events years before the diagnosis), the
sites' vocabulary survey (:mod:`client.vocabulary_survey`, pooled by :mod:`server.survey` into
``RUN/survey.json``) says what they record, under DP. Everything here is post-processing of that
release and public knowledge.

Vocabulary. A candidate code c enters when its pooled noisy count n̂_c reaches

    τ = max(z · sd, min_patients),       sd = the pooled noise sd of one code count,

so that of the K candidates no site records, about K · Φ̄(z) pass by noise alone (reported as
``expected_false_codes``). Its domain is the parent's where the parent has the code, else the
candidate's (an HP term or a code the graph does not know: ``phenotype``, the condition domain;
a drug; a lab, only with a public reference range; a MedDRA term: ``adverse_event``). The
parent's own features all stay (the graph's guidance where data is thin): the survey counts only
candidates outside the parent's vocabulary, so its contribution bound is spent on what the graph
missed, and it cannot say that sites do not record a public feature. Limits such as 128
phenotypes no longer apply:
the number of features follows from the data and the noise, hence from the budget.

Codes the graph does not know get a neutral knowledge score (z = 0, no evidence either way) and
the consortium's DP prevalence n̂_c / n̂ as their frequency for every disease, where n̂ is the
survey's estimate of the number of patients; a phenotype the graph knows but does not annotate
for a disease gets the same. (The public-prior pretraining then draws them at that rate.)

By default z is set so that the expected number of such false codes is
:data:`DEFAULT_FALSE_CODES`: z = Φ̄⁻¹(false_codes / K).

Time grid. From the pooled event-time mass m_b per bin (n̂ = Σ_b m_b), the grid starts as the
study file's and grows, one bin at a time on each side, while the mass beyond it exceeds the
share (1 − coverage)/2 of n̂ by more than :data:`TIME_Z` noise sds of that sum (k bins beyond:
sd·√k): a tail is tested as a whole, so mass spread thinly over years still counts (the
survey's bins widen away from the index date so that a long tail is few bins), and a release
too noisy to show a tail keeps the study's grid. The study's window length is kept, at
most :data:`MAX_WINDOWS` windows (longer windows beyond that). The share of the mass the grid
leaves outside (noisy) is reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from kg.store import KnowledgeGraph
from kg.study import Study, parse_study
from kg.vocabulary import vocabulary_table
from shared.bundle import CANDIDATES, StudyBundle
from shared.errors import ConfigError, InputError
from shared.survey import SURVEY_FORMAT

MAX_WINDOWS = 64  # the study file's own upper bound (kg.study.TimeGrid)
DEFAULT_FALSE_CODES = 1.0  # expected candidate codes no site records that pass the threshold by noise alone
TIME_Z = 2.0  # the grid grows while the mass beyond it exceeds what coverage allows by this many noise sds
DEFAULT_MIN_PATIENTS = 3.0
DEFAULT_COVERAGE = 0.95


@dataclass(frozen=True)
class Growth:
    """A grown bundle's vocabulary, the prevalence of its codes without public frequency, the
    parent's candidates (carried into the new bundle) and the provenance (``growth.json``)."""

    vocabulary: pd.DataFrame
    prevalence: dict[str, float]
    parent_candidates: pd.DataFrame
    provenance: dict

    def fill_frequency(self, frequency: np.ndarray, vocab: pd.DataFrame) -> None:
        """Set the DP prevalence where the graph gives a grown phenotype no frequency (in place)."""
        for j, code, domain in zip(vocab["index"], vocab["code"], vocab["domain"]):
            if domain == "phenotype" and code in self.prevalence:
                column = frequency[:, j]
                column[np.isnan(column)] = self.prevalence[code]


def read_survey(path: str | Path) -> dict:
    """``RUN/survey.json``, checked for its format and keys.

    Raises
    ------
    InputError
        Missing, not JSON, or not a survey; names the file and the key.
    """
    path = Path(path)
    try:
        survey = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("survey file not found (a survey run writes RUN/survey.json)", file=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg}, line {exc.lineno})", file=path) from None
    if not isinstance(survey, dict) or survey.get("format") != SURVEY_FORMAT:
        raise InputError(f"not a survey: 'format' must be {SURVEY_FORMAT!r}", file=path)
    for key in ("run_id", "bundle_sha256", "candidates", "code_noise_sd", "patients", "codes", "time", "sites"):
        if key not in survey:
            raise InputError(f"survey lacks the key {key!r}", file=path, field=key)
    time = survey["time"]
    if not (isinstance(time, dict) and isinstance(time.get("edges"), list) and isinstance(time.get("mass"), list)
            and len(time["mass"]) == len(time["edges"]) + 1 >= 3):
        raise InputError("survey 'time' must hold 'edges' and one more 'mass' value than edges (a survey of an older "
                         "version had fixed-width bins: run the survey again)", file=path, field="time")
    return survey


def grown_time_grid(survey: dict, study_time: dict, coverage: float) -> tuple[dict, dict]:
    """The study's ``[time]`` table chosen from the survey (module docstring) and what it reports.

    ``study_time``: the parent's ``[time]`` table (kebab keys); its window length is kept and its
    span is always inside the grown grid. A side the survey gives no reason to grow keeps the
    study's span exactly; a side that grows reaches the end of the last bin it takes (past an
    outer edge, the open bin counts one more width of its neighbour).
    """
    time = survey["time"]
    raw = np.asarray(time["mass"], dtype=np.float64)
    edges = np.asarray(time["edges"], dtype=np.int64)
    bins = len(raw)
    lo = np.concatenate([[edges[0] - (edges[1] - edges[0])], edges])  # bin b: lo[b] ≤ day < hi[b]
    hi = np.concatenate([edges, [edges[-1] + (edges[-1] - edges[-2])]])
    sd = float(survey["time_noise_sd"])
    window_days = int(study_time["window-days"])
    study_before = int(study_time["windows-before"])
    study_after = int(study_time["windows"]) - study_before
    study_start, study_end = -study_before * window_days, study_after * window_days
    allowed = (1.0 - coverage) / 2.0 * max(float(raw.sum()), 1.0)  # mass each side may leave outside
    # bins [first, last] hold the study grid; grow each side while what lies beyond is significantly too much
    first = first_study = int(np.searchsorted(edges, study_start, side="right"))
    last = last_study = int(np.searchsorted(edges, study_end - 1, side="right"))
    while first > 0 and raw[:first].sum() - TIME_Z * sd * math.sqrt(first) > allowed:
        first -= 1
    while last < bins - 1 and raw[last + 1:].sum() - TIME_Z * sd * math.sqrt(bins - 1 - last) > allowed:
        last += 1
    start_day = min(int(lo[first]), study_start) if first < first_study else study_start
    end_day = max(int(hi[last]), study_end) if last > last_study else study_end
    windows_before = math.ceil(-start_day / window_days)
    windows_after = max(1, math.ceil(end_day / window_days))
    if windows_before + windows_after > MAX_WINDOWS:
        window_days = math.ceil((end_day - start_day) / MAX_WINDOWS)
        windows_before = math.ceil(-start_day / window_days)
        windows_after = max(1, MAX_WINDOWS - windows_before)
    windows = max(2, windows_before + windows_after)
    grid_start = -windows_before * window_days
    grid_end = (windows - windows_before) * window_days
    outside_bins = (hi <= grid_start) | (lo >= grid_end)  # the open outer bins by their inner edge
    outside = float(raw[outside_bins].sum() / max(float(raw.sum()), 1e-9))
    table = {"windows": windows, "windows-before": windows_before, "window-days": window_days}
    return table, {"coverage": coverage, "start_day": int(start_day), "end_day": int(end_day), **table,
                   "estimated_share_outside": round(outside, 4)}


def grow(parent: StudyBundle, survey: dict, graph: KnowledgeGraph, *, z: float | None = None,
         false_codes: float = DEFAULT_FALSE_CODES,
         min_patients: float = DEFAULT_MIN_PATIENTS,
         coverage: float = DEFAULT_COVERAGE, time_from_survey: bool = True) -> tuple[Study, Growth]:
    """The grown study (its time grid) and :class:`Growth` for :func:`kg.bundle.make_bundle`.

    Raises
    ------
    ConfigError
        The survey was made on another bundle, or a setting is out of range.
    """
    if survey["bundle_sha256"] != parent.bundle_hash:
        raise ConfigError(f"the survey (run {survey['run_id']}) was made on bundle {survey['bundle_sha256'][:16]}, "
                          f"not on {parent.bundle_hash[:16]}: grow the bundle the sites were surveyed on")
    k = int(survey["candidates"])
    if z is None:
        if not 0 < false_codes < k:
            raise ConfigError(f"false-codes must be in (0, {k}), got {false_codes}")
        z = float(norm.isf(false_codes / k))
    if not (z > 0 and min_patients >= 0 and 0 < coverage <= 1):
        raise ConfigError("z must be > 0, min-patients ≥ 0 and coverage in (0, 1]")
    candidates = pd.read_parquet(parent.path / CANDIDATES)
    names = dict(zip(candidates["code"], candidates["name"]))
    threshold = max(z * float(survey["code_noise_sd"]), min_patients)
    found = {code: v for code, v in survey["codes"].items() if float(v["count"]) >= threshold}
    parent_vocab = parent.vocabulary
    parent_domains = parent_vocab.groupby("code")["domain"].apply(list).to_dict()
    lab_ranges = set(graph.labs["id"])
    rows: list[tuple[str, str, str]] = []
    skipped: dict[str, int] = {}
    for code in sorted(found):
        if code in parent_domains:
            rows += [(code, d, names.get(code, "")) for d in parent_domains[code]]
            continue
        domain = found[code]["domain"]
        if domain == "lab" and code not in lab_ranges:
            skipped["lab_without_reference_range"] = skipped.get("lab_without_reference_range", 0) + 1
            continue
        rows.append((code, domain if domain in ("phenotype", "drug", "lab", "adverse_event") else "phenotype",
                     names.get(code, "")))
    kept_public = 0
    for code, domain, name in zip(parent_vocab["code"], parent_vocab["domain"], parent_vocab["name"]):
        if code not in found:
            rows.append((code, domain, name))
            kept_public += 1
    vocab = vocabulary_table(rows)
    patients = max(float(survey["patients"]), 1.0)
    added = {code for code in found if code not in parent_domains} & set(vocab["code"])
    prevalence = {code: float(np.clip(float(found[code]["count"]) / patients, 0.0, 1.0)) for code in added}
    study_data = dict(parent.study)
    time_report = None
    if time_from_survey:
        study_data["time"], time_report = grown_time_grid(survey, parent.study["time"], coverage)
    study = parse_study(study_data, source=f"{parent.path}/study.json")
    added_by_domain = vocab[vocab["code"].isin(added)]["domain"].value_counts().sort_index()
    provenance = {
        "parent": parent.bundle_hash,
        "survey_run": survey["run_id"],
        "sites": sorted(survey["sites"]),
        "patients_estimate": round(patients, 1),
        "code_noise_sd": survey["code_noise_sd"],
        "z": round(z, 3), "min_patients": min_patients, "threshold": round(threshold, 3),
        "candidates": k, "expected_false_codes": round(k * float(norm.sf(z)), 3),
        "found": len(found),
        "added": {str(d): int(n) for d, n in added_by_domain.items()},
        "kept_public": kept_public, "skipped": skipped,
        "unknown_to_graph": sorted(c for c in added if c not in graph.node_types),
        "time": time_report,
        "counts": {code: found[code]["count"] for code in sorted(added)},
    }
    return study, Growth(vocabulary=vocab, prevalence=prevalence, parent_candidates=candidates,
                         provenance=provenance)


__all__ = ["DEFAULT_COVERAGE", "DEFAULT_FALSE_CODES", "DEFAULT_MIN_PATIENTS", "TIME_Z", "Growth", "grow", "grown_time_grid", "read_survey"]
