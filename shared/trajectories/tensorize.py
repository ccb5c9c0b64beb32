"""Cohort ↔ trajectory tensors, in the bundle's vocabulary (layout: :mod:`shared.trajectories.tensors`).

Forward (:func:`tensorize`):

1. Index date: the patient's first diagnosis of a study disease; that disease is the
   condition (ties on the same day: the disease listed first in the study). Patients
   without one are left out and counted.
2. Window of an event: k = ⌊(date − index) / window_days⌋ + windows_before; events with
   k outside [0, T) are left out and counted.
3. Binary features: a drug is present in every window its exposure overlaps
   [start, end]; an HP term is an *adverse event* when the bundle links it to a drug the
   patient started on or before that date (DESIGN.md) and the vocabulary has it as one,
   otherwise a *phenotype*; a code of no known namespace (a comorbidity's ICD-10 code, say) is a
   phenotype (condition) feature where a grown vocabulary has it; codes outside the vocabulary
   are counted and dropped.
4. Labs: the last value in the window, standardized with the bundle's public reference
   range as (value − mid) / half-width (never with site statistics) and clipped to ±LAB_CLIP;
   a value in another unit than the bundle's is dropped and counted (unit conversion
   comes with the FHIR reader).

Backward (:func:`to_cohort`) writes every present feature as one event inside its window,
drug runs over consecutive windows as one exposure, and labs back in the bundle's unit;
read back and tensorized again, it gives the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shared.bundle import StudyBundle
from shared.ehr.cohort import Cohort
from shared.trajectories.tensors import TrajectoryTensors

BINARY_DOMAINS = ("phenotype", "drug", "adverse_event")
LAB_CLIP = 10.0  # standardized units: 10 half-ranges out of range is far past any physiology


@dataclass
class TensorizeStats:
    """What tensorization kept and dropped (counts)."""

    patients_in: int = 0
    patients_kept: int = 0
    patients_without_study_diagnosis: int = 0
    events_used: int = 0
    events_outside_grid: int = 0
    events_outside_vocabulary: int = 0
    lab_unit_mismatch: int = 0
    dropped_codes: dict[str, int] = field(default_factory=dict)  # top codes outside the vocabulary


@dataclass(frozen=True)
class TensorLayout:
    """The bundle's vocabulary split into binary features and labs."""

    binary_codes: tuple[str, ...]
    binary_domains: tuple[str, ...]
    lab_codes: tuple[str, ...]
    lab_mid: np.ndarray  # float64 [L]
    lab_half: np.ndarray  # float64 [L]
    lab_units: tuple[str, ...]
    diseases: tuple[str, ...]
    windows: int
    windows_before: int
    window_days: int
    drug_effects: frozenset[tuple[str, str]]  # (drug code, adverse-event code)

    @classmethod
    def from_bundle(cls, bundle: StudyBundle) -> TensorLayout:
        v = bundle.vocabulary
        binary = v[v["domain"].isin(BINARY_DOMAINS)]
        labs = v[v["domain"] == "lab"].merge(bundle.labs, on="code", how="left", suffixes=("", "_lab"))
        if labs["low"].isna().any():
            missing = labs.loc[labs["low"].isna(), "code"].iloc[0]
            raise ValueError(f"bundle has no reference range for lab {missing}")
        codes = v["code"].to_numpy()
        pg = bundle.prior_graph
        effects = pg[pg["kind"] == "drug_effect"]
        time = bundle.study["time"]
        return cls(
            binary_codes=tuple(binary["code"]), binary_domains=tuple(binary["domain"]),
            lab_codes=tuple(labs["code"]),
            lab_mid=((labs["low"] + labs["high"]) / 2).to_numpy(dtype=np.float64),
            lab_half=((labs["high"] - labs["low"]) / 2).to_numpy(dtype=np.float64),
            lab_units=tuple(labs["unit"]), diseases=tuple(bundle.diseases["id"]),
            windows=int(time["windows"]), windows_before=int(time["windows-before"]),
            window_days=int(time["window-days"]),
            drug_effects=frozenset(zip(codes[effects["source"].to_numpy()], codes[effects["target"].to_numpy()])),
        )


