"""The alternative simulator's hidden world (:class:`AlternativeWorld`, drawn once per seed) and
its hospitals (:class:`AlternativeSite`, one per site). :mod:`shared.simulation.alternative` is the
entry point; its docstring says which of our simulator's assumptions each part breaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from shared.bundle import StudyBundle
from shared.ehr.units import conversion_factor
from shared.simulation.alt_catalogue import COMORBIDITIES, SI_UNITS, SYMPTOMS
from shared.simulation.truth import SimulationKnowledge, frozen_array, knowledge_from_bundle

SiteKind = Literal["paediatric", "adult", "general"]
SITE_KINDS: tuple[SiteKind, ...] = ("paediatric", "adult", "general")
SUBTYPES = 2  # hidden subtypes per disease: the phenotype mixture that correlates features


@dataclass(frozen=True)
class AlternativeKnowledge:
    """Public facts from the bundle, plus the local codes its code map knows for graph codes.

    Attributes
    ----------
    facts
        :class:`~shared.simulation.truth.SimulationKnowledge` (diseases, frequencies, drugs, labs).
    local_codes
        graph code → {system → local code as a site writes it}: ``SNOMEDCT:…`` for HP terms,
        ``ATC:…`` / ``RXNORM:…`` / a free-text generic name for DrugBank drugs (the first exact
        row of each system).
    """

    facts: SimulationKnowledge
    local_codes: dict[str, dict[str, str]]


def alternative_knowledge(bundle: StudyBundle) -> AlternativeKnowledge:
    """What the alternative simulator reads from a verified study bundle.

    Raises
    ------
    ValueError
        The bundle has no diseases or no phenotypes.
    """
    local: dict[str, dict[str, str]] = {}
    cm = bundle.codemap
    if len(cm):
        exact = cm.loc[cm["relation"] == "exact"].sort_values(["target", "system", "code"], kind="stable")
        for system, code, target in exact[["system", "code", "target"]].itertuples(index=False):
            written = code if system == "NAME" else f"{system}:{code}"
            local.setdefault(str(target), {}).setdefault(str(system), written)
    return AlternativeKnowledge(facts=knowledge_from_bundle(bundle), local_codes=local)


@dataclass(frozen=True)
class AlternativeWorld:
    """Hidden parameters shared by every site (written to ``simulation.json``).

    ``terms`` (H) are the vocabulary's phenotype and adverse-event HP codes followed by the
    :data:`~shared.simulation.alt_catalogue.SYMPTOMS` not among them; ``labs`` are the bundle's.
    """

    seed: int
    disease_ids: tuple[str, ...]
    terms: tuple[str, ...]
    drugs: tuple[str, ...]  # study drugs indicated for some study disease
    labs: tuple[str, ...]
    lab_units: tuple[str, ...]
    lab_low: np.ndarray = field(compare=False, repr=False)  # [L]
    lab_high: np.ndarray = field(compare=False, repr=False)  # [L]
    annotated: np.ndarray = field(compare=False, repr=False)  # [D, H] annotated frequency, NaN none/unknown
    kind: np.ndarray = field(compare=False, repr=False)  # [D, H] str, see draw_world
    probability: np.ndarray = field(compare=False, repr=False)  # [D, S, H] per subtype
    subtype_share: np.ndarray = field(compare=False, repr=False)  # [D] share of subtype 1
    age_median: np.ndarray = field(compare=False, repr=False)  # [D] years at diagnosis
    male_share: np.ndarray = field(compare=False, repr=False)  # [D]
    drug_weight: np.ndarray = field(compare=False, repr=False)  # [D, K], 0 = not indicated
    ae_probability: dict[tuple[int, int], float] = field(compare=False, repr=False)  # (drug, term) per exposure
    lab_shift: np.ndarray = field(compare=False, repr=False)  # [D, L] in log half-widths
    lab_rate: np.ndarray = field(compare=False, repr=False)  # [D, L] per visit

    def to_json(self) -> dict:
        """The hidden parameters as plain JSON."""
        marginal = (self.probability[:, 0] * (1 - self.subtype_share[:, None])
                    + self.probability[:, 1] * self.subtype_share[:, None])
        return {"diseases": {d: {
            "age_median_years": round(float(self.age_median[i]), 3), "male_share": round(float(self.male_share[i]), 4),
            "subtype_share": round(float(self.subtype_share[i]), 4),
            "terms": {t: {"kind": str(self.kind[i, h]),
                          "annotated_frequency": None if not np.isfinite(self.annotated[i, h])
                          else float(self.annotated[i, h]),
                          "true_probability": round(float(marginal[i, h]), 5)}
                      for h, t in enumerate(self.terms) if self.kind[i, h] != "background"},
            "drug_weight": {c: round(float(w), 4) for c, w in zip(self.drugs, self.drug_weight[i]) if w > 0},
            "lab_shift": {c: round(float(x), 4) for c, x in zip(self.labs, self.lab_shift[i])},
            "lab_rate_per_visit": {c: round(float(x), 4) for c, x in zip(self.labs, self.lab_rate[i])},
        } for i, d in enumerate(self.disease_ids)},
            "adverse_event_probability": [{"drug": self.drugs[k], "term": self.terms[h], "per_exposure": round(p, 4)}
                                          for (k, h), p in sorted(self.ae_probability.items())],
            "comorbidities": [vars(c) for c in COMORBIDITIES]}


def draw_world(knowledge: AlternativeKnowledge, seed: int, rng: np.random.Generator) -> AlternativeWorld:
    """Draw the hidden world: how far truth departs from the annotations, and how.

    ``kind`` of a (disease, term): ``annotated`` (truth = annotated frequency × a log-normal
    factor, sd 0.9), ``annotated_unknown`` (annotated without a frequency: 2–60 %), ``silent``
    (annotated, but 3 % of it: clinicians never code a feature the diagnosis implies),
    ``unannotated`` (6 vocabulary phenotypes per disease at 15–50 % that the graph does not link
    to it), ``symptom`` (everyday symptoms at 5–45 %), ``excluded`` (HPO says NOT: never) or
    ``background`` (0.3 %; 3 % for a symptom-like adverse-event term). Each disease has two hidden subtypes that scale every term by their
    own log-normal factor (sd 0.7): features cluster by subtype, not along one severity axis.
    """
    f = knowledge.facts
    dis = f.disease_ids
    vocab_terms = tuple(dict.fromkeys(f.phenotype_codes + f.adverse_event_codes))
    terms = vocab_terms + tuple(s for s in SYMPTOMS if s not in vocab_terms)
    col = {t: h for h, t in enumerate(terms)}
    n_d, n_h = len(dis), len(terms)
    is_pheno = np.isin(np.array(terms), np.array(f.phenotype_codes))
    p = np.full((n_d, n_h), 0.003)
    kind = np.full((n_d, n_h), "background", dtype=object)
    annotated = np.full((n_d, n_h), np.nan)
    symptom_cols = np.array([col[s] for s in SYMPTOMS])
    for d, did in enumerate(dis):
        freq = f.phenotype_frequency.get(did, {})
        idx = np.array([col[c] for c in freq], dtype=np.int64)
        a = np.array(list(freq.values()), dtype=np.float64)
        known = np.isfinite(a)
        # Multiplicative on the probability itself (ours moves the logit): a 5 % feature can
        # become 15 %, a 90 % one is capped at 95 %.
        moved = np.clip(np.nan_to_num(a, nan=0.0) * np.exp(rng.normal(0.0, 0.9, idx.size)), 0.002, 0.95)
        p[d, idx] = np.where(known, moved, rng.uniform(0.02, 0.6, idx.size))
        kind[d, idx] = np.where(known, "annotated", "annotated_unknown")
        annotated[d, idx] = a
        silent = idx[rng.random(idx.size) < 0.25]
        p[d, silent] *= 0.03
        kind[d, silent] = "silent"
        free = np.flatnonzero(is_pheno & (kind[d] == "background"))
        extra = rng.choice(free, size=min(6, free.size), replace=False)
        p[d, extra] = rng.uniform(0.15, 0.5, extra.size)
        kind[d, extra] = "unannotated"
        p[d, symptom_cols] = rng.uniform(0.05, 0.45, symptom_cols.size)
        kind[d, symptom_cols] = "symptom"
        neg = [col[c] for c in f.excluded_phenotypes.get(did, ()) if c in col]
        p[d, neg] = 0.0
        kind[d, neg] = "excluded"
    # Symptom-like adverse-event terms (nausea, headache) occur without any drug, before one too.
    p[:, ~is_pheno & (kind == "background").all(axis=0)] = 0.03
    factor = np.exp(rng.normal(0.0, 0.7, (n_d, SUBTYPES, n_h)))
    probability = np.clip(p[:, None, :] * factor, 0.0, 0.97)

    drugs = tuple(dict.fromkeys(c for d in dis for c in f.indicated_drugs.get(d, ())))
    weight = np.zeros((n_d, len(drugs)))
    for d, did in enumerate(dis):
        ks = [drugs.index(c) for c in f.indicated_drugs.get(did, ())]
        if ks:  # skewed: one drug usually dominates a disease's prescriptions
            weight[d, ks] = rng.dirichlet(np.full(len(ks), 0.6))
    ae = {}
    for k, c in enumerate(drugs):
        for t in f.drug_adverse_events.get(c, ()):
            if t in col:
                ae[(k, col[t])] = float(rng.uniform(0.01, 0.3))

    labs = tuple(f.lab_ranges)
    shift = rng.normal(0.0, 0.5, (n_d, len(labs)))
    rate = rng.uniform(0.05, 0.5, (n_d, len(labs)))
    for d, did in enumerate(dis):
        for code in f.phenotype_frequency.get(did, {}):
            for lab, direction in f.lab_links.get(code, ()):
                if lab in labs:  # a disease-wide shift in the graph's direction (ours: only while the term is present)
                    j = labs.index(lab)
                    shift[d, j] += 0.8 * direction
                    rate[d, j] = max(rate[d, j], 0.6)
    return AlternativeWorld(
        seed=seed, disease_ids=dis, terms=terms, drugs=drugs, labs=labs,
        lab_units=tuple(f.lab_ranges[c][2] for c in labs),
        lab_low=frozen_array(np.array([f.lab_ranges[c][0] for c in labs], dtype=np.float64)),
        lab_high=frozen_array(np.array([f.lab_ranges[c][1] for c in labs], dtype=np.float64)),
        annotated=frozen_array(annotated), kind=frozen_array(kind.astype(str)), probability=frozen_array(probability),
        subtype_share=frozen_array(rng.uniform(0.2, 0.8, n_d)),
        # Ages at diagnosis of the world's own (not the published natural history ours uses).
        age_median=frozen_array(np.exp(rng.uniform(np.log(0.5), np.log(40.0), n_d))),
        male_share=frozen_array(rng.beta(5.0, 5.0, n_d)), drug_weight=frozen_array(weight), ae_probability=ae,
        lab_shift=frozen_array(np.clip(shift, -2.5, 2.5)), lab_rate=frozen_array(rate),
    )


@dataclass(frozen=True)
class AlternativeSite:
    """One hospital of the alternative simulator: size, case mix, calendar and recording habits.

    Attributes
    ----------
    site
        1-based site number; person ids are ``site * 1_000_000 + i``.
    n_patients
        Patients at the site.
    kind
        ``paediatric`` (diagnosed before 18), ``adult`` (from 16) or ``general``.
    disease_mix
        Probability of each study disease (world order), skewed (Dirichlet 0.35).
    ehr_start
        Day (since 1970-01-01) the site's electronic records begin; nothing earlier is recorded.
    visits_per_year
        Mean encounters per year after the diagnosis (a third of it before).
    codes_per_visit
        Probability that a present condition is coded at an encounter (0.05: few codes; 0.45: many).
    term_factor
        float [H]: the site's multiplicative habit per term (log-normal, sd 0.8; 10 % of the terms
        never coded here).
    phenotype_table, phenotype_system, comorbidity_system, diagnosis_system, orpha_share
        Where and how conditions are coded: phenotypes in ``observation`` or
        ``condition_occurrence``, as ``HP`` or ``SNOMEDCT`` codes; comorbidities as ``HP``,
        ``ICD10`` or ``SNOMEDCT``; the diagnosis as ``ORPHA`` or ``ICD`` (then ``orpha_share``
        of the patients also get the ORPHA code at confirmation).
    diagnosis_recoding
        Probability that the diagnosis is coded again at a later encounter.
    drug_system, drug_records
        Drugs as ``DRUGBANK``, ``RXNORM``, ``ATC`` or ``NAME`` (free text); one row per
        treatment ``episode`` or per 30–90-day ``dispensing``.
    lab_units
        ``bundle`` (the study's units) or ``SI``.
    lab_missing
        Labs the site never measures (codes).
    lab_factor
        Site factor on every lab's measuring rate.
    """

    site: int
    n_patients: int
    kind: SiteKind
    disease_mix: tuple[float, ...]
    ehr_start: int
    visits_per_year: float
    codes_per_visit: float
    phenotype_table: Literal["observation", "condition_occurrence"]
    phenotype_system: Literal["HP", "SNOMEDCT"]
    comorbidity_system: Literal["HP", "ICD10", "SNOMEDCT"]
    diagnosis_system: Literal["ORPHA", "ICD"]
    orpha_share: float
    diagnosis_recoding: float
    drug_system: Literal["DRUGBANK", "RXNORM", "ATC", "NAME"]
    drug_records: Literal["episode", "dispensing"]
    lab_units: Literal["bundle", "SI"]
    lab_missing: tuple[str, ...]
    lab_factor: float
    term_factor: np.ndarray = field(compare=False, repr=False)
    world: AlternativeWorld = field(compare=False, repr=False)
    knowledge: AlternativeKnowledge = field(compare=False, repr=False)

    def lab_unit(self, j: int) -> str:
        """The unit the site reports lab ``j`` in (SI where that converts to the bundle's unit)."""
        w = self.world
        unit = SI_UNITS.get(w.labs[j]) if self.lab_units == "SI" else None
        if unit is None or conversion_factor(w.labs[j], w.lab_units[j], unit) is None:
            return w.lab_units[j]
        return unit

    def to_json(self) -> dict:
        """Habits as plain JSON."""
        skip = {"term_factor", "world", "knowledge", "disease_mix"}
        out = {k: v for k, v in vars(self).items() if k not in skip}
        out["ehr_start"] = str(np.datetime64(self.ehr_start, "D"))
        out["disease_mix"] = {d: round(p, 5) for d, p in zip(self.world.disease_ids, self.disease_mix)}
        out["lab_missing"] = list(self.lab_missing)
        out["terms_never_coded"] = [t for t, x in zip(self.world.terms, self.term_factor) if x == 0]
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()}


def draw_site(site: int, world: AlternativeWorld, knowledge: AlternativeKnowledge, rng: np.random.Generator, *,
              min_patients: int, max_patients: int) -> AlternativeSite:
    """Draw one hospital's size, case mix, calendar and habits."""
    n = int(round(np.exp(rng.uniform(np.log(min_patients), np.log(max_patients + 0.5)))))
    kind = SITE_KINDS[int(rng.choice(3, p=[0.3, 0.3, 0.4]))]
    mix = rng.dirichlet(np.full(len(world.disease_ids), 0.35)) + 1e-3
    if kind != "general":  # a children's hospital sees the early-onset diseases, an adult one the others
        early = world.age_median < 10.0
        mix = mix * np.where(early == (kind == "paediatric"), 3.0, 0.3)
    factor = np.exp(rng.normal(0.0, 0.8, len(world.terms))) * (rng.random(len(world.terms)) >= 0.1)
    labs = np.array(world.labs, dtype=object)
    missing = labs[rng.random(labs.size) < rng.uniform(0.1, 0.4)]
    start = int(np.datetime64("2003-01-01", "D").astype(np.int64)) + int(rng.integers(0, 12 * 365))
    return AlternativeSite(
        site=site, n_patients=min(max(n, min_patients), max_patients), kind=kind,
        disease_mix=tuple(float(x) for x in mix / mix.sum()), ehr_start=start,
        visits_per_year=float(np.exp(rng.normal(np.log(4.0), 0.6))),
        codes_per_visit=float(rng.uniform(0.05, 0.45)),
        phenotype_table=("observation", "condition_occurrence")[int(rng.random() < 0.4)],
        phenotype_system=("HP", "SNOMEDCT")[int(rng.random() < 0.35)],
        comorbidity_system=("HP", "ICD10", "SNOMEDCT")[int(rng.choice(3, p=[0.3, 0.45, 0.25]))],
        diagnosis_system=("ORPHA", "ICD")[int(rng.random() < 0.5)], orpha_share=float(rng.uniform(0.4, 0.9)),
        diagnosis_recoding=float(rng.uniform(0.2, 0.9)),
        drug_system=("DRUGBANK", "RXNORM", "ATC", "NAME")[int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]))],
        drug_records=("episode", "dispensing")[int(rng.random() < 0.5)],
        lab_units=("bundle", "SI")[int(rng.random() < 0.5)], lab_missing=tuple(str(c) for c in missing),
        lab_factor=float(rng.uniform(0.5, 1.5)), term_factor=frozen_array(factor), world=world, knowledge=knowledge,
    )
