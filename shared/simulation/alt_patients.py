"""One alternative hospital's patients (:func:`simulate_alternative_site`), drawn encounter by
encounter from its habits (:class:`~shared.simulation.alt_world.AlternativeSite`).
:mod:`shared.simulation.alternative` is the entry point.

Events carry the code the site writes (an ORPHA, ICD-10, HP, SNOMED CT, DrugBank, RxNorm, ATC
or LOINC code, or a free-text drug name) and the domain of the OMOP table it goes to
(``diagnosis``: condition_occurrence; ``phenotype`` / ``adverse_event``: observation; ``drug``:
drug_exposure; ``lab``: measurement, in the site's unit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.ehr.cohort import Cohort
from shared.ehr.units import conversion_factor
from shared.simulation.alt_catalogue import COMEDICATIONS, COMORBIDITIES, DIAGNOSIS_ICD10, EXTRA_LABS
from shared.simulation.alt_world import AlternativeSite
from shared.simulation.truth import sex_specific_masks

YEAR = 365.25
FIRST_DIAGNOSIS = int(np.datetime64("1997-01-01", "D").astype(np.int64))  # earliest true diagnosis
LAST_DIAGNOSIS = int(np.datetime64("2024-06-30", "D").astype(np.int64))
DATA_CUT = int(np.datetime64("2025-06-30", "D").astype(np.int64))  # the export's date: nothing later


@dataclass
class _Rows:
    """Events collected for one site, column by column."""

    person: list
    day: list
    code: list
    domain: list
    value: list
    unit: list
    end: list

    @classmethod
    def empty(cls) -> _Rows:
        return cls([], [], [], [], [], [], [])

    def add(self, person: int, day: int, code: str, domain: str, *, value: float = np.nan, unit: str = "",
            end: int | None = None) -> None:
        for column, x in zip((self.person, self.day, self.code, self.domain, self.value, self.unit, self.end),
                             (person, day, code, domain, value, unit, day if end is None else end)):
            column.append(x)

    def frame(self) -> pd.DataFrame:
        is_drug = np.array(self.domain, dtype=object) == "drug"
        end = np.array(self.end, dtype=np.int64).astype("datetime64[D]").astype("datetime64[s]")
        return pd.DataFrame({
            "person_id": np.array(self.person, dtype=np.int64),
            "date": np.array(self.day, dtype=np.int64).astype("datetime64[D]").astype("datetime64[s]"),
            "code": np.array(self.code, dtype=object), "domain": np.array(self.domain, dtype=object),
            "value": np.array(self.value, dtype=np.float64), "unit": np.array(self.unit, dtype=object),
            "end_date": np.where(is_drug, end, np.datetime64("NaT")),
        })


def simulate_alternative_site(site: AlternativeSite, rng: np.random.Generator) -> Cohort:
    """All patients of one alternative hospital; the same ``rng`` state gives the same cohort."""
    w, n = site.world, site.n_patients
    disease = rng.choice(len(w.disease_ids), size=n, p=np.asarray(site.disease_mix))
    male = rng.random(n) < w.male_share[disease]
    age = _ages(site, rng, w.age_median[disease])
    rows, persons = _Rows.empty(), []
    female_only, male_only = sex_specific_masks(w.terms)
    for i in range(n):
        pid = site.site * 1_000_000 + i + 1
        impossible = male_only if not male[i] else female_only
        yob = _patient(site, rng, rows, pid, int(disease[i]), float(age[i]), impossible)
        persons.append((pid, "M" if male[i] else "F", yob))
    frame = pd.DataFrame(persons, columns=["person_id", "sex", "year_of_birth"])
    return Cohort.from_frames(frame, rows.frame())


def _ages(site: AlternativeSite, rng: np.random.Generator, median: np.ndarray) -> np.ndarray:
    """Age at the true diagnosis (years): log-normal around the disease's median, cut to the site's kind."""
    low, high = {"paediatric": (0.0, 18.0), "adult": (16.0, 90.0), "general": (0.0, 90.0)}[site.kind]
    age = median * np.exp(rng.normal(0.0, 0.9, median.size))
    outside = (age < low) | (age >= high)
    # A children's hospital still sees an adult-onset disease, in its youngest patients.
    age[outside] = rng.uniform(max(low, 0.05), high, outside.sum())
    return np.clip(age, 0.02, 90.0)


def _encounters(site: AlternativeSite, rng: np.random.Generator, *, first: int, diagnosis: int,
                end: int) -> tuple[np.ndarray, int]:
    """Sorted encounter days from ``first`` to ``end``, and the day of the first one on or after
    ``diagnosis`` (sparse before the diagnosis, a burst of work-up visits after it)."""
    pre_years = max(diagnosis - first, 0) / YEAR
    pre = first + np.sort(rng.random(rng.poisson(site.visits_per_year / 3 * pre_years))) * max(diagnosis - first, 0)
    start = max(diagnosis, first)
    post_n = rng.poisson(site.visits_per_year * (end - start) / YEAR)
    post = start + rng.random(post_n) * (end - start)
    burst = start + rng.integers(1, 91, rng.poisson(3.0))
    days = np.concatenate([pre, [start], post, burst[burst <= end]]).astype(np.int64)
    return np.unique(days), start


def _patient(site: AlternativeSite, rng: np.random.Generator, rows: _Rows, pid: int, d: int, age: float,
             impossible: np.ndarray) -> int:
    """Draw one patient's records into ``rows``; returns the year of birth."""
    w = site.world
    # 1. Calendar: the true diagnosis, a diagnostic odyssey before it (log-normal, median 2.5
    #    years, heavy tail) and a follow-up after it (median 5 years); the site's records begin
    #    at its EHR start, so a patient diagnosed earlier arrives as a prevalent case.
    truth_day = int(rng.integers(max(FIRST_DIAGNOSIS, site.ehr_start - 6 * 365), LAST_DIAGNOSIS + 1))
    birth = truth_day - int(age * YEAR)
    onset = max(birth, truth_day - int(YEAR * np.exp(rng.normal(np.log(2.5), 1.0))))
    end = min(DATA_CUT, truth_day + int(YEAR * np.exp(rng.normal(np.log(5.0), 0.9))))
    end = min(DATA_CUT, max(end, max(truth_day, site.ehr_start) + 30))
    first = max(site.ehr_start, birth, onset - int(rng.uniform(0, 2 * YEAR)))
    days, index = _encounters(site, rng, first=first, diagnosis=truth_day, end=end)
    post = days[days >= index]
    _diagnoses(site, rng, rows, pid, d, post)
    # 2. Phenotypes and symptoms of the patient's hidden subtype; over half begin before the diagnosis.
    subtype = int(rng.random() < w.subtype_share[d])
    present = (rng.random(len(w.terms)) < w.probability[d, subtype]) & ~impossible
    hs = np.flatnonzero(present)
    start = np.where(rng.random(hs.size) < 0.55, onset + rng.random(hs.size) * max(truth_day - onset, 0),
                     truth_day + YEAR * rng.pareto(1.3, hs.size)).astype(np.int64)
    rate = np.clip(site.codes_per_visit * site.term_factor[hs], 0.0, 0.8)
    table = "diagnosis" if site.phenotype_table == "condition_occurrence" else "phenotype"
    coded = (days[None, :] >= start[:, None]) & (rng.random((hs.size, days.size)) < rate[:, None])
    for a, e in zip(*np.nonzero(coded)):
        rows.add(pid, int(days[e]), _term_code(site, w.terms[hs[a]]), table)
    # 3. Comorbidities (latent factors and age), then study drugs with their adverse events,
    #    co-medications and labs.
    has, since = _comorbidities(site, rng, rows, pid, age + (end - truth_day) / 2 / YEAR, days, first, end)
    treated_from = _study_drugs(site, rng, rows, pid, d, index, end, impossible)
    _comedications(site, rng, rows, pid, has, since, first, end)
    _labs(site, rng, rows, pid, d, days, treated_from, has, since)
    return int(str(np.datetime64(birth, "D"))[:4])