def tensorize(cohort: Cohort, bundle: StudyBundle | TensorLayout) -> tuple[TrajectoryTensors, TensorizeStats]:
    """Place every patient with a study diagnosis on the bundle's time grid.

    Returns
    -------
    (TrajectoryTensors, TensorizeStats)

    Raises
    ------
    ValueError
        No patient has a diagnosis of a study disease (an empty cohort for this study).
    """
    layout = bundle if isinstance(bundle, TensorLayout) else TensorLayout.from_bundle(bundle)
    stats = TensorizeStats(patients_in=cohort.n_persons)
    persons = _first_study_diagnoses(cohort, layout)
    stats.patients_kept = int(len(persons))
    stats.patients_without_study_diagnosis = stats.patients_in - stats.patients_kept
    if persons.empty:
        raise ValueError("no patient has a diagnosis of a study disease: "
                         f"expected one of {', '.join(layout.diseases)} in condition_occurrence")
    index_date = persons["date"].to_numpy().astype("datetime64[D]")
    ev = _grid_events(cohort.events, persons, index_date, layout)
    events, unknown_binary = _binary_features(ev, index_date, layout, stats)
    labs, mask, unknown_labs = _lab_features(ev, len(persons), layout, stats)
    unknown_codes = pd.concat([unknown_binary, unknown_labs])
    stats.events_outside_vocabulary = int(len(unknown_codes))
    stats.dropped_codes = {str(c): int(v) for c, v in unknown_codes.value_counts().head(10).items()}
    age = (pd.DatetimeIndex(persons["date"]).year - persons["year_of_birth"]).to_numpy(dtype=np.float32)
    tensors = TrajectoryTensors(
        events=events, labs=labs, lab_mask=mask,
        sex=(persons["sex"] == "M").to_numpy(dtype=np.float32), age=age,
        disease=persons["rank"].to_numpy(dtype=np.int64), person_id=persons["person_id"].to_numpy(dtype=np.int64),
        index_date=index_date, binary_codes=layout.binary_codes, binary_domains=layout.binary_domains,
        lab_codes=layout.lab_codes, window_days=layout.window_days, windows_before=layout.windows_before,
    )
    return tensors, stats


def _first_study_diagnoses(cohort: Cohort, layout: TensorLayout) -> pd.DataFrame:
    """Persons with a study diagnosis, each with the first one's ``date`` and disease ``rank`` (step 1)."""
    e = cohort.events
    disease_rank = {d: i for i, d in enumerate(layout.diseases)}
    dx = e[e["code"].isin(disease_rank)].assign(rank=lambda f: f["code"].map(disease_rank))
    dx = dx.sort_values(["person_id", "date", "rank"], kind="stable").drop_duplicates("person_id")
    return cohort.persons.merge(dx[["person_id", "date", "rank"]], on="person_id", how="inner")


def _grid_events(e: pd.DataFrame, persons: pd.DataFrame, index_date: np.ndarray, layout: TensorLayout) -> pd.DataFrame:
    """The kept persons' events other than study diagnoses, with their tensor ``row`` and window ``k`` (step 2)."""
    row_of = pd.Series(np.arange(len(persons)), index=persons["person_id"].to_numpy())
    ev = e[e["person_id"].isin(row_of.index) & ~e["code"].isin(layout.diseases)].copy()
    ev["row"] = row_of.loc[ev["person_id"].to_numpy()].to_numpy()
    ev["k"] = _window(ev["date"].to_numpy(), index_date[ev["row"].to_numpy()], layout)
    return ev


def _binary_features(ev: pd.DataFrame, index_date: np.ndarray, layout: TensorLayout,
                     stats: TensorizeStats) -> tuple[np.ndarray, pd.Series]:
    """Binary features [N, T, F] (step 3) and the codes outside the vocabulary; counts into ``stats``."""
    events = np.zeros((len(index_date), layout.windows, len(layout.binary_codes)), dtype=np.float32)
    col = {(d, c): j for j, (c, d) in enumerate(zip(layout.binary_codes, layout.binary_domains))}
    drugs = ev[ev["domain"] == "drug"]
    jd = _place_drugs(events, drugs, col, index_date, layout, stats)
    hp = ev[ev["domain"] == "phenotype"]
    jh = _hp_columns(hp, drugs, col, layout)
    others = ev[ev["domain"].isin(["adverse_event", "unknown", "diagnosis"])]
    # a code of no known namespace (ICD10:, SNOMED:, ...) or another diagnosis: a condition feature (a
    # grown bundle's phenotype column, kg.growth) where the vocabulary has one, else an adverse event
    condition = _columns_of(others["code"], col, "phenotype")
    jo = np.where((others["domain"] != "adverse_event").to_numpy() & (condition >= 0), condition,
                  _columns_of(others["code"], col, "adverse_event"))
    for frame, js in ((hp, jh), (others, jo)):
        k = frame["k"].to_numpy()
        ok = (js >= 0) & (k >= 0) & (k < layout.windows)
        stats.events_outside_grid += int(((js >= 0) & ~ok).sum())
        events[frame["row"].to_numpy()[ok], k[ok], js[ok]] = 1.0
        stats.events_used += int(ok.sum())
    return events, pd.concat([drugs["code"][jd < 0], hp["code"][jh < 0], others["code"][jo < 0]])


