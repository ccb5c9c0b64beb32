"""The representation ceiling of a site (issue 21): how much of its patients' records survives
the trip real records → trajectory tensors → OMOP tables, before any model or privacy noise.
What is lost here no model trained on the tensors can ever generate, so it bounds every fidelity
figure; an evaluator that scores only the vocabulary's codes cannot see it.

Scope: the patients :func:`~shared.trajectories.tensorize.tensorize` places on the grid (those
with a study diagnosis) and every code occurrence recorded for them: one row of the cohort's
events (a condition, observation, drug exposure or measurement), after the code map, whatever its
code (an unmapped ``ICD10:`` code counts too). Persons without a study diagnosis are not in the
study; they are counted apart (``outside_study``).

Fate of an occurrence (:data:`REASONS`; the first that applies, in tensorize's order):

1. A study diagnosis: the patient's condition code is representable (the tensors keep the
   condition, its first date being the index date); another study disease is
   ``other_study_disease`` (one condition per patient).
2. No feature column for it (the lookup of tensorize step 3: drugs and labs by code, an HP term
   as an adverse event after a linked drug the patient started on or before that day and else as
   a phenotype, a code of no known namespace (or another diagnosis) as a phenotype (a condition)
   and else as an adverse event, every other code as an adverse event): ``adverse_event_without_drug`` for an HP
   term the vocabulary holds only as an adverse event, recorded with no linked drug started
   before it; else ``outside_vocabulary``. Together they are tensorize's
   ``events_outside_vocabulary``.
3. A lab in a unit the reader could not convert to the bundle's: ``lab_unit`` (no usable value).
4. Before the first window: ``before_first_window``; after the last: ``after_last_window``
   (a drug exposure: its whole span).
5. Otherwise representable. Representable occurrences of one feature in one window become one
   cell (binary: present; lab: the last value) and a drug's exposures over consecutive windows
   one run, so the round trip writes fewer rows: ``merged_within_window`` = representable −
   rows after the round trip, counted per code on the tables written back.

The round trip is the release's own path: :func:`~shared.trajectories.tensorize.to_cohort`, then
:func:`~shared.ehr.cdm_tables.cdm_tables` (in memory), codes read back from ``*_source_value``.

Prevalence R²: over every code recorded for the N patients (or written back), x_c = share of the
patients with code c in their records, y_c = share with c after the round trip (0 for a code
never representable); R² = 1 − Σ_c (y_c − x_c)² / Σ_c (x_c − x̄)², the identity-line R² of
:func:`shared.evaluation.fidelity.prevalence_r2` (its ``_agreement``; written again here because
``shared/evaluation`` imports ``shared/trajectories``, never the reverse), and Pearson r².
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shared.bundle import StudyBundle
from shared.ehr.cdm_tables import cdm_tables
from shared.ehr.cohort import Cohort
from shared.ehr.omop_columns import EVENT_TABLES
from shared.trajectories.tensorize import TensorLayout, to_cohort
from shared.trajectories.tensors import TrajectoryTensors

#: why an occurrence cannot be represented, in the order they are checked
REASONS = ("other_study_disease", "outside_vocabulary", "adverse_event_without_drug", "lab_unit",
           "before_first_window", "after_last_window")
REPRESENTABLE = "representable"
TOP_LOST = 10  # lost codes listed, most occurrences first
ROUND_TRIP_SEED = 0  # days drawn inside windows by to_cohort: the counts measured do not depend on them


@dataclass(frozen=True)
class RepresentationCeiling:
    """What of a site's study patients' records the tensors can represent (see the module docstring).

    Attributes
    ----------
    patients
        Patients on the grid (N).
    outside_study
        ``{"persons", "occurrences"}`` of persons without a study diagnosis (not in the shares).
    occurrences
        Counts: ``recorded``, ``representable``, ``lost``, ``lost_by_reason`` (every key of
        :data:`REASONS`), ``merged_within_window``, ``after_round_trip``; shares of ``recorded``:
        ``share_representable``, ``share_lost_by_reason``; ``per_domain`` (recorded,
        representable).
    codes
        Distinct codes ``recorded``, ``in_vocabulary`` (a code of the vocabulary, in any domain,
        or a study disease), ``representable`` (some occurrence survives the round trip).
    codes_per_patient
        Mean distinct codes per patient, ``recorded`` and ``round_trip``.
    prevalence
        ``r2`` (identity line), ``r2_corr`` (Pearson r²), ``codes`` (points).
    top_lost_codes
        ``[{"code", "lost", "recorded", "reasons": {reason: n}}]``, most lost first (ties by code).
    """

    patients: int
    outside_study: dict
    occurrences: dict
    codes: dict
    codes_per_patient: dict
    prevalence: dict
    top_lost_codes: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready: the attributes as a dict."""
        return {"patients": self.patients, "outside_study": self.outside_study, "occurrences": self.occurrences,
                "codes": self.codes, "codes_per_patient": self.codes_per_patient, "prevalence": self.prevalence,
                "top_lost_codes": self.top_lost_codes}


