"""The simulator's hidden world: what the bundle says publicly (:class:`SimulationKnowledge`)
and the truth drawn around it (:class:`SimulationTruth`). :mod:`shared.simulation.consortium` is the
entry point; see its docstring for what is hidden and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.bundle import StudyBundle
from shared.model.sex_terms import FEMALE_SPECIFIC, MALE_SPECIFIC

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


def sex_specific_masks(codes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """bool [len(codes)] each: (female-only, male-only) HPO terms of :mod:`shared.model.sex_terms`."""
    a = np.asarray(codes, dtype=object)
    return np.isin(a, list(FEMALE_SPECIFIC)), np.isin(a, list(MALE_SPECIFIC))


def frozen_array(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit_of(p: np.ndarray | float) -> np.ndarray:
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
    kind: np.ndarray = field(compare=False, repr=False)  # [D, H] str: see make_truth
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
        female_only, male_only = sex_specific_masks(self.hp_codes)
        for d, prof in enumerate(self.profiles):
            for share, shift, impossible in ((prof.male_share, prof.male_severity, female_only),
                                             (1 - prof.male_share, 0.0, male_only)):
                s = x + shift
                p = sigmoid(self.logit[d][:, None] + self.severity_loading[d][:, None] * s[None, :])
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


def make_truth(knowledge: SimulationKnowledge, seed: int, rng: np.random.Generator) -> SimulationTruth:
    """Draw the hidden world around the public knowledge."""
    dis = knowledge.disease_ids
    hp = tuple(dict.fromkeys(knowledge.phenotype_codes + knowledge.adverse_event_codes))
    col = {c: h for h, c in enumerate(hp)}
    n_d, n_h = len(dis), len(hp)
    is_pheno = np.isin(np.array(hp), np.array(knowledge.phenotype_codes))

    # Background: any vocabulary HP term occurs now and then in any patient (~1 %);
    # symptom-like adverse-event terms (nausea, headache) a bit more often (~2 %).
    logit = rng.normal(np.where(is_pheno, logit_of(0.008), logit_of(0.02)), 0.7, size=(n_d, n_h))
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
        base = np.where(known, logit_of(np.clip(np.nan_to_num(f, nan=0.5), 0.02, 0.98)), logit_of(0.25))
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
        logit[d, hidden] = logit_of(rng.uniform(0.05, 0.2, hidden.size))
        kind[d, hidden] = "hidden"
        neg = [col[c] for c in knowledge.excluded_phenotypes.get(did, ()) if c in col]
        logit[d, neg] = logit_of(0.001)  # HPO says NOT: practically never
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
    ae_prob = sigmoid(rng.normal(logit_of(0.07), 0.7, len(ae_hp)))

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
        hp_codes=hp, drug_codes=drugs, lab_codes=labs, annotated_frequency=frozen_array(annotated),
        logit=frozen_array(logit), severity_loading=frozen_array(loading),
        kind=frozen_array(kind.astype(str)), disease_weight=frozen_array(rng.dirichlet(np.full(n_d, 4.0))),
        drug_preference=frozen_array(pref), ae_ptr=frozen_array(np.array(ptr, dtype=np.int64)),
        ae_hp=frozen_array(np.array(ae_hp, dtype=np.int64)), ae_prob=frozen_array(ae_prob),
        lab_measure=frozen_array(measure), lab_low=frozen_array(low), lab_high=frozen_array(high),
        lab_units=tuple(knowledge.lab_ranges[c][2] for c in labs),
        lab_links=tuple(tuple(x) for x in lab_links),
    )
