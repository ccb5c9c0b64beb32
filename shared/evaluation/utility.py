"""Utility: is the synthetic cohort as useful as the real one for a rare-disease study?

Train on synthetic, test on real (TSTR) against train on real, test on real (TRTR), both
tested on held-out real patients (Esteban, Hyland & Rätsch 2017, "Real-valued (medical)
time series generation with recurrent conditional GANs", arXiv:1706.02633, §5). Three task
families, each a fixed logistic model (:func:`~shared.evaluation.classifier.fit_logistic`)
on patient-level summaries of the tensors:

- ``disease``: which study disease the patient has (multi-class);
- ``drug_adverse_event``: whether an adverse event follows the first drug;
- ``onset:<code>``: whether a phenotype first appears after the index window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.evaluation.classifier import DEFAULT_L2, fit_logistic
from shared.evaluation.stats import auroc, check_same_columns
from shared.trajectories.tensors import TrajectoryTensors

#: AUROC of a ranking by chance. A TRTR at or below it means the real training patients do
#: not predict the task on the holdout: TSTR / TRTR then divides by a guess (0.85 / 0.5 = 1.7
#: would read as "met") and is not reported.
CHANCE_AUROC = 0.5
#: What reports say in place of such a ratio (report.md's cell, metrics.json's ``*_note``).
RATIO_NOT_MEANINGFUL = "n/a: TRTR at or below chance (AUROC 0.5), so TSTR / TRTR means nothing"

#: Phenotypes turned into onset tasks, at most (the most balanced ones in the real data).
DEFAULT_MAX_PHENOTYPES = 5
#: An onset task needs this many new-onset and this many onset-free real training patients.
DEFAULT_MIN_CASES = 10

Dataset = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TaskResult:
    """TSTR and TRTR AUROC of one task, both tested on the holdout.

    Attributes
    ----------
    name
        ``disease``, ``drug_adverse_event`` or ``onset:<feature code>``.
    tstr, trtr
        AUROC (macro one-vs-rest for ``disease``) of the model trained on synthetic / on
        real patients. A training set with a single class cannot rank: AUROC 0.5.
    ratio
        tstr / trtr; NaN when trtr is NaN or not above :data:`CHANCE_AUROC`
        (:func:`auroc_ratio`).
    n_train_real, n_train_synth, n_test
        Eligible patients in each set.
    """

    name: str
    tstr: float
    trtr: float
    ratio: float
    n_train_real: int
    n_train_synth: int
    n_test: int


def auroc_ratio(tstr: float, trtr: float) -> float:
    """TSTR / TRTR, or NaN when TRTR is NaN or at most :data:`CHANCE_AUROC` (the real-data
    model ranks no better than chance, so there is no baseline to compare with)."""
    return tstr / trtr if np.isfinite(trtr) and trtr > CHANCE_AUROC else float("nan")


def disease_task(t: TrajectoryTensors, n_diseases: int) -> Dataset:
    """Which study disease: x = :func:`summary_features` over all windows, y = disease row.

    Every patient is eligible. ``n_diseases`` is unused (the disease is the label) and
    kept for a uniform task signature.
    """
    del n_diseases
    return summary_features(t, np.ones((t.n, t.windows), bool)), t.disease.astype(np.int64)


def drug_adverse_event_task(t: TrajectoryTensors, n_diseases: int) -> Dataset | None:
    """Whether an adverse event follows the first drug.

    Eligible: patients with a drug column present in some window; k₀ = their first such
    window. y = 1 when any adverse-event column is present in a window k ≥ k₀. x = the
    history before the drug (:func:`summary_features` over windows k < k₀, adverse-event
    columns left out) | the drugs present in window k₀ | the disease one-hot. None when
    the vocabulary has no drug or no adverse-event column.
    """
    domains = np.asarray(t.binary_domains)
    drugs, events = domains == "drug", domains == "adverse_event"
    if not drugs.any() or not events.any():
        return None
    present = t.events > 0.5
    on_drug = present[:, :, drugs].any(axis=2)  # [N, T]
    rows = np.flatnonzero(on_drug.any(axis=1))
    k0 = on_drug[rows].argmax(axis=1)
    steps = np.arange(t.windows)[None, :]
    sub = t.subset(rows)
    history = summary_features(sub, steps < k0[:, None], drop=events)
    started = present[rows, k0][:, drugs].astype(np.float64)
    y = (present[rows][:, :, events].any(axis=2) & (steps >= k0[:, None])).any(axis=1)
    return np.hstack([history, started, _one_hot(sub.disease, n_diseases)]), y.astype(np.int64)


def onset_task(t: TrajectoryTensors, n_diseases: int, column: int) -> Dataset | None:
    """Whether phenotype ``column`` first appears after the index window.

    The cut c = ``windows_before`` is the index window (the first window on or after the
    index date). Eligible: patients without the feature in windows k ≤ c. y = 1 when it is
    present in some window k > c. x = :func:`summary_features` over windows k ≤ c | the
    disease one-hot. None when the grid has no window after c.
    """
    cut = t.windows_before
    if cut + 1 >= t.windows:
        return None
    present = t.events[:, :, column] > 0.5
    rows = np.flatnonzero(~present[:, : cut + 1].any(axis=1))
    sub = t.subset(rows)
    keep = np.broadcast_to(np.arange(t.windows)[None, :] <= cut, (rows.size, t.windows))
    x = np.hstack([summary_features(sub, keep), _one_hot(sub.disease, n_diseases)])
    return x, present[rows, cut + 1:].any(axis=1).astype(np.int64)


def summary_features(t: TrajectoryTensors, keep: np.ndarray, *, drop: np.ndarray | None = None) -> np.ndarray:
    """float64 [N, B + 2L + 2]: a patient over the windows ``keep`` [N, T] (bool) marks.

    Columns: each binary feature present in a kept window (0/1; columns in ``drop`` [B]
    set to 0) | mean observed value of each lab over kept windows (0 if none) | share of
    kept windows in which each lab was observed | sex | age / 100.
    """
    k = np.asarray(keep, bool)
    present = ((t.events > 0.5) & k[:, :, None]).any(axis=1).astype(np.float64)
    if drop is not None:
        present[:, np.asarray(drop, bool)] = 0.0
    observed = (t.lab_mask > 0.5) & k[:, :, None]
    n_obs = observed.sum(axis=1)
    lab_mean = np.where(observed, t.labs, 0.0).sum(axis=1) / np.maximum(n_obs, 1)
    lab_share = n_obs / np.maximum(k.sum(axis=1), 1)[:, None]
    return np.hstack([present, lab_mean, lab_share, t.sex[:, None].astype(np.float64),
                      (t.age[:, None] / 100.0).astype(np.float64)])


def onset_columns(real: TrajectoryTensors, *, max_phenotypes: int = DEFAULT_MAX_PHENOTYPES,
                  min_cases: int = DEFAULT_MIN_CASES) -> list[int]:
    """Phenotype columns for onset tasks, chosen on the real training cohort only.

    A phenotype qualifies when at least ``min_cases`` eligible real patients have a
    later onset and at least ``min_cases`` do not; the ``max_phenotypes`` with the
    largest min(onsets, non-onsets) are kept (ties: vocabulary order).
    """
    cut = real.windows_before
    if cut + 1 >= real.windows:
        return []
    present = real.events > 0.5
    before = present[:, : cut + 1].any(axis=1)  # [N, B]
    after = present[:, cut + 1:].any(axis=1)
    onsets = (~before & after).sum(axis=0)
    free = (~before & ~after).sum(axis=0)
    balance = np.minimum(onsets, free)
    candidates = [j for j, d in enumerate(real.binary_domains)
                  if d == "phenotype" and onsets[j] >= min_cases and free[j] >= min_cases]
    return sorted(candidates, key=lambda j: (-balance[j], j))[:max_phenotypes]


def tstr_trtr(
    real: TrajectoryTensors,
    synth: TrajectoryTensors,
    holdout: TrajectoryTensors,
    *,
    l2: float = DEFAULT_L2,
    max_phenotypes: int = DEFAULT_MAX_PHENOTYPES,
    min_cases: int = DEFAULT_MIN_CASES,
) -> list[TaskResult]:
    """TSTR and TRTR AUROC on every task the cohorts support.

    1. Tasks: ``disease``, ``drug_adverse_event`` (when the vocabulary has drugs and
       adverse events) and ``onset:<code>`` for the phenotypes of :func:`onset_columns`.
    2. Build each task's (x, y) on the real training, synthetic and holdout cohorts.
    3. Fit one model on real and one on synthetic rows; score the holdout rows.
    4. AUROC on the holdout: binary tasks as usual, ``disease`` as the macro average of
       one-vs-rest AUROCs over the diseases that have patients in the holdout (a
       disease a model never saw scores 0 for every patient, so it ranks at 0.5).

    A task is left out when the holdout lacks both classes (two diseases for
    ``disease``) or the real training set has a single class: there is then nothing to
    compare against.

    Parameters
    ----------
    real
        The cohort the generator was trained on.
    synth
        The generated cohort.
    holdout
        Real patients neither the generator nor the models saw: the test set.
    l2
        Weight penalty of the logistic models.
    max_phenotypes, min_cases
        See :func:`onset_columns`.

    Returns
    -------
    list[TaskResult]
        In the order of step 1.

    Raises
    ------
    ValueError
        The cohorts differ in columns or grid.
    """
    check_same_columns(real, synth, "synth")
    check_same_columns(real, holdout, "holdout")
    n_diseases = int(max(c.disease.max(initial=-1) for c in (real, synth, holdout))) + 1
    tasks: list[tuple[str, Callable[[TrajectoryTensors, int], Dataset | None]]] = [
        ("disease", disease_task), ("drug_adverse_event", drug_adverse_event_task)]
    for j in onset_columns(real, max_phenotypes=max_phenotypes, min_cases=min_cases):
        tasks.append((f"onset:{real.binary_codes[j]}", lambda t, n, j=j: onset_task(t, n, j)))
    results = []
    for name, build in tasks:
        sets = [build(c, n_diseases) for c in (real, synth, holdout)]
        if any(s is None for s in sets):
            continue
        (x_r, y_r), (x_s, y_s), (x_h, y_h) = sets
        if np.unique(y_r).size < 2 or np.unique(y_h).size < 2:
            continue
        trtr = _score(x_r, y_r, x_h, y_h, l2=l2)
        tstr = _score(x_s, y_s, x_h, y_h, l2=l2)
        results.append(TaskResult(name=name, tstr=tstr, trtr=trtr, ratio=auroc_ratio(tstr, trtr), n_train_real=int(y_r.size),
                                  n_train_synth=int(y_s.size), n_test=int(y_h.size)))
    return results


def _score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *, l2: float) -> float:
    """Holdout AUROC (macro one-vs-rest over the test classes) of a model fitted on the training rows."""
    classes = np.unique(y_test)
    if np.unique(y_train).size < 2:
        return 0.5  # one class: every test row gets the same score
    scores = fit_logistic(x_train, y_train, l2=l2).scores(x_test, classes)
    # for a binary task both one-vs-rest AUROCs equal the usual one (p₀ = 1 − p₁)
    return float(np.mean([auroc(scores[y_test == c, k], scores[y_test != c, k]) for k, c in enumerate(classes)]))


def _one_hot(codes: np.ndarray, n: int) -> np.ndarray:
    """float64 [len(codes), n] indicator matrix."""
    out = np.zeros((codes.size, n))
    out[np.arange(codes.size), codes] = 1.0
    return out