def representation_ceiling(cohort: Cohort, tensors: TrajectoryTensors,
                           bundle: StudyBundle | TensorLayout) -> RepresentationCeiling:
    """Compare a site's study patients' records with what survives tensors → OMOP tables.

    Parameters
    ----------
    cohort
        The site's cohort as :func:`shared.ehr.site.read_site` returns it with the bundle
        (codes mapped, lab units converted): every recorded occurrence, in the vocabulary or not.
    tensors
        ``tensorize(cohort, bundle)``'s tensors (N patients).
    bundle
        The study bundle, or its :class:`~shared.trajectories.tensorize.TensorLayout`.

    Returns
    -------
    RepresentationCeiling

    Raises
    ------
    ValueError
        A tensor patient is not in the cohort, or a person id does not fit the OMOP CDM's 32 bits.
    """
    layout = bundle if isinstance(bundle, TensorLayout) else TensorLayout.from_bundle(bundle)
    on_grid = np.isin(cohort.events["person_id"].to_numpy(), tensors.person_id)
    missing = np.setdiff1d(tensors.person_id, cohort.persons["person_id"].to_numpy())
    if missing.size:
        raise ValueError(f"tensor patient {int(missing[0])} is not in the cohort: give the cohort the tensors were "
                         "made from")
    occ = cohort.events[on_grid].reset_index(drop=True)
    occ = occ.assign(fate=_fates(occ, tensors, layout))
    back = _round_trip(tensors, layout)
    n = tensors.n
    return RepresentationCeiling(
        patients=n,
        outside_study={"persons": int(cohort.n_persons - n), "occurrences": int((~on_grid).sum())},
        occurrences=_occurrences(occ, back), codes=_codes(occ, layout),
        codes_per_patient={"recorded": _mean_codes(occ, tensors.person_id),
                           "round_trip": _mean_codes(back, tensors.person_id)},
        prevalence=_prevalence(occ, back, n), top_lost_codes=_top_lost(occ))


def _fates(occ: pd.DataFrame, tensors: TrajectoryTensors, layout: TensorLayout) -> np.ndarray:
    """Fate of each occurrence (a reason of :data:`REASONS`, or :data:`REPRESENTABLE`), steps 1–5."""
    row = pd.Series(np.arange(tensors.n), index=tensors.person_id)[occ["person_id"].to_numpy()].to_numpy()
    condition = np.array(layout.diseases, dtype=object)[tensors.disease[row]]
    code = occ["code"].to_numpy(dtype=object)
    study = occ["code"].isin(layout.diseases).to_numpy()
    has_column, unit_ok, ae_only = _columns(occ, layout)
    k0, k1 = _windows(occ, tensors.index_date[row], layout)
    fate = np.full(len(occ), REPRESENTABLE, dtype=object)
    checks = ((~study & (k1 < 0), "before_first_window"), (~study & (k0 >= layout.windows), "after_last_window"),
              (~study & ~unit_ok, "lab_unit"), (~study & ~has_column, "outside_vocabulary"),
              (~study & ~has_column & ae_only, "adverse_event_without_drug"),
              (study & (code != condition), "other_study_disease"))
    for lost, reason in checks:  # the last check that applies wins: written from the last reason to the first
        fate[lost] = reason
    return fate