def _place_drugs(events: np.ndarray, drugs: pd.DataFrame, col: dict[tuple[str, str], int], index_date: np.ndarray,
                 layout: TensorLayout, stats: TensorizeStats) -> np.ndarray:
    """Mark every window each exposure overlaps; the drugs' feature columns (-1: outside the vocabulary)."""
    t_len = layout.windows
    jd = _columns_of(drugs["code"], col, "drug")
    end = drugs["end_date"].fillna(drugs["date"]).to_numpy()
    k_end = _window(end, index_date[drugs["row"].to_numpy()], layout)
    k0 = drugs["k"].to_numpy()
    used = outside_grid = 0
    for r, j, a, b in zip(drugs["row"].to_numpy(), jd, k0, np.maximum(k_end, k0)):
        if j < 0:
            continue
        lo, hi = max(a, 0), min(b, t_len - 1)
        if lo > hi:
            outside_grid += 1
            continue
        events[r, lo : hi + 1, j] = 1.0
        used += 1
    stats.events_used += used
    stats.events_outside_grid += outside_grid
    return jd


def _hp_columns(hp: pd.DataFrame, drugs: pd.DataFrame, col: dict[tuple[str, str], int],
                layout: TensorLayout) -> np.ndarray:
    """Feature column of each HP event (-1: outside the vocabulary): an adverse event when linked
    to a drug started on or before it, else a phenotype."""
    ae_flag = np.zeros(len(hp), dtype=bool)
    if len(drugs) and layout.drug_effects:
        effects = pd.DataFrame(sorted(layout.drug_effects), columns=["drug", "code"])
        linked = hp[["row", "code", "date"]].reset_index().merge(effects, on="code")  # HP events a drug may cause
        taken = drugs[["row", "code", "date"]].rename(columns={"code": "drug", "date": "drug_date"})
        pairs = linked.merge(taken, on=["row", "drug"])  # ... by a drug this patient took
        ae_flag = hp.index.isin(pairs.loc[(pairs["drug_date"] <= pairs["date"]).to_numpy(), "index"])
    phenotype = _columns_of(hp["code"], col, "phenotype")
    adverse = _columns_of(hp["code"], col, "adverse_event")
    return np.where(ae_flag & (adverse >= 0), adverse, phenotype)


def _columns_of(codes: pd.Series, col: dict[tuple[str, str], int], domain: str) -> np.ndarray:
    """Feature column of each code in ``domain`` (-1: none), looked up once per distinct code."""
    positions, distinct = pd.factorize(codes.astype(str))
    found = np.array([col.get((domain, c), -1) for c in distinct], dtype=np.int64)
    return found[positions] if len(codes) else np.zeros(0, dtype=np.int64)


