"""One simulated hospital's patients (:func:`simulate_site`), drawn from its profile
(:mod:`shared.simulation.profile`). :mod:`shared.simulation.consortium` is the entry point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.ehr.cohort import Cohort
from shared.simulation.profile import SiteProfile
from shared.simulation.truth import (
    COMEDICATIONS,
    COMORBIDITIES,
    FIRST_DAY,
    FOLLOW_UP_DAYS,
    INDEX_FIRST,
    INDEX_LAST,
    LAST_DAY,
    logit_of,
    sex_specific_masks,
    sigmoid,
)


_NEVER = np.iinfo(np.int64).max // 4  # "day" of something that does not happen


@dataclass(frozen=True)
class _Patients:
    """Who a site's patients are and when they are followed (one entry per patient)."""

    pid: np.ndarray  # int64 person id
    disease: np.ndarray  # int index into truth.disease_ids
    male: np.ndarray  # bool
    age: np.ndarray  # float years at the index date
    index: np.ndarray  # int64 day of the index date (the first diagnosis)
    end: np.ndarray  # int64 last day of follow-up
    yob: np.ndarray  # int64 year of birth
    severity: np.ndarray  # float latent severity (sd 1)


@dataclass(frozen=True)
class _Exposures:
    """Study-drug exposures seen during follow-up (one entry per exposure)."""

    patient: np.ndarray  # int row in _Patients
    drug: np.ndarray  # int index into truth.drug_codes
    start: np.ndarray  # int64 day
    end: np.ndarray  # int64 day (ongoing ones end at follow-up)


def _days_to_dates(days: np.ndarray) -> np.ndarray:
    """Day numbers (since 1970-01-01) as datetime64[s]."""
    return days.astype("datetime64[D]").astype("datetime64[s]")


def _frame(person: np.ndarray, day: np.ndarray, code: np.ndarray, domain: str, *,
           value: np.ndarray | None = None, unit: np.ndarray | None = None,
           end: np.ndarray | None = None) -> pd.DataFrame:
    """One block of events in :data:`~shared.ehr.cohort.EVENT_COLUMNS` layout."""
    n = len(person)
    return pd.DataFrame({
        "person_id": person, "date": _days_to_dates(day), "code": code, "domain": np.full(n, domain, dtype=object),
        "value": np.full(n, np.nan) if value is None else value,
        "unit": np.full(n, "", dtype=object) if unit is None else unit,
        "end_date": np.full(n, np.datetime64("NaT"), dtype="datetime64[s]") if end is None else _days_to_dates(end),
    })


