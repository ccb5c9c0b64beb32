"""One simulated hospital's habits and hidden shifts (:class:`SiteProfile`), drawn by
:func:`draw_site_profile`; :mod:`shared.simulation.site` draws its patients from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from shared.simulation.truth import PHENOTYPE_TABLES, SimulationTruth, frozen_array


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


def draw_site_profile(site: int, truth: SimulationTruth, rng: np.random.Generator, *,
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
        phenotype_shift=frozen_array(rng.normal(0.0, 0.3, len(truth.hp_codes))),
        lab_bias=frozen_array(rng.normal(0.0, 0.03, len(truth.lab_codes))),
        drug_formulary=frozen_array(np.exp(rng.normal(0.0, 0.5, len(truth.drug_codes)))),
        truth=truth,
    )