def _lab_features(ev: pd.DataFrame, n: int, layout: TensorLayout,
                  stats: TensorizeStats) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Labs [N, T, L] and their mask (step 4), and the lab codes outside the vocabulary; counts into ``stats``."""
    t_len = layout.windows
    labs = np.zeros((n, t_len, len(layout.lab_codes)), dtype=np.float32)
    mask = np.zeros_like(labs)
    lab_col = {c: j for j, c in enumerate(layout.lab_codes)}
    lb = ev[ev["domain"] == "lab"].sort_values(["row", "date"], kind="stable")
    jl = lb["code"].map(lambda c: lab_col.get(c, -1)).to_numpy(dtype=np.int64)
    units_ok = np.array([j >= 0 and u == layout.lab_units[j] for j, u in zip(jl, lb["unit"])], dtype=bool)
    stats.lab_unit_mismatch = int(((jl >= 0) & ~units_ok).sum())
    k = lb["k"].to_numpy()
    ok = units_ok & (k >= 0) & (k < t_len)
    stats.events_outside_grid += int((units_ok & ~ok).sum())
    r, kk, jj = lb["row"].to_numpy()[ok], k[ok], jl[ok]
    z = (lb["value"].to_numpy()[ok] - layout.lab_mid[jj]) / layout.lab_half[jj]
    labs[r, kk, jj] = np.clip(z, -LAB_CLIP, LAB_CLIP)  # sorted by date: the last write wins
    mask[r, kk, jj] = 1.0
    stats.events_used += int(ok.sum())
    return labs, mask, lb["code"][jl < 0]


def _window(dates: np.ndarray, index: np.ndarray, layout: TensorLayout) -> np.ndarray:
    """Window k of each date (step 2); outside [0, T) when off the grid."""
    days = (dates.astype("datetime64[D]") - index.astype("datetime64[D]")).astype(np.int64)
    return np.floor_divide(days, layout.window_days) + layout.windows_before


def to_cohort(tensors: TrajectoryTensors, bundle: StudyBundle | TensorLayout, *, seed: int) -> Cohort:
    """Synthetic (or real) tensors back to a cohort of dated events.

    Each present binary feature becomes one event on a day drawn uniformly inside its
    window (seeded); a drug present in consecutive windows becomes one exposure from the
    first window to the last; each observed lab becomes one measurement in the bundle's
    unit. Year of birth = index year − round(age).
    """
    layout = bundle if isinstance(bundle, TensorLayout) else TensorLayout.from_bundle(bundle)
    rng = np.random.default_rng(seed)
    n, t_len, _ = tensors.events.shape
    days = layout.window_days
    start = tensors.index_date.astype("datetime64[D]")

    def window_day(rows: np.ndarray, k: np.ndarray, lo: int = 0, hi: int = days) -> np.ndarray:
        offset = (k - layout.windows_before) * days + rng.integers(lo, hi, size=len(rows))
        return start[rows] + offset.astype("timedelta64[D]")

    half = max(days // 2, 1)

    frames = [pd.DataFrame({"person_id": tensors.person_id, "date": start,
                            "code": np.array(layout.diseases)[tensors.disease]})]
    present = tensors.events > 0.5
    domains = np.array(layout.binary_domains)
    codes = np.array(layout.binary_codes)
    is_drug = domains == "drug"
    r, k, j = np.nonzero(present[:, :, ~is_drug])
    nondrug = np.flatnonzero(~is_drug)
    # adverse events in the second half of their window, drug starts in the first half, so
    # an adverse event in its drug's first window still follows the drug when read back
    is_ae = domains[nondrug[j]] == "adverse_event"
    dates = np.where(is_ae, window_day(r, k, half, days), window_day(r, k))
    frames.append(pd.DataFrame({"person_id": tensors.person_id[r], "date": dates,
                                "code": codes[nondrug[j]], "domain": domains[nondrug[j]]}))
    # drug runs: a run starts where the previous window lacks the drug
    drug_cols = np.flatnonzero(is_drug)
    on = present[:, :, drug_cols]
    prev = np.concatenate([np.zeros_like(on[:, :1]), on[:, :-1]], axis=1)
    r, k0, j = np.nonzero(on & ~prev)
    k1 = k0.copy()
    while True:  # extend each run while the next window still has the drug
        more = (k1 + 1 < t_len) & on[r, np.minimum(k1 + 1, t_len - 1), j]
        if not more.any():
            break
        k1 = np.where(more, k1 + 1, k1)
    s = window_day(r, k0, 0, half)
    last_day = start[r] + ((k1 - layout.windows_before + 1) * days - 1).astype("timedelta64[D]")
    end = np.maximum(s, last_day - rng.integers(0, days // 2 + 1, size=len(r)).astype("timedelta64[D]"))
    frames.append(pd.DataFrame({"person_id": tensors.person_id[r], "date": s, "code": codes[drug_cols[j]],
                                "domain": "drug", "end_date": end}))
    r, k, j = np.nonzero(tensors.lab_mask > 0.5)
    value = layout.lab_mid[j] + layout.lab_half[j] * tensors.labs[r, k, j].astype(np.float64)
    frames.append(pd.DataFrame({"person_id": tensors.person_id[r], "date": window_day(r, k),
                                "code": np.array(layout.lab_codes)[j], "domain": "lab",
                                "value": np.round(value, 4), "unit": np.array(layout.lab_units)[j]}))
    events = pd.concat(frames, ignore_index=True)
    events["domain"] = events["domain"].fillna("diagnosis")
    events["date"] = events["date"].astype("datetime64[s]")
    events["end_date"] = events["end_date"].astype("datetime64[s]")
    index_year = pd.DatetimeIndex(start).year.to_numpy()
    persons = pd.DataFrame({"person_id": tensors.person_id, "sex": np.where(tensors.sex > 0.5, "M", "F"),
                            "year_of_birth": (index_year - np.round(tensors.age)).astype(np.int64)})
    return Cohort.from_frames(persons, events)
