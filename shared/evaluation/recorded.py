"""Fidelity over everything a site records (issue 21), not only the codes the bundle's
vocabulary can hold.

The fidelity of :mod:`shared.evaluation.fidelity` compares trajectory tensors, so a code outside
the vocabulary vanishes on both sides before anything is measured: a model that can never
generate 40 % of what a site records still scores well. Here both sides are cohorts of dated
events (the real site as read with the bundle's code map, the synthetic release as written),
and every code either side records counts, whatever its namespace (an unmapped ``ICD10:``
code too); a lab counts by the presence of its code.

==================  ==========================================================================
variable            symbol
==================  ==========================================================================
``codes``           C: the union of the codes either side records for its patients, less
                    ``exclude`` (the study diagnoses: one per patient by construction)
``real, synth``     Pᴿ ∈ {0,1}^{Nᴿ×C}, Pˢ ∈ {0,1}^{Nˢ×C}: P_pc = 1 when patient p has at
                    least one occurrence of code c
``x, y``            x_c = (1/Nᴿ) Σ_p Pᴿ_pc, y_c = (1/Nˢ) Σ_p Pˢ_pc: prevalences
``top``             K: the ``top_codes`` codes with the highest x_c > 0 (ties by code)
==================  ==========================================================================

1. Prevalence: R² = 1 − Σ_c (y_c − x_c)² / Σ_c (x_c − x̄)², the identity-line R² of
   :func:`~shared.evaluation.fidelity.prevalence_r2` (its ``_agreement``), and Pearson r².
   A code the synthetic data never produces is a point (x_c, 0); one the site never records
   is (0, y_c).
2. Co-occurrence: Cᴿ_ij = (1/Nᴿ) Σ_p Pᴿ_pi Pᴿ_pj (the share of patients with both codes, at
   any time), Cˢ likewise, over i < j in K: K(K − 1)/2 points, compared as in step 1. Per
   patient rather than per window (:func:`~shared.evaluation.fidelity.cooccurrence_r2`), because a
   code outside the vocabulary has no window.
3. Codes per patient: m = (1/N) Σ_p Σ_c P_pc on each side, and (mˢ − mᴿ) / mᴿ.
4. Never generated: the share of the real occurrences (event rows, codes in C) whose code has
   y_c = 0.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from shared.ehr.cohort import Cohort
from shared.evaluation.fidelity import Agreement, _agreement

#: Codes of the co-occurrence comparison, the most prevalent in the real data: 1,225 pairs,
#: enough to see dependence; rarer codes would add pairs that 30–200 patients rarely show.
TOP_CODES = 50


@dataclass(frozen=True)
class RecordedFidelity:
    """Outcome of :func:`recorded_fidelity` (symbols as in the module docstring).

    Attributes
    ----------
    patients_real, patients_synthetic
        Nᴿ and Nˢ.
    codes, codes_real, codes_synthetic, codes_real_never_generated
        |C|; the codes each side records; the real codes with y_c = 0.
    prevalence
        Agreement of x and y over C (step 1).
    cooccurrence
        Agreement of Cᴿ and Cˢ over the pairs of the top codes (step 2).
    cooccurrence_codes
        K actually used (fewer when the real data records fewer codes).
    codes_per_patient_real, codes_per_patient_synthetic
        mᴿ and mˢ (step 3).
    occurrences_real, occurrences_real_never_generated
        Real event rows with a code in C, and those whose code has y_c = 0 (step 4).
    """

    patients_real: int
    patients_synthetic: int
    codes: int
    codes_real: int
    codes_synthetic: int
    codes_real_never_generated: int
    prevalence: Agreement
    cooccurrence: Agreement
    cooccurrence_codes: int
    codes_per_patient_real: float
    codes_per_patient_synthetic: float
    occurrences_real: int
    occurrences_real_never_generated: int

    def as_dict(self) -> dict:
        """JSON-ready flat dict, keys named as in the suite's fidelity group (NaN where undefined)."""
        m_r, m_s = self.codes_per_patient_real, self.codes_per_patient_synthetic
        occ, lost = self.occurrences_real, self.occurrences_real_never_generated
        return {
            "patients_real": self.patients_real, "patients_synthetic": self.patients_synthetic,
            "codes": self.codes, "codes_real": self.codes_real, "codes_synthetic": self.codes_synthetic,
            "codes_real_never_generated": self.codes_real_never_generated,
            "prevalence_corr": self.prevalence.corr, "prevalence_r2_corr": self.prevalence.r2_corr,
            "prevalence_r2_identity": self.prevalence.r2_identity, "prevalence_points": self.prevalence.n_points,
            "cooccurrence_corr": self.cooccurrence.corr, "cooccurrence_r2_corr": self.cooccurrence.r2_corr,
            "cooccurrence_r2_identity": self.cooccurrence.r2_identity,
            "cooccurrence_pairs": self.cooccurrence.n_points, "cooccurrence_codes": self.cooccurrence_codes,
            "codes_per_patient_real": m_r, "codes_per_patient_synthetic": m_s,
            "codes_per_patient_relative_difference": (m_s - m_r) / m_r if m_r > 0 else float("nan"),
            "occurrences_real": occ, "occurrences_real_never_generated": lost,
            "share_real_occurrences_never_generated": lost / occ if occ else float("nan"),
        }