def _diagnoses(site: AlternativeSite, rng: np.random.Generator, rows: _Rows, pid: int, d: int,
               post: np.ndarray) -> None:
    """The diagnosis at the first encounter after it, and again at some later ones."""
    orpha = site.world.disease_ids[d]
    code = DIAGNOSIS_ICD10.get(orpha, orpha) if site.diagnosis_system == "ICD" else orpha
    again = post[1:][rng.random(post.size - 1) < site.diagnosis_recoding]
    for day in (post[0], *again):
        rows.add(pid, int(day), code, "diagnosis")
    if code != orpha and rng.random() < site.orpha_share:  # the expert centre adds the Orphacode
        rows.add(pid, int(post[0]), orpha, "diagnosis")


def _term_code(site: AlternativeSite, hp: str) -> str:
    """An HP term as the site codes it (SNOMED CT where the code map has it and the site uses it)."""
    if site.phenotype_system == "SNOMEDCT":
        return site.knowledge.local_codes.get(hp, {}).get("SNOMEDCT", hp)
    return hp


def _comorbidities(site: AlternativeSite, rng: np.random.Generator, rows: _Rows, pid: int, age_mid: float,
                   days: np.ndarray, first: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Comorbidities from two latent factors and age; which the patient has and since when."""
    z = rng.standard_normal(2)
    has = np.zeros(len(COMORBIDITIES), dtype=bool)
    since = np.full(len(COMORBIDITIES), end + 1, dtype=np.int64)
    for c, m in enumerate(COMORBIDITIES):
        logit = m.intercept + m.per_decade * (age_mid - 40) / 10 + m.metabolic * z[0] + m.affective * z[1]
        if age_mid < m.min_age or rng.random() >= 1 / (1 + np.exp(-logit)):
            continue
        has[c] = True
        # Half are on the problem list when the records begin; the rest arise during them.
        since[c] = first - 30 if rng.random() < 0.5 else first + int(rng.random() * (end - first + 1))
        code, table = {"HP": (m.hp, "phenotype"), "ICD10": (m.icd10, "diagnosis"),
                       "SNOMEDCT": (m.snomed, "phenotype")}[site.comorbidity_system]
        if site.phenotype_table == "condition_occurrence":
            table = "diagnosis"
        rate = min(0.95, 1.3 * site.codes_per_visit)
        for day in days[(days >= since[c]) & (rng.random(days.size) < rate)]:
            rows.add(pid, int(day), code, table)
    return has, since


def _drug_code(site: AlternativeSite, drugbank: str) -> str:
    """A study drug as the site codes it (the code map's local code in its system, else DrugBank)."""
    if site.drug_system == "DRUGBANK":
        return drugbank
    return site.knowledge.local_codes.get(drugbank, {}).get(site.drug_system, drugbank)


def _exposure(site: AlternativeSite, rng: np.random.Generator, rows: _Rows, pid: int, code: str, start: int,
              stop: int) -> None:
    """One treatment as the site records it: one row, or one per dispensing (30 or 90 days, gaps between)."""
    if site.drug_records == "episode":
        rows.add(pid, start, code, "drug", end=stop)
        return
    supply = int(rng.choice([30, 90]))
    day = start
    while day <= stop:
        rows.add(pid, day, code, "drug", end=min(day + supply - 1, stop))
        day += supply + int(rng.integers(0, 15))


def _study_drugs(site: AlternativeSite, rng: np.random.Generator, rows: _Rows, pid: int, d: int, index: int,
                 end: int, impossible: np.ndarray) -> int:
    """0–2 study drugs after the diagnosis (exposures of months to years) and their adverse
    events; returns the first start day (after ``end``: untreated)."""
    w = site.world
    weight = w.drug_weight[d]
    if not weight.any() or rng.random() >= 0.75:
        return end + 1
    first_start = end + 1
    start = index + int(rng.exponential(120.0))
    switches = int(rng.random() < 0.3 and (weight > 0).sum() > 1)  # a second drug after the first
    for k in rng.choice(weight.size, size=1 + switches, replace=False, p=weight):
        if start > end:
            break
        stop = min(end, start + int(YEAR * np.exp(rng.normal(np.log(2.0), 1.0))))
        _exposure(site, rng, rows, pid, _drug_code(site, w.drugs[k]), start, stop)
        first_start = min(first_start, start)
        for (kk, h), p in w.ae_probability.items():
            if kk == k and not impossible[h] and rng.random() < p and rng.random() < 0.7:
                rows.add(pid, min(stop, start + 1 + int(rng.exponential(60.0))), _term_code(site, w.terms[h]),
                         "adverse_event")
        start = stop + int(rng.integers(0, 120))  # a switch: the next drug after this one
    return first_start


def _comedications(site: AlternativeSite, rng: np.random.Generator, rows: _Rows, pid: int, has: np.ndarray,
                   since: np.ndarray, first: int, end: int) -> None:
    """Common drugs, prompted by the comorbidities (or not), coded in the site's drug system."""
    column = {m.hp: c for c, m in enumerate(COMORBIDITIES)}
    for med in COMEDICATIONS:
        c = column.get(med.prompted_by) if med.prompted_by else None
        prompted = c is not None and has[c]
        if rng.random() >= (med.p_with if prompted else med.p_without):
            continue
        start = max(first, int(since[c]) + int(rng.exponential(60.0))) if prompted else \
            first + int(rng.random() * (end - first + 1))
        if start > end:
            continue
        stop = min(end, start + int(YEAR * np.exp(rng.normal(0.0, 1.2))))
        code = {"DRUGBANK": med.drugbank, "RXNORM": med.rxnorm, "ATC": med.atc, "NAME": med.label}[site.drug_system]
        _exposure(site, rng, rows, pid, code, start, stop)


def _labs(site: AlternativeSite, rng: np.random.Generator, rows: _Rows, pid: int, d: int, days: np.ndarray,
          treated_from: int, has: np.ndarray, since: np.ndarray) -> None:
    """Study labs (a disease-wide shift, halved once treated; in the site's units) and routine labs."""
    w = site.world
    low, high = w.lab_low, w.lab_high
    # On the log scale: centre and half-width of the reference range (ranges from 0: log-normal below the limit).
    centre = np.where(low > 0, np.sqrt(np.maximum(low, 1e-9) * high), 0.4 * high)
    half = np.where(low > 0, np.log(np.maximum(high, 1e-9) / np.maximum(low, 1e-9)) / 2, 0.5)
    patient = rng.normal(0.0, 0.5, len(w.labs))
    bias = np.exp(rng.normal(0.0, 0.04, len(w.labs)))
    rate = np.clip(w.lab_rate[d] * site.lab_factor, 0.0, 0.95) * ~np.isin(np.array(w.labs), site.lab_missing)
    for e, day in enumerate(days):
        for j in np.flatnonzero(rng.random(len(w.labs)) < rate):
            shift = w.lab_shift[d, j] * (0.5 if day >= treated_from else 1.0)
            value = centre[j] * bias[j] * np.exp(half[j] * (shift + patient[j] + rng.normal(0.0, 0.4)))
            unit = site.lab_unit(j)
            value *= conversion_factor(w.labs[j], w.lab_units[j], unit)
            rows.add(pid, int(day), w.labs[j], "lab", value=float(f"{value:.3g}"), unit=unit)
        for lab in EXTRA_LABS:
            c = next((i for i, m in enumerate(COMORBIDITIES) if m.hp == lab.prompted_by), None)
            with_it = c is not None and has[c] and day >= since[c]
            if rng.random() < (lab.p_with if with_it else lab.p_without):
                value = (lab.median_with if with_it else lab.median) * np.exp(rng.normal(0.0, lab.log_sd))
                rows.add(pid, int(day), lab.code, "lab", value=float(f"{value:.3g}"), unit=lab.unit)
