"""Patients drawn from the study bundle's public knowledge alone: no patient data at all.

Two uses: the coordinator pretrains the shared model on them before any site trains (public
pretraining costs no privacy, and DP-SGD then has to learn only how the sites differ from the
textbook), and they are the "graph priors only" baseline of the evaluation.

Per patient, independently (every number below is a public fact from the bundle or a stated
default, never a site statistic):

- disease as the caller asks (:meth:`PriorSampler.uniform_conditions`: uniform over the
  study); sex ½; age uniform on [1, 80) years;
- each phenotype annotated for the disease with Orphanet/HPO frequency f: present with
  probability f, recorded in one window drawn uniformly from the index window onwards
  (``onset_before`` of them fall in the window before the index date);
- each drug with a positive knowledge score for the disease (an indication path): given with
  probability ``drug_rate``, recorded from a window at or after the index date for the rest of
  the grid;
- each adverse event the bundle links to a drug the patient takes: with probability
  ``adverse_rate``, in a window after the drug starts;
- each lab measured with probability ``lab_rate`` per window, its standardized value drawn from
  N(0, 0.5²) (inside the public reference range) and moved by ±1.5 when a phenotype the bundle
  links to the lab (with its direction) is present by then.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.bundle import StudyBundle
from shared.ehr.omop_columns import SYNTHETIC_ID_BASE
from shared.trajectories.tensorize import TensorLayout
from shared.trajectories.tensors import TrajectoryTensors


@dataclass(frozen=True)
class PriorSampler:
    """The bundle's public knowledge and the rates that knowledge graphs do not give; the
    defaults are deliberately plain."""

    bundle: StudyBundle = field(repr=False, compare=False)
    drug_rate: float = 0.5
    adverse_rate: float = 0.1
    lab_rate: float = 0.3
    onset_before: float = 0.2
    lab_shift: float = 1.5

    name = "prior"  # not a field: the generator's name (:class:`~shared.baselines.base.SyntheticGenerator`)

    def uniform_conditions(self, n: int, *, seed: int) -> np.ndarray:
        """int64 [n]: diseases uniform over the study, for callers with no disease mix of their own.

        With the same ``seed``, ``sample(uniform_conditions(n, seed=s), seed=s)`` gives the
        patients the sampler drew when it chose the diseases itself.

        Raises
        ------
        ValueError
            n < 1.
        """
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        return np.random.default_rng(seed).integers(0, len(self.bundle.diseases), n)

    def sample(self, conditions: np.ndarray, *, seed: int) -> TrajectoryTensors:
        """One patient per disease index in ``conditions``, from the bundle's knowledge (see the
        module docstring and :meth:`shared.baselines.base.SyntheticGenerator.sample`).

        Raises
        ------
        ValueError
            No conditions, or one outside [0, D).
        """
        bundle = self.bundle
        disease = np.array(conditions, dtype=np.int64)  # a copy: the output must not alias the input
        n = len(disease)
        if n < 1 or disease.min() < 0 or disease.max() >= len(bundle.diseases):
            raise ValueError(f"conditions must be one or more disease indices in [0, {len(bundle.diseases)})")
        rng = np.random.default_rng(seed)
        # the draw uniform_conditions makes, discarded: a seed keeps giving the patients it gave
        # before the diseases were the caller's (pretraining and benchmark results stay comparable)
        rng.integers(0, len(bundle.diseases), n)
        layout = TensorLayout.from_bundle(bundle)
        v = bundle.vocabulary
        t_len, before = layout.windows, layout.windows_before
        b, n_labs = len(layout.binary_codes), len(layout.lab_codes)
        col = {(d, c): i for i, (d, c) in enumerate(zip(layout.binary_domains, layout.binary_codes))}
        lab_col = {c: i for i, c in enumerate(layout.lab_codes)}
        vocab_col = np.array([col.get((d, c), -1) for d, c in zip(v["domain"], v["code"])])
        vocab_lab = np.array([lab_col.get(c, -1) if d == "lab" else -1 for d, c in zip(v["domain"], v["code"])])
        domain = v["domain"].to_numpy()
        pg = bundle.prior_graph
        effects = pg[pg["kind"] == "drug_effect"]
        measured = pg[pg["kind"] == "measured_by"]

        events = np.zeros((n, t_len, b), np.float32)
        labs = np.zeros((n, t_len, n_labs), np.float32)
        lab_mask = (rng.random((n, t_len, n_labs)) < self.lab_rate).astype(np.float32)
        labs[:] = rng.normal(0.0, 0.5, labs.shape) * lab_mask
        onset_window = np.full((n, len(v)), -1)  # window a phenotype first appears, per vocabulary feature
        for d in range(len(bundle.diseases)):
            rows = np.flatnonzero(disease == d)
            if not len(rows):
                continue
            freq = bundle.frequency[d]
            pheno = np.flatnonzero(np.isfinite(freq) & (domain == "phenotype") & (vocab_col >= 0))
            present = rng.random((len(rows), len(pheno))) < freq[pheno]
            when = np.where(rng.random(present.shape) < self.onset_before, before - 1,
                            rng.integers(before, t_len, present.shape))
            r, k = np.nonzero(present)
            events[rows[r], when[r, k], vocab_col[pheno[k]]] = 1.0
            onset_window[rows[r], pheno[k]] = when[r, k]
            drugs = np.flatnonzero((domain == "drug") & (bundle.combined[d] > 0) & (vocab_col >= 0))
            given = rng.random((len(rows), len(drugs))) < self.drug_rate
            start = rng.integers(before, t_len, given.shape)
            for r, k in zip(*np.nonzero(given)):
                patient, drug = rows[r], drugs[k]
                events[patient, start[r, k]:, vocab_col[drug]] = 1.0
                for target in effects.loc[effects["source"] == drug, "target"].to_numpy():
                    if vocab_col[target] >= 0 and start[r, k] + 1 < t_len and rng.random() < self.adverse_rate:
                        events[patient, rng.integers(start[r, k] + 1, t_len), vocab_col[target]] = 1.0
        for source, target, weight in measured[["source", "target", "weight"]].to_numpy():
            lab = vocab_lab[int(target)]
            if lab < 0:
                continue
            onset = onset_window[:, int(source)]
            for w in range(t_len):
                moved = (onset >= 0) & (onset <= w)
                labs[moved, w, lab] += np.sign(weight) * self.lab_shift * lab_mask[moved, w, lab]
        return TrajectoryTensors(
            events=events, labs=labs, lab_mask=lab_mask, sex=(rng.random(n) < 0.5).astype(np.float32),
            age=rng.uniform(1.0, 80.0, n).astype(np.float32), disease=disease,
            person_id=SYNTHETIC_ID_BASE + np.arange(n, dtype=np.int64),  # synthetic ids, as every generator's
            index_date=np.full(n, np.datetime64("2000-01-01", "D")), binary_codes=layout.binary_codes,
            binary_domains=layout.binary_domains, lab_codes=layout.lab_codes, window_days=layout.window_days,
            windows_before=before)