def _onset_offsets(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Days from the index date to a phenotype's onset.

    25 % prodrome (15–365 days before: what led to the diagnosis), 35 % found at the
    diagnostic work-up (0–60 days), 40 % later (60 + exponential, mean 450 days), so
    onsets spread over the ~3.5 years of follow-up.
    """
    u = rng.random(shape)
    prodrome = -rng.integers(15, 366, shape)
    workup = rng.integers(0, 61, shape)
    later = 60 + np.minimum(rng.exponential(450.0, shape), FOLLOW_UP_DAYS).astype(np.int64)
    return np.where(u < 0.25, prodrome, np.where(u < 0.6, workup, later))


def _demography(code: str, v: np.ndarray, female: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Sex and age effects on a lab's value where the physiology is well known."""
    if code == "LOINC:718-7":  # haemoglobin: women ~1.6 g/dL lower, children ~1 g/dL lower
        return v - 1.6 * female - 1.0 * (age < 12)
    if code == "LOINC:2160-0":  # creatinine follows muscle mass: lower in women and children
        return v * np.where(female, 0.85, 1.0) * (0.35 + 0.65 * np.minimum(age, 16) / 16)
    if code == "LOINC:98979-8":  # eGFR falls ~0.9 mL/min/1.73 m² per year after 40
        return v - 0.9 * np.maximum(age - 40, 0)
    if code == "LOINC:2157-6":  # creatine kinase: lower in women
        return v * np.where(female, 0.7, 1.0)
    if code == "LOINC:2276-4":  # ferritin: lower in (premenopausal) women
        return v * np.where(female, 0.6, 1.0)
    if code == "LOINC:8867-4":  # heart rate: children faster (~3/min per year under 12)
        return v + 3.0 * np.maximum(12 - age, 0)
    if code == "LOINC:6768-6":  # alkaline phosphatase: bone growth in children and adolescents
        return v * np.where(age < 16, 2.2, 1.0)
    return v


def simulate_site(profile: SiteProfile, rng: np.random.Generator) -> Cohort:
    """All patients of one site. The steps draw from ``rng`` in the order they are called: that
    order is part of the output (a seed gives one consortium), so new draws go after the rest."""
    t = profile.truth
    pts = _draw_patients(profile, rng)
    blocks = [_frame(pts.pid, pts.index, np.array(t.disease_ids, dtype=object)[pts.disease], "diagnosis")]
    phenotypes, onset, possible = _draw_phenotypes(profile, rng, pts)
    drugs, exposures = _draw_study_drugs(profile, rng, pts)
    adverse, ae_on, ae_stop = _draw_adverse_events(profile, rng, pts, exposures, possible)
    blocks += [phenotypes, drugs, adverse]
    blocks += _draw_lab_visits(profile, rng, pts, onset=onset, ae_on=ae_on, ae_stop=ae_stop)
    blocks += _comorbid(profile, rng, pts)
    persons = pd.DataFrame({"person_id": pts.pid, "sex": np.where(pts.male, "M", "F"), "year_of_birth": pts.yob})
    return Cohort.from_frames(persons, pd.concat(blocks, ignore_index=True))


def _draw_patients(profile: SiteProfile, rng: np.random.Generator) -> _Patients:
    """Demography: disease, sex, age at diagnosis, index date, follow-up and latent severity."""
    t, n = profile.truth, profile.n_patients
    disease = rng.choice(len(t.disease_ids), size=n, p=np.asarray(profile.disease_mix))
    prof = t.profiles
    male = rng.random(n) < np.array([x.male_share for x in prof])[disease]
    median = np.array([x.age_median for x in prof])[disease]
    median = median * np.where(male, 1.0, np.array([x.female_age_factor for x in prof])[disease])
    spread = np.array([x.age_spread for x in prof])[disease]
    age = np.clip(median * np.exp(spread * rng.standard_normal(n)), 0.0, 85.0)
    index = rng.integers(INDEX_FIRST, INDEX_LAST + 1, n)
    birth = index - np.round(age * 365.25).astype(np.int64)
    yob = birth.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    # 80 % are followed for the whole grid; 20 % are lost earlier (moved, transferred).
    follow = np.where(rng.random(n) < 0.2, rng.integers(180, FOLLOW_UP_DAYS, n), FOLLOW_UP_DAYS)
    end = np.minimum(index + follow, LAST_DAY)
    # Latent severity (sd 1); males with an X-linked disease are shifted up.
    severity = rng.standard_normal(n) + np.array([x.male_severity for x in prof])[disease] * male
    return _Patients(pid=profile.site * 1_000_000 + np.arange(1, n + 1, dtype=np.int64), disease=disease,
                     male=male, age=age, index=index, end=end, yob=yob, severity=severity)


def _draw_phenotypes(profile: SiteProfile, rng: np.random.Generator,
                     pts: _Patients) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Phenotype events; each term's true onset day and whether the patient's sex allows it (both [n, H])."""
    t, n, n_hp = profile.truth, len(pts.pid), len(profile.truth.hp_codes)
    # Hidden truth + site shift + severity, then recording.
    logit = (t.logit[pts.disease] + profile.phenotype_shift[None, :]
             + t.severity_loading[pts.disease] * pts.severity[:, None])
    present = rng.random((n, n_hp)) < sigmoid(logit)
    onset = np.where(present, pts.index[:, None] + _onset_offsets(rng, (n, n_hp)), _NEVER)
    recorded = present & (onset <= pts.end[:, None]) & (rng.random((n, n_hp)) < profile.phenotype_completeness)
    rp, rh = np.nonzero(recorded)
    day = onset[rp, rh]
    # Chronic problems are coded again at later encounters (Poisson, mean 0.5 repeats).
    extra = rng.poisson(0.5, rp.size)
    ep, eh, e0 = np.repeat(rp, extra), np.repeat(rh, extra), np.repeat(day, extra)
    eday = e0 + 1 + (rng.random(ep.size) * (pts.end[ep] - e0)).astype(np.int64)
    keep = eday <= pts.end[ep]
    rp, rh, day = np.concatenate([rp, ep[keep]]), np.concatenate([rh, eh[keep]]), np.concatenate([day, eday[keep]])
    # A term only the other sex can have never occurs: it is dropped here, after every draw
    # that depends on how many terms there are, so all other random numbers (and events)
    # are exactly what they would be without the rule; it moves no lab either.
    female_only, male_only = sex_specific_masks(t.hp_codes)
    possible = ~np.where(pts.male[:, None], female_only[None, :], male_only[None, :])  # [n, H]
    onset = np.where(possible, onset, _NEVER)
    ok = possible[rp, rh]
    hp_codes = np.array(t.hp_codes, dtype=object)
    return _frame(pts.pid[rp[ok]], day[ok], hp_codes[rh[ok]], "phenotype"), onset, possible


def _draw_study_drugs(profile: SiteProfile, rng: np.random.Generator,
                      pts: _Patients) -> tuple[pd.DataFrame, _Exposures]:
    """Study drugs: 0–2 indicated drugs, started 0–365 days after the index date."""
    t = profile.truth
    picks = [pick for d in range(len(t.disease_ids))
             for pick in _prescribe(rng, pts, np.flatnonzero(pts.disease == d),
                                    t.drug_preference[d] * profile.drug_formulary)]
    dp, dk, ds = (np.concatenate([p[i] for p in picks]) if picks else np.zeros(0, np.int64) for i in range(3))
    ok = ds <= pts.end[dp]  # a drug that would start after follow-up ends is never seen
    dp, dk, ds = dp[ok], dk[ok], ds[ok]
    # Long-term therapies: 30 days + exponential (mean 700); ongoing ones end at follow-up.
    de = np.minimum(ds + 30 + rng.exponential(700.0, ds.size).astype(np.int64), pts.end[dp])
    frame = _frame(pts.pid[dp], ds, np.array(t.drug_codes, dtype=object)[dk], "drug", end=de)
    return frame, _Exposures(patient=dp, drug=dk, start=ds, end=de)


def _prescribe(rng: np.random.Generator, pts: _Patients, rows: np.ndarray,
               w: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(patient rows, drugs, start days) of the first and second drugs of one disease's patients ``rows``."""
    ks = np.flatnonzero(w > 0)
    if rows.size == 0 or ks.size == 0:
        return []
    s = pts.severity[rows]
    # ~85 % are treated, ~30 % of those with a second drug; both more when severe.
    treated = rng.random(rows.size) < sigmoid(logit_of(0.85) + 0.5 * s)
    second = treated & (ks.size > 1) & (rng.random(rows.size) < sigmoid(logit_of(0.3) + 0.5 * s))
    # Weighted choice without replacement (Gumbel top-2) by preference × formulary.
    order = np.argsort(-(np.log(w[ks]) + rng.gumbel(size=(rows.size, ks.size))), axis=1)
    first_off = np.minimum(rng.exponential(60.0, rows.size), 365).astype(np.int64)
    second_off = first_off + (rng.random(rows.size) * (366 - first_off)).astype(np.int64)
    return [(rows[take], ks[order[take, min(j, ks.size - 1)]], pts.index[rows[take]] + off[take])
            for j, (take, off) in enumerate(((treated, first_off), (second, second_off)))]


def _draw_adverse_events(profile: SiteProfile, rng: np.random.Generator, pts: _Patients, drugs: _Exposures,
                         possible: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Adverse-event events; each term's first adverse-event day and the day it resolves (both [n, H])."""
    t, n, n_hp = profile.truth, len(pts.pid), len(profile.truth.hp_codes)
    dp, dk, ds, de = drugs.patient, drugs.drug, drugs.start, drugs.end
    # Each linked effect with its own modest probability, after the start.
    count = t.ae_ptr[dk + 1] - t.ae_ptr[dk]
    pair = np.repeat(np.arange(dk.size), count)
    pos = t.ae_ptr[dk][pair] + np.arange(pair.size) - np.repeat(np.cumsum(count) - count, count)
    hit = rng.random(pair.size) < t.ae_prob[pos]
    r, ah = pair[hit], t.ae_hp[pos[hit]]
    # Most reactions come early (infusion reactions, GI upset): 1 day + exponential
    # (mean 45 days), always during the exposure.
    a_on = ds[r] + 1 + np.minimum(rng.exponential(45.0, r.size), de[r] - ds[r]).astype(np.int64)
    ok = a_on <= pts.end[dp[r]]
    r, ah, a_on = r[ok], ah[ok], a_on[ok]
    real = possible[dp[r], ah]  # nor as an adverse event (dropped after the draws, as for phenotypes)
    ae_on = np.full((n, n_hp), _NEVER)
    ae_stop = np.full((n, n_hp), -_NEVER)
    np.minimum.at(ae_on, (dp[r[real]], ah[real]), a_on[real])
    np.maximum.at(ae_stop, (dp[r[real]], ah[real]), de[r[real]] + 60)  # resolves ~2 months after stopping
    rec = (rng.random(r.size) < profile.phenotype_completeness) & real
    # Truth label "adverse_event"; in the OMOP files they are HP codes in observation.
    hp_codes = np.array(t.hp_codes, dtype=object)
    return _frame(pts.pid[dp[r[rec]]], a_on[rec], hp_codes[ah[rec]], "adverse_event"), ae_on, ae_stop


def _draw_lab_visits(profile: SiteProfile, rng: np.random.Generator, pts: _Patients, *, onset: np.ndarray,
                     ae_on: np.ndarray, ae_stop: np.ndarray) -> list[pd.DataFrame]:
    """Lab visits: the diagnosis coded again at some follow-ups, and the labs measured."""
    t, n, index, end = profile.truth, len(pts.pid), pts.index, pts.end
    # Work-up at diagnosis, sometimes one before, Poisson follow-ups.
    n_fu = rng.poisson(profile.lab_visits_per_year * (end - index) / 365.25)
    pre = np.flatnonzero(rng.random(n) < 0.4)
    fu_p = np.repeat(np.arange(n), n_fu)
    fu_day = index[fu_p] + 15 + (rng.random(fu_p.size) * (end[fu_p] - index[fu_p] - 14)).astype(np.int64)
    v_p = np.concatenate([np.arange(n), pre, fu_p])
    v_day = np.concatenate([index + rng.integers(0, 15, n), index[pre] - rng.integers(30, 366, pre.size), fu_day])
    # The diagnosis is coded again at some follow-up visits (always after the index date).
    again = rng.random(fu_p.size) < profile.diagnosis_recoding
    recoded = _frame(pts.pid[fu_p[again]], fu_day[again],
                     np.array(t.disease_ids, dtype=object)[pts.disease[fu_p[again]]], "diagnosis")
    measured = rng.random((v_p.size, len(t.lab_codes))) < t.lab_measure[pts.disease[v_p]] * profile.lab_completeness
    vi, lj = np.nonzero(measured)
    return [recoded, _labs(profile, rng, v_p[vi], v_day[vi], lj, pts, onset=onset, ae_on=ae_on, ae_stop=ae_stop)]


def _labs(profile: SiteProfile, rng: np.random.Generator, lp: np.ndarray, day: np.ndarray, lj: np.ndarray,
          pts: _Patients, *, onset: np.ndarray, ae_on: np.ndarray, ae_stop: np.ndarray) -> pd.DataFrame:
    """Lab values: normal around the reference range, out of it while a linked term is present."""
    t, m = profile.truth, lp.size
    low, high = t.lab_low[lj], t.lab_high[lj]
    # Normal: inside the range ~95 % of the time (sd 0.45 half-widths); labs whose range
    # starts at 0 (lipase, sweat chloride, protein/creatinine) are log-normal and positive.
    normal = np.where(low > 0, (low + high) / 2 + (high - low) / 2 * rng.normal(0.0, 0.45, m),
                      high * np.exp(rng.normal(np.log(0.4), 0.35, m)))
    direction = np.zeros(m)
    for j, links in enumerate(t.lab_links):
        sel = np.flatnonzero(lj == j)
        if not links or sel.size == 0:
            continue
        p, d = lp[sel], day[sel]
        # The most recently started active term sets the state: hypophenylalaninemia on
        # pegvaliase overrides the hyperphenylalaninemia of PKU while it lasts.
        latest, sign_now = np.full(sel.size, -_NEVER), np.zeros(sel.size)
        for h, sign in links:
            since = np.maximum(np.where(onset[p, h] <= d, onset[p, h], -_NEVER),
                               np.where((ae_on[p, h] <= d) & (d <= ae_stop[p, h]), ae_on[p, h], -_NEVER))
            newer = since > latest
            latest, sign_now = np.where(newer, since, latest), np.where(newer, sign, sign_now)
        direction[sel] = sign_now
    # While a linked term is present, 85 % of measurements are abnormal (fluctuation and
    # treatment pull the rest back). The excursion past the limit scales with the range's
    # relative width, so wide-range enzymes rise ×1.5–4 while tightly regulated values
    # (potassium, haemoglobin) move by plausible amounts; severe patients go further.
    direction *= rng.random(m) < 0.85
    width = (high - low) / np.maximum(high, 1e-9)
    worse = (1 + 0.25 * np.maximum(pts.severity[lp], 0)) * width
    up = high * np.exp((0.15 + rng.gamma(2.0, 0.3, m)) * worse)
    down = np.where(low > 0, low * np.exp(-(0.1 + rng.gamma(2.0, 0.25, m)) * worse), 0.3 * normal)
    value = np.where(direction > 0, up, np.where(direction < 0, down, normal))
    female, age_at = ~pts.male[lp], pts.age[lp] + (day - pts.index[lp]) / 365.25
    for j, code in enumerate(t.lab_codes):
        sel = lj == j
        value[sel] = _demography(code, value[sel], female[sel], age_at[sel])
    # Site assay bias (sd 3 %) and measurement noise (3 %); rounded as a lab reports it.
    value = np.maximum(value * (1 + profile.lab_bias[lj]) * (1 + rng.normal(0.0, 0.03, m)), 0.0)
    decimals = np.maximum(0, 2 - np.floor(np.log10(np.maximum(t.lab_high, 1e-9)))).astype(int)
    for j in range(len(t.lab_codes)):
        sel = lj == j
        value[sel] = np.round(value[sel], decimals[j])
    units = np.array(t.lab_units, dtype=object)[lj]
    return _frame(pts.pid[lp], day, np.array(t.lab_codes, dtype=object)[lj], "lab", value=value, unit=units)


def _comorbid(profile: SiteProfile, rng: np.random.Generator, pts: _Patients) -> list[pd.DataFrame]:
    """Common comorbidities (HP) and co-medications (DrugBank) outside the graph."""
    pid, age, index, end = pts.pid, pts.age, pts.index, pts.end
    n = pid.size
    a, b, min_age = (np.array([c[i] for c in COMORBIDITIES]) for i in (1, 2, 3))
    mid_age = (age + (end - index) / 2 / 365.25)[:, None]
    has = rng.random((n, a.size)) < np.where(mid_age >= min_age, sigmoid(a + b * mid_age), 0.0)
    cp, cc = np.nonzero(has)
    # Half are known at diagnosis (on the problem list at work-up), half arise later.
    known = rng.random(cp.size) < 0.5
    later = index[cp] + (rng.random(cp.size) * (end[cp] - index[cp] + 1)).astype(np.int64)
    cday = np.where(known, index[cp] + rng.integers(-365, 31, cp.size), later)
    when = np.full(has.shape, _NEVER)
    when[cp, cc] = cday
    rec = rng.random(cp.size) < profile.phenotype_completeness
    codes = np.array([c[0] for c in COMORBIDITIES], dtype=object)
    out = [_frame(pid[cp[rec]], cday[rec], codes[cc[rec]], "phenotype")]
    column = {c[0]: i for i, c in enumerate(COMORBIDITIES)}
    for code, by, p_with, p_without in COMEDICATIONS:
        prompted = has[:, column[by]] if by else np.zeros(n, dtype=bool)
        take = rng.random(n) < np.where(prompted, p_with, p_without)
        # Prompted ones start within 3 months of the condition; others any time from a
        # year before the index date (co-medications are not tied to the diagnosis).
        anytime = index - 365 + (rng.random(n) * (end - index + 366)).astype(np.int64)
        start = np.where(prompted, np.minimum(when[:, column[by]] if by else 0, end) + rng.integers(0, 91, n), anytime)
        start = np.maximum(start, FIRST_DAY)
        p = np.flatnonzero(take & (start <= end))
        stop = np.minimum(start[p] + 7 + rng.exponential(200.0, p.size).astype(np.int64), end[p])
        out.append(_frame(pid[p], start[p], np.full(p.size, code, dtype=object), "drug", end=stop))
    return out
