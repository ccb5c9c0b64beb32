"""A simulated consortium of hospitals: the OMOP data the demo and the tests train on.

The simulator reads public knowledge from the study bundle only
(:class:`SimulationKnowledge`) and hides its own "true" world around it
(:class:`SimulationTruth`), so that the graph's priors are useful but never the
generating process verbatim:

- true phenotype probabilities are the annotated Orphanet/HPO frequencies moved by
  hidden noise on the logit scale (and, for a few pairs, by a lot); some phenotypes the
  graph does not annotate for a disease occur anyway; each site shifts them a little;
- a latent severity per patient raises many phenotype probabilities together, so
  features are correlated within a patient, which independent priors cannot express;
- drug → adverse-event links are true but rare, and the same HP terms also occur
  without any drug (background), so the graph's links are evidence, not labels;
- labs move out of range in the graph's direction only while a linked phenotype or
  adverse event is truly present, recorded or not;
- comorbidities, co-medications and sites' recording habits that the graph knows
  nothing about are added on top;
- a term only one sex can have (:mod:`shared.evaluation.sex_terms`, e.g. absent vas
  deferens, abnormal menstrual cycle) is never drawn for a patient of the other sex, as a
  phenotype or as an adverse event; for the right sex its probability is left as it is
  (an annotated frequency of such a term describes the patients who can have it).

Everything is drawn from one seed; site k's stream does not depend on how many sites
are simulated (``SeedSequence.spawn`` keys children by position).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from shared.atomic import atomic_dir
from shared.bundle import StudyBundle
from shared.ehr.cohort import Cohort
from shared.ehr.omop_tables import FORMATS, write_omop
from shared.evaluation.sex_terms import FEMALE_SPECIFIC, MALE_SPECIFIC

PHENOTYPE_TABLES = ("observation", "condition_occurrence")
MAX_PATIENTS = 999_999  # person id = site * 1_000_000 + i, i in [1, MAX_PATIENTS]


def _day(iso: str) -> int:
    return int(np.datetime64(iso, "D").astype(np.int64))


# Calendar: every event falls in 2010–2024. Index dates leave room for a year of
# prodrome before and the grid's 7 × 180 days of follow-up after.
FIRST_DAY, LAST_DAY = _day("2010-01-01"), _day("2024-12-31")
INDEX_FIRST, INDEX_LAST = _day("2011-01-01"), _day("2021-06-30")
FOLLOW_UP_DAYS = 1260


@dataclass(frozen=True)
class DiseaseProfile:
    """Demography of one disease: age at diagnosis (log-normal) and sex."""

    age_median: float  # years at diagnosis (males; females × female_age_factor)
    age_spread: float  # sd of log(age)
    male_share: float = 0.5
    male_severity: float = 0.0  # added to the latent severity of males (X-linked)
    female_age_factor: float = 1.0


# Published natural history of the demo diseases (GeneReviews / Orphanet summaries); this
# is the simulator's world, not graph knowledge. Other diseases get the default.
DISEASE_PROFILES: dict[str, DiseaseProfile] = {
    "ORPHA:355": DiseaseProfile(18.0, 0.8),  # Gaucher type 1: childhood to late adulthood
    # Fabry is X-linked: heterozygous women are affected too, but milder and later.
    "ORPHA:324": DiseaseProfile(26.0, 0.5, male_share=0.5, male_severity=0.8, female_age_factor=1.4),
    "ORPHA:365": DiseaseProfile(18.0, 1.0),  # Pompe: infantile and late-onset forms
    "ORPHA:586": DiseaseProfile(0.3, 1.2),  # cystic fibrosis: newborn screening, adult tail
    "ORPHA:558": DiseaseProfile(14.0, 0.7),  # Marfan: childhood to young adulthood
    "ORPHA:70": DiseaseProfile(1.2, 0.8),  # SMA: infancy and early childhood
    "ORPHA:905": DiseaseProfile(16.0, 0.45),  # Wilson: mostly 5–35 years
    "ORPHA:716": DiseaseProfile(0.03, 0.5),  # PKU: newborn screening, days to weeks
}
DEFAULT_PROFILE = DiseaseProfile(20.0, 0.9)

# Common comorbidities the graph does not model: (HP code, logit intercept, per-year slope,
# minimum age). Age-dependent, roughly adult population prevalences (hypertension ~45 % at
# 60, type 2 diabetes ~8 % at 60, obesity 7–17 %, depression ~8 % from adolescence,
# asthma ~8 %, reflux 6–12 %). Ids and names checked against the shipped hp.obo.
COMORBIDITIES: tuple[tuple[str, float, float, float], ...] = (
    ("HP:0000822", -5.0, 0.08, 0.0),  # Hypertension
    ("HP:0005978", -7.0, 0.075, 10.0),  # Type II diabetes mellitus
    ("HP:0001513", -2.6, 0.02, 2.0),  # Obesity
    ("HP:0000716", -2.45, 0.0, 12.0),  # Depression
    ("HP:0002099", -2.45, 0.0, 2.0),  # Asthma
    ("HP:0002020", -2.8, 0.015, 0.0),  # Gastroesophageal reflux
)
# Common co-medications (DrugBank ids, not study drugs): (code, the comorbidity that
# prompts it or None, probability with it, probability without it).
COMEDICATIONS: tuple[tuple[str, str | None, float, float], ...] = (
    ("DRUGBANK:DB00316", None, 0.15, 0.15),  # acetaminophen: pain and fever, anyone
    ("DRUGBANK:DB00338", "HP:0002020", 0.6, 0.03),  # omeprazole for reflux
    ("DRUGBANK:DB00331", "HP:0005978", 0.75, 0.0),  # metformin for type 2 diabetes
    ("DRUGBANK:DB01001", "HP:0002099", 0.8, 0.01),  # salbutamol for asthma
    ("DRUGBANK:DB00722", "HP:0000822", 0.45, 0.0),  # lisinopril for hypertension
)


@dataclass(frozen=True)
class SimulationKnowledge:
    """What the simulator knows: public facts extracted from a study bundle.

    Attributes
    ----------
    disease_ids, disease_names
        The study diseases (ORPHA codes), bundle order.
    phenotype_codes, adverse_event_codes
        The vocabulary's phenotype and adverse-event HP codes, vocabulary order.
    phenotype_frequency
        disease id → {phenotype code → annotated frequency in [0, 1]}; NaN where the
        phenotype is annotated (combined z > 0) without a frequency.
    excluded_phenotypes
        disease id → phenotype codes HPO annotates as NOT.
    indicated_drugs
        disease id → drug codes with combined z > 0.
    drug_adverse_events
        drug code → adverse-event HP codes (prior graph ``drug_effect``).
    lab_links
        HP code → ((lab code, direction), ...) from ``measured_by``; +1 the lab goes
        high, −1 low.
    lab_ranges
        lab code → (low, high, unit), the public reference range.
    vocabulary_codes
        Every code in the bundle's vocabulary.
    """

    disease_ids: tuple[str, ...]
    disease_names: tuple[str, ...]
    phenotype_codes: tuple[str, ...]
    adverse_event_codes: tuple[str, ...]
    phenotype_frequency: dict[str, dict[str, float]]
    excluded_phenotypes: dict[str, frozenset[str]]
    indicated_drugs: dict[str, tuple[str, ...]]
    drug_adverse_events: dict[str, tuple[str, ...]]
    lab_links: dict[str, tuple[tuple[str, int], ...]]
    lab_ranges: dict[str, tuple[float, float, str]]
    vocabulary_codes: frozenset[str]


def knowledge_from_bundle(bundle: StudyBundle) -> SimulationKnowledge:
    """Extract the simulator's public knowledge from a loaded study bundle.

    Parameters
    ----------
    bundle
        A verified :class:`~shared.bundle.StudyBundle`.

    Returns
    -------
    SimulationKnowledge

    Raises
    ------
    ValueError
        The bundle has no diseases or no phenotypes.
    """
    v = bundle.vocabulary
    codes, domains = v["code"].to_numpy(dtype=str), v["domain"].to_numpy(dtype=str)
    diseases = tuple(bundle.diseases["id"].astype(str))
    if not diseases:
        raise ValueError("bundle has no diseases: the simulator needs at least one study disease")
    ph = np.flatnonzero(domains == "phenotype")
    if ph.size == 0:
        raise ValueError("bundle vocabulary has no phenotypes: nothing to simulate")
    drugs = np.flatnonzero(domains == "drug")
    negative = bundle.negative.toarray() > 0
    freq: dict[str, dict[str, float]] = {}
    excluded: dict[str, frozenset[str]] = {}
    indicated: dict[str, tuple[str, ...]] = {}
    for i, d in enumerate(diseases):
        f, z = bundle.frequency[i], bundle.combined[i]
        annotated = ph[(np.isfinite(f[ph]) | (z[ph] > 0)) & ~negative[i, ph]]
        freq[d] = {str(codes[j]): float(f[j]) for j in annotated}
        excluded[d] = frozenset(str(c) for c in codes[ph[negative[i, ph]]])
        indicated[d] = tuple(str(c) for c in codes[drugs[z[drugs] > 0]])
    pg = bundle.prior_graph
    effects: dict[str, list[str]] = {}
    for s, t in pg.loc[pg["kind"] == "drug_effect", ["source", "target"]].itertuples(index=False):
        effects.setdefault(str(codes[s]), []).append(str(codes[t]))
    links: dict[str, list[tuple[str, int]]] = {}
    for s, t, w in pg.loc[pg["kind"] == "measured_by", ["source", "target", "weight"]].itertuples(index=False):
        links.setdefault(str(codes[s]), []).append((str(codes[t]), 1 if w >= 0 else -1))
    ranges = {str(r.code): (float(r.low), float(r.high), str(r.unit)) for r in bundle.labs.itertuples(index=False)}
    return SimulationKnowledge(
        disease_ids=diseases, disease_names=tuple(bundle.diseases["name"].astype(str)),
        phenotype_codes=tuple(str(c) for c in codes[ph]),
        adverse_event_codes=tuple(str(c) for c in codes[domains == "adverse_event"]),
        phenotype_frequency=freq, excluded_phenotypes=excluded, indicated_drugs=indicated,
        drug_adverse_events={k: tuple(dict.fromkeys(x)) for k, x in effects.items()},
        lab_links={k: tuple(dict.fromkeys(x)) for k, x in links.items() if any(lab in ranges for lab, _ in x)},
        lab_ranges=ranges, vocabulary_codes=frozenset(str(c) for c in codes),
    )


def _sex_specific(codes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """bool [len(codes)] each: (female-only, male-only) HPO terms of :mod:`shared.evaluation.sex_terms`."""
    a = np.asarray(codes, dtype=object)
    return np.isin(a, list(FEMALE_SPECIFIC)), np.isin(a, list(MALE_SPECIFIC))


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class SimulationTruth:
    """The hidden generating parameters shared by all sites (written to simulation.json).

    ``hp_codes`` (H) are the vocabulary's phenotype and adverse-event HP codes; the
    arrays are indexed [disease, H], [drug], [lab] as named. ``kind`` says where a
    disease–term probability came from: "annotated" (Orphanet/HPO frequency + hidden
    noise), "annotated_unknown_frequency", "hidden" (a real association the graph lacks),
    "background" (rare, unrelated to the disease) or "excluded" (HPO says NOT).
    """

    seed: int
    disease_ids: tuple[str, ...]
    profiles: tuple[DiseaseProfile, ...]
    hp_codes: tuple[str, ...]
    drug_codes: tuple[str, ...]
    lab_codes: tuple[str, ...]
    annotated_frequency: np.ndarray = field(compare=False, repr=False)  # [D, H], NaN = none/unknown
    logit: np.ndarray = field(compare=False, repr=False)  # [D, H] at severity 0
    severity_loading: np.ndarray = field(compare=False, repr=False)  # [D, H]
    kind: np.ndarray = field(compare=False, repr=False)  # [D, H] str: see _make_truth
    disease_weight: np.ndarray = field(compare=False, repr=False)  # [D] consortium-wide mix
    drug_preference: np.ndarray = field(compare=False, repr=False)  # [D, K], 0 = not indicated
    ae_ptr: np.ndarray = field(compare=False, repr=False)  # [K + 1] CSR over (drug, AE) pairs
    ae_hp: np.ndarray = field(compare=False, repr=False)  # [pairs] index into hp_codes
    ae_prob: np.ndarray = field(compare=False, repr=False)  # [pairs] per exposure
    lab_measure: np.ndarray = field(compare=False, repr=False)  # [D, L] per visit
    lab_low: np.ndarray = field(compare=False, repr=False)
    lab_high: np.ndarray = field(compare=False, repr=False)
    lab_units: tuple[str, ...] = ()
    lab_links: tuple[tuple[tuple[int, int], ...], ...] = ()  # per lab: ((hp index, direction), ...)

    def marginal_probability(self) -> np.ndarray:
        """float64 [D, H]: population probability, averaged over severity and sex.

        A sex-specific term counts only in its own sex (the other contributes 0).
        """
        x, w = np.polynomial.hermite_e.hermegauss(24)
        w = w / w.sum()
        out = np.zeros_like(self.logit)
        female_only, male_only = _sex_specific(self.hp_codes)
        for d, prof in enumerate(self.profiles):
            for share, shift, impossible in ((prof.male_share, prof.male_severity, female_only),
                                             (1 - prof.male_share, 0.0, male_only)):
                s = x + shift
                p = _sigmoid(self.logit[d][:, None] + self.severity_loading[d][:, None] * s[None, :])
                out[d] += share * np.where(impossible, 0.0, p @ w)
        return out

    def to_json(self) -> dict:
        """The hidden parameters as plain JSON (NaN written as null)."""
        marginal = self.marginal_probability()
        diseases = {}
        for d, did in enumerate(self.disease_ids):
            prof = self.profiles[d]
            diseases[did] = {
                "weight": float(self.disease_weight[d]),
                "age_at_diagnosis": {"median_years": prof.age_median, "log_sd": prof.age_spread,
                                     "female_age_factor": prof.female_age_factor},
                "male_share": prof.male_share, "male_severity": prof.male_severity,
                "phenotypes": {
                    code: {"kind": str(self.kind[d, h]),
                           "annotated_frequency": _num(self.annotated_frequency[d, h]),
                           "true_probability": round(float(marginal[d, h]), 5),
                           "logit": round(float(self.logit[d, h]), 4),
                           "severity_loading": round(float(self.severity_loading[d, h]), 4)}
                    for h, code in enumerate(self.hp_codes)
                },
                "drug_preference": {c: round(float(self.drug_preference[d, k]), 4)
                                    for k, c in enumerate(self.drug_codes) if self.drug_preference[d, k] > 0},
                "lab_measurement_probability": {c: round(float(self.lab_measure[d, j]), 4)
                                                for j, c in enumerate(self.lab_codes)},
            }
        adverse = {c: {self.hp_codes[h]: round(float(p), 4)
                       for h, p in zip(self.ae_hp[self.ae_ptr[k]:self.ae_ptr[k + 1]],
                                       self.ae_prob[self.ae_ptr[k]:self.ae_ptr[k + 1]])}
                   for k, c in enumerate(self.drug_codes)}
        return {"notes": "true_probability: population probability of the term for the disease, averaged "
                         "over latent severity and sex, before site shifts, recording completeness and "
                         "censoring at the end of follow-up; logit + severity_loading * severity gives a "
                         "patient's logit (plus the site's phenotype_logit_shift)",
                "diseases": diseases, "adverse_event_probability_per_exposure": adverse,
                "comorbidities": [{"code": c, "logit_intercept": a, "per_year": b, "min_age": m}
                                  for c, a, b, m in COMORBIDITIES],
                "comedications": [{"code": c, "prompted_by": by, "p_with": p1, "p_without": p0}
                                  for c, by, p1, p0 in COMEDICATIONS]}


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _make_truth(knowledge: SimulationKnowledge, seed: int, rng: np.random.Generator) -> SimulationTruth:
    """Draw the hidden world around the public knowledge."""
    dis = knowledge.disease_ids
    hp = tuple(dict.fromkeys(knowledge.phenotype_codes + knowledge.adverse_event_codes))
    col = {c: h for h, c in enumerate(hp)}
    n_d, n_h = len(dis), len(hp)
    is_pheno = np.isin(np.array(hp), np.array(knowledge.phenotype_codes))

    # Background: any vocabulary HP term occurs now and then in any patient (~1 %);
    # symptom-like adverse-event terms (nausea, headache) a bit more often (~2 %).
    logit = rng.normal(np.where(is_pheno, _logit(0.008), _logit(0.02)), 0.7, size=(n_d, n_h))
    loading = rng.uniform(0.0, 0.3, size=(n_d, n_h))
    kind = np.full((n_d, n_h), "background", dtype=object)
    annotated = np.full((n_d, n_h), np.nan)
    for d, did in enumerate(dis):
        freq = knowledge.phenotype_frequency.get(did, {})
        idx = np.array([col[c] for c in freq], dtype=np.int64)
        f = np.array(list(freq.values()), dtype=np.float64)
        known = np.isfinite(f)
        # Annotated frequencies are interval midpoints (e.g. 30–79 % → 0.545): hidden truth
        # spreads around them with logit noise of 0.7, and one pair in eight is off by a lot
        # (sd 1.8 more) — the literature's frequency class is sometimes simply wrong.
        off = rng.normal(0.0, 0.7, idx.size) + (rng.random(idx.size) < 0.125) * rng.normal(0.0, 1.8, idx.size)
        base = np.where(known, _logit(np.clip(np.nan_to_num(f, nan=0.5), 0.02, 0.98)), _logit(0.25))
        # Annotated without a frequency: unknown to the graph, drawn around 25 % (sd 1.0).
        off = np.where(known, off, rng.normal(0.0, 1.0, idx.size))
        logit[d, idx] = base + off
        annotated[d, idx] = f
        # The disease's own manifestations move together with the patient's severity.
        loading[d, idx] = rng.uniform(0.4, 1.1, idx.size)
        kind[d, idx] = np.where(known, "annotated", "annotated_unknown_frequency")
        # Hidden associations: 3 unannotated vocabulary phenotypes at 5–20 % (the graph is
        # incomplete; a model must learn these from data).
        free = np.flatnonzero(is_pheno & (kind[d] == "background"))
        hidden = rng.choice(free, size=min(3, free.size), replace=False)
        logit[d, hidden] = _logit(rng.uniform(0.05, 0.2, hidden.size))
        kind[d, hidden] = "hidden"
        neg = [col[c] for c in knowledge.excluded_phenotypes.get(did, ()) if c in col]
        logit[d, neg] = _logit(0.001)  # HPO says NOT: practically never
        kind[d, neg] = "excluded"

    drugs = tuple(dict.fromkeys(c for d in dis for c in knowledge.indicated_drugs.get(d, ())))
    dcol = {c: k for k, c in enumerate(drugs)}
    pref = np.zeros((n_d, len(drugs)))
    for d, did in enumerate(dis):
        ks = [dcol[c] for c in knowledge.indicated_drugs.get(did, ())]
        if ks:  # hidden prescribing preferences among a disease's drugs
            pref[d, ks] = rng.dirichlet(np.full(len(ks), 2.0))
    ptr, ae_hp = [0], []
    for c in drugs:
        ae_hp.extend(col[a] for a in knowledge.drug_adverse_events.get(c, ()) if a in col)
        ptr.append(len(ae_hp))
    # Per exposure, an adverse effect is recorded for ~3–20 % (median 7 %): "modest".
    ae_prob = _sigmoid(rng.normal(_logit(0.07), 0.7, len(ae_hp)))

    labs = tuple(c for c in knowledge.lab_ranges)
    lcol = {c: j for j, c in enumerate(labs)}
    lab_links: list[list[tuple[int, int]]] = [[] for _ in labs]
    for code, targets in knowledge.lab_links.items():
        for lab, direction in targets:
            if code in col and lab in lcol:
                lab_links[lcol[lab]].append((col[code], direction))
    # Labs ordered per visit: a hidden base rate per lab (15–55 %); labs that reflect a
    # disease's annotated phenotypes or its drugs' adverse effects are monitored (90 %).
    measure = np.tile(rng.uniform(0.15, 0.55, len(labs)), (n_d, 1))
    for d, did in enumerate(dis):
        watched = set(knowledge.phenotype_frequency.get(did, {}))
        for c in knowledge.indicated_drugs.get(did, ()):
            watched.update(knowledge.drug_adverse_events.get(c, ()))
        for j, links in enumerate(lab_links):
            if any(hp[h] in watched for h, _ in links):
                measure[d, j] = 0.9
    low = np.array([knowledge.lab_ranges[c][0] for c in labs], dtype=np.float64)
    high = np.array([knowledge.lab_ranges[c][1] for c in labs], dtype=np.float64)
    return SimulationTruth(
        seed=seed, disease_ids=dis, profiles=tuple(DISEASE_PROFILES.get(d, DEFAULT_PROFILE) for d in dis),
        hp_codes=hp, drug_codes=drugs, lab_codes=labs, annotated_frequency=_frozen(annotated),
        logit=_frozen(logit), severity_loading=_frozen(loading),
        kind=_frozen(kind.astype(str)), disease_weight=_frozen(rng.dirichlet(np.full(n_d, 4.0))),
        drug_preference=_frozen(pref), ae_ptr=_frozen(np.array(ptr, dtype=np.int64)),
        ae_hp=_frozen(np.array(ae_hp, dtype=np.int64)), ae_prob=_frozen(ae_prob),
        lab_measure=_frozen(measure), lab_low=_frozen(low), lab_high=_frozen(high),
        lab_units=tuple(knowledge.lab_ranges[c][2] for c in labs),
        lab_links=tuple(tuple(x) for x in lab_links),
    )


@dataclass(frozen=True)
class SiteProfile:
    """One hospital: its size, case mix and recording habits, and its hidden shifts.

    Attributes
    ----------
    site
        1-based site number; person ids are ``site * 1_000_000 + i``.
    n_patients
        Patients at the site.
    disease_mix
        Probability of each study disease (knowledge order); sums to 1.
    phenotype_completeness
        Probability that a present phenotype or adverse event is recorded (0.6–1.0).
    phenotype_table
        OMOP table the site puts phenotype HP codes in: "observation" or
        "condition_occurrence" (adverse events stay in observation).
    lab_visits_per_year
        Mean follow-up lab visits per year (Poisson).
    lab_completeness
        Site factor on the probability that a lab is ordered at a visit.
    diagnosis_recoding
        Probability that the diagnosis is coded again at a follow-up lab visit.
    seed
        The consortium seed.
    phenotype_shift
        float [H]: hidden logit shift per HP term (local population, referral pattern).
    lab_bias
        float [L]: hidden relative assay bias per lab.
    drug_formulary
        float [K]: hidden multiplicative prescribing preference per study drug.
    truth
        The shared hidden parameters.
    """

    site: int
    n_patients: int
    disease_mix: tuple[float, ...]
    phenotype_completeness: float
    phenotype_table: Literal["observation", "condition_occurrence"]
    lab_visits_per_year: float
    lab_completeness: float
    diagnosis_recoding: float
    seed: int
    phenotype_shift: np.ndarray = field(compare=False, repr=False)
    lab_bias: np.ndarray = field(compare=False, repr=False)
    drug_formulary: np.ndarray = field(compare=False, repr=False)
    truth: SimulationTruth = field(compare=False, repr=False)

    def to_json(self) -> dict:
        """Habits and hidden shifts as plain JSON."""
        t = self.truth
        return {
            "site": self.site, "n_patients": self.n_patients,
            "disease_mix": {d: round(p, 5) for d, p in zip(t.disease_ids, self.disease_mix)},
            "phenotype_completeness": round(self.phenotype_completeness, 5),
            "phenotype_table": self.phenotype_table,
            "lab_visits_per_year": round(self.lab_visits_per_year, 5),
            "lab_completeness": round(self.lab_completeness, 5),
            "diagnosis_recoding": round(self.diagnosis_recoding, 5),
            "phenotype_logit_shift": {c: round(float(x), 4) for c, x in zip(t.hp_codes, self.phenotype_shift)},
            "lab_bias": {c: round(float(x), 5) for c, x in zip(t.lab_codes, self.lab_bias)},
            "drug_formulary": {c: round(float(x), 4) for c, x in zip(t.drug_codes, self.drug_formulary)},
        }


def _site_profile(site: int, truth: SimulationTruth, rng: np.random.Generator, *,
                  min_patients: int, max_patients: int) -> SiteProfile:
    """Draw one site's size, case mix and habits."""
    # Log-uniform size: a consortium has a few large referral centres and many small sites.
    n = int(round(np.exp(rng.uniform(np.log(min_patients), np.log(max_patients + 0.5)))))
    n = min(max(n, min_patients), max_patients)
    # Case mix around the consortium mix (concentration 1.5 per disease); half the sites
    # are referral centres for one disease (weight × 3).
    alpha = 1.5 * len(truth.disease_ids) * truth.disease_weight
    mix = rng.dirichlet(alpha)
    if rng.random() < 0.5:
        mix[rng.integers(len(mix))] *= 3.0
    mix = mix / mix.sum()
    return SiteProfile(
        site=site, n_patients=n, disease_mix=tuple(float(x) for x in mix),
        phenotype_completeness=float(rng.uniform(0.6, 1.0)),
        phenotype_table=PHENOTYPE_TABLES[int(rng.random() < 0.35)],
        lab_visits_per_year=float(rng.uniform(1.0, 4.0)),
        lab_completeness=float(rng.uniform(0.6, 1.0)),
        diagnosis_recoding=float(rng.uniform(0.0, 0.6)),
        seed=truth.seed,
        # Small local shifts (sd 0.3 on the logit): same disease, slightly other patients.
        phenotype_shift=_frozen(rng.normal(0.0, 0.3, len(truth.hp_codes))),
        lab_bias=_frozen(rng.normal(0.0, 0.03, len(truth.lab_codes))),
        drug_formulary=_frozen(np.exp(rng.normal(0.0, 0.5, len(truth.drug_codes)))),
        truth=truth,
    )