def recorded_fidelity(real: Cohort, synthetic: Cohort, *, real_patients: np.ndarray | None = None,
                      synthetic_patients: np.ndarray | None = None, exclude: Collection[str] = (),
                      top_codes: int = TOP_CODES) -> RecordedFidelity:
    """Prevalence, co-occurrence and codes per patient over every code either side records.

    Parameters
    ----------
    real
        The real cohort, codes after the site's code map (:func:`shared.ehr.site.read_site` with
        the bundle): every occurrence, in the vocabulary or not.
    synthetic
        The synthetic cohort (a release read back, or :func:`~shared.trajectories.tensorize.to_cohort`
        of synthetic tensors).
    real_patients, synthetic_patients
        int64 person ids of the patients compared on each side (the tensors' ``person_id``: the
        patients with a study diagnosis); None: every person of the cohort. A patient without
        events counts as a row of zeros.
    exclude
        Codes left out of C (the study diagnoses).
    top_codes
        K, the codes of the co-occurrence comparison (≥ 2).

    Returns
    -------
    RecordedFidelity

    Raises
    ------
    ValueError
        A side has no patients, a listed patient is not in its cohort, or ``top_codes`` < 2.
    """
    if isinstance(top_codes, bool) or not isinstance(top_codes, int) or top_codes < 2:
        raise ValueError(f"top_codes must be an integer ≥ 2, got {top_codes!r}")
    ids_r, ev_r = _patients(real, real_patients, "real")
    ids_s, ev_s = _patients(synthetic, synthetic_patients, "synthetic")
    excluded = set(exclude)
    ev_r, ev_s = ev_r[~ev_r["code"].isin(excluded)], ev_s[~ev_s["code"].isin(excluded)]
    codes = pd.Index(sorted(set(ev_r["code"]) | set(ev_s["code"])))
    p_r, p_s = _presence(ev_r, ids_r, codes), _presence(ev_s, ids_s, codes)
    # 1. prevalences over C
    x = np.asarray(p_r.sum(axis=0), np.float64).ravel() / len(ids_r)
    y = np.asarray(p_s.sum(axis=0), np.float64).ravel() / len(ids_s)
    # 2. co-occurrence over the top codes by real prevalence (ties by code: C is sorted, the sort stable)
    top = np.argsort(-x, kind="stable")[:min(top_codes, int((x > 0).sum()))]
    iu = np.triu_indices(top.size, k=1)
    cooc = _agreement(_cooccurrence(p_r, top)[iu], _cooccurrence(p_s, top)[iu])
    # 4. real occurrences of codes the synthetic side never produces
    never = codes[(x > 0) & (y == 0)]
    return RecordedFidelity(
        patients_real=len(ids_r), patients_synthetic=len(ids_s), codes=len(codes),
        codes_real=int((x > 0).sum()), codes_synthetic=int((y > 0).sum()), codes_real_never_generated=len(never),
        prevalence=_agreement(x, y), cooccurrence=cooc, cooccurrence_codes=int(top.size),
        # 3. codes per patient
        codes_per_patient_real=float(p_r.sum() / len(ids_r)), codes_per_patient_synthetic=float(p_s.sum() / len(ids_s)),
        occurrences_real=len(ev_r), occurrences_real_never_generated=int(ev_r["code"].isin(never).sum()),
    )


def _patients(cohort: Cohort, patients: np.ndarray | None, side: str) -> tuple[np.ndarray, pd.DataFrame]:
    """The side's patient ids and their (person_id, code) event rows; checks the ids."""
    known = cohort.persons["person_id"].to_numpy(np.int64)
    ids = np.unique(known if patients is None else np.asarray(patients, np.int64))  # sorted: rows by searchsorted
    if not ids.size:
        raise ValueError(f"the {side} side has no patients to compare")
    missing = np.setdiff1d(ids, known)
    if missing.size:
        raise ValueError(f"{side} patient {int(missing[0])} is not in the {side} cohort: give the cohort the "
                         "tensors were made from")
    events = cohort.events[["person_id", "code"]]
    return ids, events[events["person_id"].isin(ids)]


def _presence(events: pd.DataFrame, ids: np.ndarray, codes: pd.Index) -> sparse.csr_matrix:
    """P ∈ {0,1}^{N×C}: patient (rows in ``ids`` order) has the code (columns in ``codes`` order)."""
    pairs = events.drop_duplicates()
    rows = np.searchsorted(ids, pairs["person_id"].to_numpy(np.int64))
    cols = codes.get_indexer(pairs["code"])
    return sparse.csr_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(ids), len(codes)))


def _cooccurrence(presence: sparse.csr_matrix, top: np.ndarray) -> np.ndarray:
    """float64 [K, K]: share of patients with both codes (step 2)."""
    p = presence[:, top]
    return (p.T @ p).toarray() / presence.shape[0]


__all__ = ["TOP_CODES", "RecordedFidelity", "recorded_fidelity"]
