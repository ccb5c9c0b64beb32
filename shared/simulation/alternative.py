"""A second simulated consortium, written to break the assumptions of the first
(:mod:`shared.simulation.consortium`), so that what is measured on it was not shaped by them
(issue 21). ``raregraph data simulate --simulator independent`` writes it.

What ours assumes, and what this one does instead:

- **frequencies**: ours moves the annotated HPO frequency on the logit scale (sd 0.7) and
  shifts each site a little (sd 0.3). Here the true probability is the annotation × a
  log-normal factor (sd 0.9); a quarter of the annotated pairs are "silent" (3 % of it: a
  feature the diagnosis implies is rarely coded); six unannotated vocabulary phenotypes per
  disease occur at 15–50 %, and everyday symptoms (pain, sleep, infections; HPO terms the
  vocabulary need not hold) at 5–45 %. Each site multiplies each term by its own habit
  (log-normal, sd 0.8) and never codes 10 % of the terms at all.
- **correlation**: ours has one latent severity per patient. Here each disease is a mixture
  of two hidden subtypes with their own term profiles, and comorbidities come from two latent
  factors (metabolic, affective) plus age: hypertension, type 2 diabetes, obesity and
  hyperlipidemia cluster, as do depression, anxiety and insomnia.
- **codes**: ours writes vocabulary CURIEs (HP, DRUGBANK, LOINC, ORPHA). Here sites code
  comorbidities as HP terms, ICD-10 codes (the code map maps ICD-10 only to study diseases) or
  SNOMED CT codes; phenotypes as HP or SNOMED CT (through the code map); diagnoses as ORPHA or
  ICD-10 (Pompe disease's E74.0 maps only ``broader``); drugs as DrugBank, RxNorm, ATC or free
  text (brand names and strengths for co-medications); routine labs (HbA1c, glucose,
  cholesterol, TSH, CRP) outside the study.
- **recording**: ours records a present phenotype once (plus a few repeats). Here records are
  made encounter by encounter: a present condition is coded at each visit with the site's
  probability (0.05–0.45 per condition and visit), so heavy coders duplicate codes over
  many dates and light coders miss conditions; drugs are one row per treatment episode or one
  per 30/90-day dispensing; half the sites report labs in SI units (µkat/L, µmol/L, g/L, …:
  what :mod:`shared.ehr.units` converts) and every site skips 10–40 % of the study's labs.
- **timing**: ours puts index dates in 2011–2021, a year of prodrome and 3.5 years of
  follow-up (the bundle's grid). Here a diagnostic odyssey (log-normal, median 2.5 years,
  heavy tail) precedes the diagnosis, phenotypes begin years before it or, Pareto-tailed,
  years after; follow-up is log-normal (median 5 years) up to the export date (2025-06-30);
  each site's records begin on its own EHR start (2003–2014), so patients diagnosed earlier
  arrive as prevalent cases.
- **who**: ours uses published ages per demo disease and a mild case mix. Here each disease
  has its own drawn age and sex ratio, each site is paediatric, adult or general, and its
  disease mix is skewed (Dirichlet 0.35).

Kept, because they are facts rather than assumptions: terms only one sex can have are never
drawn for the other sex, and HPO's NOT annotations are never drawn.

Everything comes from one seed; site k's stream does not depend on how many sites are simulated.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from shared.atomic import atomic_dir
from shared.bundle import StudyBundle
from shared.ehr.cohort import Cohort
from shared.ehr.omop_tables import write_omop
from shared.ehr.site import read_site
from shared.simulation.alt_patients import simulate_alternative_site
from shared.simulation.alt_world import AlternativeKnowledge, AlternativeSite, AlternativeWorld, \
    alternative_knowledge, draw_site, draw_world
from shared.simulation.consortium import SITE_FORMATS, SITE_SCHEMA, check_draw, check_fresh, site_path, write_site

#: the format name in ``simulation.json`` and the ``--simulator`` value
SIMULATOR = "independent"


def simulate_alternative(knowledge: AlternativeKnowledge, *, sites: int, seed: int, min_patients: int = 30,
                         max_patients: int = 300) -> list[tuple[AlternativeSite, Cohort]]:
    """Simulate a consortium under the alternative assumptions (see the module docstring).

    Parameters
    ----------
    knowledge
        Public knowledge from the bundle (:func:`~shared.simulation.alt_world.alternative_knowledge`).
    sites
        Number of hospitals (≥ 1).
    seed
        Non-negative seed; the same seed gives the same consortium, and site k is the same
        whatever the number of sites.
    min_patients, max_patients
        Bounds on each site's patient count (log-uniform between them); 1 ≤ min ≤ max ≤ 999,999.

    Returns
    -------
    list of (AlternativeSite, Cohort)
        One per site, numbered from 1; person ids ``site * 1_000_000 + i``. Events carry the
        codes the site writes (local codes included) and the domain of their OMOP table; read
        a site's view through the code map with :func:`read_as_site`.

    Raises
    ------
    ValueError
        A count or seed out of range, or knowledge that is not an AlternativeKnowledge.
    """
    if not isinstance(knowledge, AlternativeKnowledge):
        raise ValueError(f"knowledge must be an AlternativeKnowledge (see alternative_knowledge), "
                         f"got {type(knowledge).__name__}")
    sites, seed, min_patients, max_patients = check_draw(sites, seed, min_patients, max_patients)
    # A different spawn key from ours: the same seed gives unrelated streams in the two simulators.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed, spawn_key=(21,)).spawn(sites + 1)]
    world = draw_world(knowledge, seed, streams[0])
    out = []
    for k in range(1, sites + 1):
        site = draw_site(k, world, knowledge, streams[k], min_patients=min_patients, max_patients=max_patients)
        out.append((site, simulate_alternative_site(site, streams[k])))
    return out


def alternative_fresh_patients(site: AlternativeSite, n: int, *, seed: int) -> Cohort:
    """``n`` new patients of an alternative hospital: the same world and habits, fresh draws
    (the reference a perfect generator of that site would match).

    Raises
    ------
    ValueError
        ``n`` outside 1 … 999,999 or a negative seed.
    """
    n, seed = check_fresh(n, seed)
    return simulate_alternative_site(replace(site, n_patients=n), np.random.default_rng(seed))


def read_as_site(cohort: Cohort, bundle: StudyBundle) -> Cohort:
    """The cohort as a site reader sees it with the bundle: written as an OMOP folder and read
    back with :func:`shared.ehr.site.read_site` (local codes mapped through the code map where
    it can, lab units converted), ready for :func:`shared.trajectories.tensorize.tensorize`."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_omop(cohort, Path(tmp) / "site", fmt="parquet")
        read, _ = read_site(folder, bundle=bundle)
    return read