_NEVER = np.iinfo(np.int64).max // 4  # "day" of something that does not happen


def _days_to_dates(days: np.ndarray) -> np.ndarray:
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


def _simulate_site(profile: SiteProfile, rng: np.random.Generator) -> Cohort:
    """All patients of one site."""
    t, n = profile.truth, profile.n_patients
    n_hp = len(t.hp_codes)
    pid = profile.site * 1_000_000 + np.arange(1, n + 1, dtype=np.int64)

    # --- demography: disease, sex, age at diagnosis, index date, follow-up -------------
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
    blocks = [_frame(pid, index, np.array(t.disease_ids, dtype=object)[disease], "diagnosis")]

    # --- phenotypes: hidden truth + site shift + severity, then recording ------------
    logit = t.logit[disease] + profile.phenotype_shift[None, :] + t.severity_loading[disease] * severity[:, None]
    present = rng.random((n, n_hp)) < _sigmoid(logit)
    onset = np.where(present, index[:, None] + _onset_offsets(rng, (n, n_hp)), _NEVER)
    recorded = present & (onset <= end[:, None]) & (rng.random((n, n_hp)) < profile.phenotype_completeness)
    rp, rh = np.nonzero(recorded)
    day = onset[rp, rh]
    # Chronic problems are coded again at later encounters (Poisson, mean 0.5 repeats).
    extra = rng.poisson(0.5, rp.size)
    ep, eh, e0 = np.repeat(rp, extra), np.repeat(rh, extra), np.repeat(day, extra)
    eday = e0 + 1 + (rng.random(ep.size) * (end[ep] - e0)).astype(np.int64)
    keep = eday <= end[ep]
    hp_codes = np.array(t.hp_codes, dtype=object)
    rp, rh, day = np.concatenate([rp, ep[keep]]), np.concatenate([rh, eh[keep]]), np.concatenate([day, eday[keep]])
    # A term only the other sex can have never occurs: it is dropped here, after every draw
    # that depends on how many terms there are, so all other random numbers (and events)
    # are exactly what they would be without the rule; it moves no lab either.
    female_only, male_only = _sex_specific(t.hp_codes)
    possible = ~np.where(male[:, None], female_only[None, :], male_only[None, :])  # [n, H]
    onset = np.where(possible, onset, _NEVER)
    ok = possible[rp, rh]
    blocks.append(_frame(pid[rp[ok]], day[ok], hp_codes[rh[ok]], "phenotype"))

    # --- study drugs: 0–2 indicated drugs, started 0–365 days after the index date ----
    drug_p, drug_k, drug_start = [], [], []
    for d in range(len(t.disease_ids)):
        rows = np.flatnonzero(disease == d)
        w = t.drug_preference[d] * profile.drug_formulary
        ks = np.flatnonzero(w > 0)
        if rows.size == 0 or ks.size == 0:
            continue
        s = severity[rows]
        # ~85 % are treated, ~30 % of those with a second drug; both more when severe.
        treated = rng.random(rows.size) < _sigmoid(_logit(0.85) + 0.5 * s)
        second = treated & (ks.size > 1) & (rng.random(rows.size) < _sigmoid(_logit(0.3) + 0.5 * s))
        # Weighted choice without replacement (Gumbel top-2) by preference × formulary.
        order = np.argsort(-(np.log(w[ks]) + rng.gumbel(size=(rows.size, ks.size))), axis=1)
        first_off = np.minimum(rng.exponential(60.0, rows.size), 365).astype(np.int64)
        second_off = first_off + (rng.random(rows.size) * (366 - first_off)).astype(np.int64)
        for j, (take, off) in enumerate(((treated, first_off), (second, second_off))):
            drug_p.append(rows[take])
            drug_k.append(ks[order[take, min(j, ks.size - 1)]])
            drug_start.append(index[rows[take]] + off[take])
    dp = np.concatenate(drug_p) if drug_p else np.zeros(0, np.int64)
    dk = np.concatenate(drug_k) if drug_k else np.zeros(0, np.int64)
    ds = np.concatenate(drug_start) if drug_start else np.zeros(0, np.int64)
    ok = ds <= end[dp]  # a drug that would start after follow-up ends is never seen
    dp, dk, ds = dp[ok], dk[ok], ds[ok]
    # Long-term therapies: 30 days + exponential (mean 700); ongoing ones end at follow-up.
    de = np.minimum(ds + 30 + rng.exponential(700.0, ds.size).astype(np.int64), end[dp])
    blocks.append(_frame(pid[dp], ds, np.array(t.drug_codes, dtype=object)[dk], "drug", end=de))

    # --- adverse events: each linked effect with its own modest probability, after start
    count = t.ae_ptr[dk + 1] - t.ae_ptr[dk]
    pair = np.repeat(np.arange(dk.size), count)
    pos = t.ae_ptr[dk][pair] + np.arange(pair.size) - np.repeat(np.cumsum(count) - count, count)
    hit = rng.random(pair.size) < t.ae_prob[pos]
    r, ah = pair[hit], t.ae_hp[pos[hit]]
    # Most reactions come early (infusion reactions, GI upset): 1 day + exponential
    # (mean 45 days), always during the exposure.
    a_on = ds[r] + 1 + np.minimum(rng.exponential(45.0, r.size), de[r] - ds[r]).astype(np.int64)
    ok = a_on <= end[dp[r]]
    r, ah, a_on = r[ok], ah[ok], a_on[ok]
    real = possible[dp[r], ah]  # nor as an adverse event (dropped after the draws, as above)
    ae_on = np.full((n, n_hp), _NEVER)
    ae_stop = np.full((n, n_hp), -_NEVER)
    np.minimum.at(ae_on, (dp[r[real]], ah[real]), a_on[real])
    np.maximum.at(ae_stop, (dp[r[real]], ah[real]), de[r[real]] + 60)  # resolves ~2 months after stopping
    rec = (rng.random(r.size) < profile.phenotype_completeness) & real
    # Truth label "adverse_event"; in the OMOP files they are HP codes in observation.
    blocks.append(_frame(pid[dp[r[rec]]], a_on[rec], hp_codes[ah[rec]], "adverse_event"))

    # --- lab visits: work-up at diagnosis, sometimes one before, Poisson follow-ups ---
    n_fu = rng.poisson(profile.lab_visits_per_year * (end - index) / 365.25)
    pre = np.flatnonzero(rng.random(n) < 0.4)
    fu_p = np.repeat(np.arange(n), n_fu)
    fu_day = index[fu_p] + 15 + (rng.random(fu_p.size) * (end[fu_p] - index[fu_p] - 14)).astype(np.int64)
    v_p = np.concatenate([np.arange(n), pre, fu_p])
    v_day = np.concatenate([index + rng.integers(0, 15, n), index[pre] - rng.integers(30, 366, pre.size), fu_day])
    # The diagnosis is coded again at some follow-up visits (always after the index date).
    again = rng.random(fu_p.size) < profile.diagnosis_recoding
    blocks.append(_frame(pid[fu_p[again]], fu_day[again],
                         np.array(t.disease_ids, dtype=object)[disease[fu_p[again]]], "diagnosis"))
    measured = rng.random((v_p.size, len(t.lab_codes))) < t.lab_measure[disease[v_p]] * profile.lab_completeness
    vi, lj = np.nonzero(measured)
    blocks.append(_labs(profile, rng, v_p[vi], v_day[vi], lj, pid=pid, male=male, age=age, index=index,
                        severity=severity, onset=onset, ae_on=ae_on, ae_stop=ae_stop))

    # --- what the graph does not know: comorbidities and co-medications --------------
    blocks.extend(_comorbid(profile, rng, pid=pid, age=age, index=index, end=end))

    persons = pd.DataFrame({"person_id": pid, "sex": np.where(male, "M", "F"), "year_of_birth": yob})
    return Cohort.from_frames(persons, pd.concat(blocks, ignore_index=True))