def _columns(occ: pd.DataFrame, layout: TensorLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per occurrence: whether tensorize gives it a feature column (step 2), whether a lab's unit
    is the bundle's (True for every other domain), and whether it is an HP term the vocabulary
    holds as an adverse event only."""
    domain, code = occ["domain"].to_numpy(dtype=object), occ["code"]

    def in_domain(d: str) -> np.ndarray:
        return code.isin({c for c, cd in zip(layout.binary_codes, layout.binary_domains) if cd == d}).to_numpy()

    is_drug, is_lab, is_hp = domain == "drug", domain == "lab", domain == "phenotype"
    as_ae = ~(is_drug | is_lab | is_hp)  # adverse events, unknown codes and other diagnoses
    as_condition = as_ae & (domain != "adverse_event")  # unknown codes and other diagnoses: a condition first
    hp_as_ae = is_hp & in_domain("adverse_event") & _after_linked_drug(occ, layout)
    has = (is_drug & in_domain("drug")) | (as_ae & in_domain("adverse_event")) | hp_as_ae \
        | ((is_hp | as_condition) & in_domain("phenotype")) | (is_lab & code.isin(layout.lab_codes).to_numpy())
    unit_of = dict(zip(layout.lab_codes, layout.lab_units))
    unit_ok = ~is_lab | ~has | (occ["unit"].to_numpy(dtype=object) == code.map(unit_of).to_numpy(dtype=object))
    return has, unit_ok, is_hp & in_domain("adverse_event") & ~in_domain("phenotype")


def _after_linked_drug(occ: pd.DataFrame, layout: TensorLayout) -> np.ndarray:
    """Per occurrence: an HP term the bundle links to a drug this patient started on or before that day."""
    flag = np.zeros(len(occ), dtype=bool)
    if not layout.drug_effects:
        return flag
    effects = pd.DataFrame(sorted(layout.drug_effects), columns=["drug", "code"])
    hp = occ.loc[occ["domain"] == "phenotype", ["person_id", "code", "date"]].reset_index()
    drugs = occ.loc[occ["domain"] == "drug", ["person_id", "code", "date"]]
    taken = drugs.rename(columns={"code": "drug", "date": "drug_date"})
    pairs = hp.merge(effects, on="code").merge(taken, on=["person_id", "drug"])
    flag[pairs.loc[(pairs["drug_date"] <= pairs["date"]).to_numpy(), "index"].to_numpy()] = True
    return flag


def _windows(occ: pd.DataFrame, index_date: np.ndarray, layout: TensorLayout) -> tuple[np.ndarray, np.ndarray]:
    """First and last window of each occurrence (a drug exposure: of its start and of its end)."""
    def window(dates: pd.Series) -> np.ndarray:
        days = (dates.to_numpy().astype("datetime64[D]") - index_date.astype("datetime64[D]")).astype(np.int64)
        return np.floor_divide(days, layout.window_days) + layout.windows_before

    k0 = window(occ["date"])
    drug = (occ["domain"] == "drug").to_numpy()
    k1 = np.where(drug, np.maximum(window(occ["end_date"].fillna(occ["date"])), k0), k0)
    return k0, k1


def _round_trip(tensors: TrajectoryTensors, layout: TensorLayout) -> pd.DataFrame:
    """(person_id, code) of every row of the OMOP event tables written back from the tensors."""
    tables = cdm_tables(to_cohort(tensors, layout, seed=ROUND_TRIP_SEED))
    frames = [tables[t.name][["person_id", t.code]].rename(columns={t.code: "code"}) for t in EVENT_TABLES]
    return pd.concat(frames, ignore_index=True).astype({"person_id": "int64", "code": str})


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _occurrences(occ: pd.DataFrame, back: pd.DataFrame) -> dict:
    """Occurrence counts and shares, lost by reason, merged, and per domain."""
    recorded = len(occ)
    kept = occ["fate"] == REPRESENTABLE
    lost = {r: int((occ["fate"] == r).sum()) for r in REASONS}
    per_domain = {str(d): {"recorded": int(len(g)), "representable": int((g["fate"] == REPRESENTABLE).sum())}
                  for d, g in occ.groupby("domain")}
    return {"recorded": recorded, "representable": int(kept.sum()), "lost": recorded - int(kept.sum()),
            "lost_by_reason": lost, "merged_within_window": int(kept.sum()) - len(back), "after_round_trip": len(back),
            "share_representable": _share(int(kept.sum()), recorded),
            "share_lost_by_reason": {r: _share(n, recorded) for r, n in lost.items()}, "per_domain": per_domain}


def _codes(occ: pd.DataFrame, layout: TensorLayout) -> dict:
    """Distinct codes recorded, in the vocabulary (any domain) or a study disease, and representable."""
    known = set(layout.binary_codes) | set(layout.lab_codes) | set(layout.diseases)
    recorded = pd.Series(occ["code"].unique())
    return {"recorded": int(len(recorded)), "in_vocabulary": int(recorded.isin(known).sum()),
            "representable": int(occ.loc[occ["fate"] == REPRESENTABLE, "code"].nunique())}


def _mean_codes(rows: pd.DataFrame, patients: np.ndarray) -> float:
    """Mean distinct codes per patient (a patient without rows counts as 0)."""
    per = rows.groupby("person_id")["code"].nunique().reindex(patients, fill_value=0)
    return round(float(per.mean()), 4) if len(per) else 0.0


def _prevalence(occ: pd.DataFrame, back: pd.DataFrame, n: int) -> dict:
    """Identity-line R² and Pearson r² of per-code patient shares, real (truth) vs round trip."""
    real = occ[["person_id", "code"]].drop_duplicates()["code"].value_counts() / n
    trip = back.drop_duplicates()["code"].value_counts() / n
    codes = real.index.union(trip.index)
    x = real.reindex(codes, fill_value=0.0).to_numpy(np.float64)
    y = trip.reindex(codes, fill_value=0.0).to_numpy(np.float64)
    return {"r2": _round(_r2_identity(x, y)), "r2_corr": _round(_r2_corr(x, y)), "codes": int(len(codes))}


def _r2_identity(x: np.ndarray, y: np.ndarray) -> float:
    """1 − SSE/SST around y = x (NaN with fewer than 2 points or no spread in x)."""
    sst = float(((x - x.mean()) ** 2).sum()) if x.size >= 2 else 0.0
    return 1.0 - float(((y - x) ** 2).sum()) / sst if sst > 0 else float("nan")


def _r2_corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r² (NaN with fewer than 2 points or no spread)."""
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1]) ** 2


def _round(v: float) -> float | None:
    return None if np.isnan(v) else round(v, 4)


def _top_lost(occ: pd.DataFrame) -> list[dict]:
    """The codes with the most lost occurrences, each with its recorded count and reasons."""
    lost = occ[occ["fate"] != REPRESENTABLE]
    if lost.empty:
        return []
    by_code = lost.groupby(["code", "fate"]).size().unstack(fill_value=0)
    totals = by_code.sum(axis=1)
    recorded = occ["code"].value_counts()
    order = sorted(totals.index, key=lambda c: (-int(totals[c]), str(c)))[:TOP_LOST]
    return [{"code": str(c), "lost": int(totals[c]), "recorded": int(recorded[c]),
             "reasons": {r: int(by_code.at[c, r]) for r in REASONS if r in by_code.columns and by_code.at[c, r]}}
            for c in order]


__all__ = ["REASONS", "RepresentationCeiling", "representation_ceiling"]