def write_alternative(result: Sequence[tuple[AlternativeSite, Cohort]], out: str | Path, *,
                      fmt_cycle: Sequence[str] = ("csv", "parquet"), overwrite: bool = False) -> None:
    """Write each site as :func:`shared.simulation.consortium.write_consortium` does (``out/site-k``
    OMOP folders or ``site-k.duckdb`` files, cycling ``fmt_cycle``) plus ``out/simulation.json``
    (``"simulator": "independent"``, per site its habits, and the hidden world), all or nothing.

    Raises
    ------
    ValueError
        Empty result, an unknown format, two cohorts for one site, or sites of different simulations.
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    """
    fmts = tuple(fmt_cycle) if not isinstance(fmt_cycle, str) else (fmt_cycle,)
    if not fmts or any(f not in SITE_FORMATS for f in fmts):
        raise ValueError(f"fmt_cycle must be a non-empty sequence of {', '.join(SITE_FORMATS)}, got {fmt_cycle!r}")
    if not result:
        raise ValueError("result is empty: nothing to write (simulate_alternative with sites >= 1)")
    if len({s.site for s, _ in result}) != len(result):
        raise ValueError("result has two cohorts for the same site number")
    world: AlternativeWorld = result[0][0].world
    if any(s.world is not world for s, _ in result):
        raise ValueError("result mixes sites from different simulations (their hidden worlds differ)")
    sites = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for site, cohort in result:
            fmt = fmts[(site.site - 1) % len(fmts)]
            written = write_site(cohort, site_path(tmp, f"site-{site.site}", fmt), fmt=fmt)
            sites.append({"folder": written.name, "format": fmt, **({"schema": SITE_SCHEMA} if fmt == "duckdb" else {}),
                          **site.to_json(), "patients": cohort.n_persons, "events": int(len(cohort.events)),
                          "events_per_domain": cohort.domain_counts()})
        doc = {"format": "raregraph-simulation", "simulator": SIMULATOR, "version": 1, "seed": world.seed,
               "tables": {"condition_occurrence": "diagnoses (ORPHA or ICD-10), ICD-10 comorbidities, and phenotypes "
                                                  "at sites with phenotype_table = condition_occurrence",
                          "observation": "phenotypes, symptoms, comorbidities and adverse events (HP or SNOMEDCT)",
                          "drug_exposure": "study drugs and co-medications (DRUGBANK, RXNORM, ATC or free text)",
                          "measurement": "LOINC labs in the site's units; routine labs outside the study"},
               "sites": sites, "truth": world.to_json()}
        (tmp / "simulation.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")


__all__ = ["SIMULATOR", "AlternativeKnowledge", "AlternativeSite", "alternative_fresh_patients",
           "alternative_knowledge", "read_as_site", "simulate_alternative", "write_alternative"]