def _labs(profile: SiteProfile, rng: np.random.Generator, lp: np.ndarray, day: np.ndarray, lj: np.ndarray, *,
          pid: np.ndarray, male: np.ndarray, age: np.ndarray, index: np.ndarray, severity: np.ndarray,
          onset: np.ndarray, ae_on: np.ndarray, ae_stop: np.ndarray) -> pd.DataFrame:
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
    worse = (1 + 0.25 * np.maximum(severity[lp], 0)) * width
    up = high * np.exp((0.15 + rng.gamma(2.0, 0.3, m)) * worse)
    down = np.where(low > 0, low * np.exp(-(0.1 + rng.gamma(2.0, 0.25, m)) * worse), 0.3 * normal)
    value = np.where(direction > 0, up, np.where(direction < 0, down, normal))
    female, age_at = ~male[lp], age[lp] + (day - index[lp]) / 365.25
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
    return _frame(pid[lp], day, np.array(t.lab_codes, dtype=object)[lj], "lab", value=value, unit=units)


def _comorbid(profile: SiteProfile, rng: np.random.Generator, *, pid: np.ndarray, age: np.ndarray,
              index: np.ndarray, end: np.ndarray) -> list[pd.DataFrame]:
    """Common comorbidities (HP) and co-medications (DrugBank) outside the graph."""
    n = pid.size
    a, b, min_age = (np.array([c[i] for c in COMORBIDITIES]) for i in (1, 2, 3))
    mid_age = (age + (end - index) / 2 / 365.25)[:, None]
    has = rng.random((n, a.size)) < np.where(mid_age >= min_age, _sigmoid(a + b * mid_age), 0.0)
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


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def simulate_consortium(knowledge: SimulationKnowledge, *, sites: int, seed: int, min_patients: int = 30,
                        max_patients: int = 300) -> list[tuple[SiteProfile, Cohort]]:
    """Simulate a consortium of hospitals with patients of the study diseases.

    Parameters
    ----------
    knowledge
        Public knowledge from the bundle (:func:`knowledge_from_bundle`).
    sites
        Number of hospitals (≥ 1).
    seed
        Non-negative seed; the same seed gives the same consortium, and site k is the
        same whatever the number of sites.
    min_patients, max_patients
        Bounds on each site's patient count (log-uniform between them);
        1 ≤ min_patients ≤ max_patients ≤ 999,999.

    Returns
    -------
    list of (SiteProfile, Cohort)
        One per site, sites numbered from 1. Person ids are ``site * 1_000_000 + i``.
        Events carry their true domain: ``diagnosis`` (ORPHA), ``phenotype`` (HP, also
        comorbidities and drug-independent occurrences), ``adverse_event`` (HP caused by
        a study drug the patient takes), ``drug`` (DRUGBANK, study drugs and
        co-medications), ``lab`` (LOINC, value in the bundle's unit).

    Raises
    ------
    ValueError
        A count or seed out of range, or knowledge that is not a SimulationKnowledge.

    Assumptions
    -----------
    The bundle's default grid (7 windows of 180 days after the index date) bounds the
    follow-up; index dates fall in 2011-01-01 .. 2021-06-30 and all events in 2010–2024.
    """
    if not isinstance(knowledge, SimulationKnowledge):
        raise ValueError(f"knowledge must be a SimulationKnowledge (see knowledge_from_bundle), "
                         f"got {type(knowledge).__name__}")
    sites = _check_int("sites", sites, low=1)
    seed = _check_int("seed", seed, low=0)
    min_patients = _check_int("min_patients", min_patients, low=1, high=MAX_PATIENTS)
    max_patients = _check_int("max_patients", max_patients, low=min_patients, high=MAX_PATIENTS)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(sites + 1)]
    truth = _make_truth(knowledge, seed, streams[0])
    out = []
    for k in range(1, sites + 1):
        profile = _site_profile(k, truth, streams[k], min_patients=min_patients, max_patients=max_patients)
        out.append((profile, _simulate_site(profile, streams[k])))
    return out


def fresh_patients(profile: SiteProfile, n: int, *, seed: int) -> Cohort:
    """``n`` new patients of a simulated hospital: the same truth, habits and hidden shifts,
    fresh draws. A perfect generator of that site would be indistinguishable from them, so
    benchmarks use them as the ceiling of every metric.

    Raises
    ------
    ValueError
        ``n`` outside 1 … 999,999 or a negative seed.
    """
    n = _check_int("n", n, low=1, high=MAX_PATIENTS)
    seed = _check_int("seed", seed, low=0)
    return _simulate_site(replace(profile, n_patients=n), np.random.default_rng(seed))


def write_consortium(result: Sequence[tuple[SiteProfile, Cohort]], out: str | Path, *,
                     fmt_cycle: Sequence[str] = ("csv", "parquet"), overwrite: bool = False) -> None:
    """Write each site as an OMOP folder plus ``simulation.json``, all or nothing.

    Layout: ``out/site-1``, ``out/site-2``, … (the five OMOP tables; site k in format
    ``fmt_cycle[(k − 1) % len(fmt_cycle)]``, so CSV for odd and Parquet for even sites by
    default) and ``out/simulation.json`` (seed, per-site sizes and habits, and the hidden
    truth: per disease the true phenotype probabilities, drug preferences, adverse-event
    probabilities, lab ordering rates, and each site's shifts).

    Parameters
    ----------
    result
        The output of :func:`simulate_consortium`.
    out
        The folder to create. It appears whole or not at all.
    fmt_cycle
        Formats, cycled over sites; each "csv" or "parquet".
    overwrite
        Replace an existing ``out``.

    Raises
    ------
    ValueError
        Empty result, an unknown format, or sites from different simulations.
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    """
    fmts = tuple(fmt_cycle) if not isinstance(fmt_cycle, str) else (fmt_cycle,)
    if not fmts or any(f not in FORMATS for f in fmts):
        raise ValueError(f"fmt_cycle must be a non-empty sequence of {', '.join(FORMATS)}, got {fmt_cycle!r}")
    if not result:
        raise ValueError("result is empty: nothing to write (simulate_consortium with sites >= 1)")
    profiles = [p for p, _ in result]
    if len({p.site for p in profiles}) != len(profiles):
        raise ValueError("result has two cohorts for the same site number")
    truth = profiles[0].truth
    if any(p.truth is not truth for p in profiles):
        raise ValueError("result mixes sites from different simulations (their hidden truths differ)")
    sites = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for profile, cohort in result:
            fmt = fmts[(profile.site - 1) % len(fmts)]
            events = cohort.events
            if profile.phenotype_table == "condition_occurrence":
                # The writer routes by domain; phenotype rows routed as diagnoses land in
                # condition_occurrence (the domain itself is not written).
                events = events.assign(domain=events["domain"].replace({"phenotype": "diagnosis"}))
            write_omop(Cohort(persons=cohort.persons, events=events), tmp / f"site-{profile.site}", fmt=fmt)
            counts = cohort.events.loc[cohort.events["domain"] == "diagnosis"].drop_duplicates("person_id")
            sites.append({
                "folder": f"site-{profile.site}", "format": fmt, **profile.to_json(),
                "events": int(len(cohort.events)), "events_per_domain": cohort.domain_counts(),
                "patients_per_disease": {str(k): int(v) for k, v in counts["code"].value_counts().sort_index().items()},
            })
        doc = {"format": "raregraph-simulation", "version": 1, "seed": truth.seed,
               "tables": {"condition_occurrence": "ORPHA diagnoses (first = index date); HP phenotypes at sites "
                                                  "with phenotype_table = condition_occurrence",
                          "observation": "HP phenotypes, comorbidities and adverse events",
                          "drug_exposure": "DRUGBANK study drugs and co-medications",
                          "measurement": "LOINC labs, value_as_number in the bundle's unit"},
               "sites": sites, "truth": truth.to_json()}
        (tmp / "simulation.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")


__all__ = ["COMEDICATIONS", "COMORBIDITIES", "DISEASE_PROFILES", "DiseaseProfile", "SimulationKnowledge",
           "SimulationTruth", "SiteProfile", "knowledge_from_bundle", "simulate_consortium", "write_consortium"]
