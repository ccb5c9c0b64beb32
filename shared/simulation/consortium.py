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
- a term only one sex can have (:mod:`shared.model.sex_terms`, e.g. absent vas
  deferens, abnormal menstrual cycle) is never drawn for a patient of the other sex, as a
  phenotype or as an adverse event; for the right sex its probability is left as it is
  (an annotated frequency of such a term describes the patients who can have it).

Everything is drawn from one seed; site k's stream does not depend on how many sites
are simulated (``SeedSequence.spawn`` keys children by position).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

import sqlalchemy as sa

from shared.atomic import atomic_dir
from shared.ehr.cdm_connection import CdmDatabase
from shared.ehr.cdm_database import write_cdm_database
from shared.ehr.cdm_ddl import VOCABULARY_TABLES, create_cdm_schema
from shared.ehr.cdm_tables import cdm_tables
from shared.ehr.cohort import Cohort
from shared.ehr.omop_tables import FORMATS as FILE_FORMATS, write_omop
from shared.errors import OutputExistsError
from shared.simulation.profile import SiteProfile, draw_site_profile
from shared.simulation.site import simulate_site
from shared.simulation.truth import (
    COMEDICATIONS,
    COMORBIDITIES,
    DISEASE_PROFILES,
    MAX_PATIENTS,
    DiseaseProfile,
    SimulationKnowledge,
    SimulationTruth,
    knowledge_from_bundle,
    make_truth,
)

#: how a simulated site is written: an OMOP folder of CSV or Parquet tables, or a DuckDB CDM file
SITE_FORMATS = (*FILE_FORMATS, "duckdb")
SITE_SCHEMA = "cdm"  # the schema of a DuckDB site's tables, clinical and vocabulary (its node config's cdm-schema)


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_draw(sites: object, seed: object, min_patients: object, max_patients: object) -> tuple[int, int, int, int]:
    """(sites, seed, min_patients, max_patients) of a simulated consortium, checked: a clear
    ``ValueError`` naming the argument otherwise (both simulators draw with these)."""
    n_sites, seed_ = _check_int("sites", sites, low=1), _check_int("seed", seed, low=0)
    lo = _check_int("min_patients", min_patients, low=1, high=MAX_PATIENTS)
    return n_sites, seed_, lo, _check_int("max_patients", max_patients, low=lo, high=MAX_PATIENTS)


def check_fresh(n: object, seed: object) -> tuple[int, int]:
    """(n, seed) of fresh patients of one simulated site, checked as :func:`check_draw`."""
    return _check_int("n", n, low=1, high=MAX_PATIENTS), _check_int("seed", seed, low=0)


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
    sites, seed, min_patients, max_patients = check_draw(sites, seed, min_patients, max_patients)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(sites + 1)]
    truth = make_truth(knowledge, seed, streams[0])
    out = []
    for k in range(1, sites + 1):
        profile = draw_site_profile(k, truth, streams[k], min_patients=min_patients, max_patients=max_patients)
        out.append((profile, simulate_site(profile, streams[k])))
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
    n, seed = check_fresh(n, seed)
    return simulate_site(replace(profile, n_patients=n), np.random.default_rng(seed))


def site_path(folder: str | Path, name: str, fmt: str) -> Path:
    """Where site ``name`` goes in ``folder``: ``folder/name`` (an OMOP folder) or
    ``folder/name.duckdb`` (a DuckDB CDM file)."""
    return Path(folder) / (f"{name}.duckdb" if fmt == "duckdb" else name)


def site_data(path: str | Path) -> Path | CdmDatabase:
    """What a site reader reads from a written site: a ``.duckdb`` file as its CDM database
    (schema :data:`SITE_SCHEMA`, path absolute), anything else as the folder it is."""
    path = Path(path)
    if path.suffix == ".duckdb":
        return CdmDatabase(f"duckdb:///{path.resolve()}", schema=SITE_SCHEMA)
    return path


def load_site(cohort: Cohort, engine: sa.Engine, *, schema: str = SITE_SCHEMA) -> None:
    """Load one simulated site into a database as a standard site keeps its CDM: ``schema``
    made with the OMOP CDM v5.4 DDL, the clinical tables as a release writes them
    (:func:`shared.ehr.cdm_tables.cdm_tables`, loaded by
    :func:`shared.ehr.cdm_database.write_cdm_database` in one transaction) and the vocabulary
    tables, empty. Empty is enough: the simulated events carry their CURIE in
    ``*_source_value`` and concept id 0, which the reader resolves by source value.

    Raises
    ------
    ValueError
        An id beyond 32 bits, or a person without events (nothing is sent).
    InputError
        The database cannot be reached, ``schema`` already holds CDM tables, or it refused a
        row (the clinical tables are then rolled back).
    """
    write_cdm_database(cdm_tables(cohort), engine, schema=schema)
    with engine.begin() as conn:
        create_cdm_schema(conn, schema, tables=VOCABULARY_TABLES)


def write_site(cohort: Cohort, out: str | Path, *, fmt: str) -> Path:
    """Write one simulated site where :func:`site_path` says: an OMOP folder (``csv``,
    ``parquet``: :func:`shared.ehr.omop_tables.write_omop`) or a DuckDB CDM file (``duckdb``:
    :func:`load_site` into schema :data:`SITE_SCHEMA`). A node config reads the file with
    ``cdm-url = "duckdb:///<out>"`` and ``cdm-schema = "cdm"`` (:func:`site_data`).

    Raises
    ------
    ValueError
        Unknown format, an id beyond 32 bits, or a person without events.
    OutputExistsError
        ``out`` exists.
    """
    if fmt not in SITE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(SITE_FORMATS)}, got {fmt!r}")
    if fmt != "duckdb":
        return write_omop(cohort, out, fmt=fmt)
    out = Path(out)
    if out.exists():
        raise OutputExistsError(f"{out}: already exists")
    cdm_tables(cohort)  # refuses before the file is made
    out.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"duckdb:///{out}", poolclass=sa.pool.NullPool)
    try:
        load_site(cohort, engine)
    except BaseException:
        engine.dispose()
        for path in (out, out.with_name(out.name + ".wal")):  # a half-made file is no site
            path.unlink(missing_ok=True)
        raise
    engine.dispose()
    return out


def write_consortium(result: Sequence[tuple[SiteProfile, Cohort]], out: str | Path, *,
                     fmt_cycle: Sequence[str] = ("csv", "parquet"), overwrite: bool = False) -> None:
    """Write each site as an OMOP folder plus ``simulation.json``, all or nothing.

    Layout: ``out/site-1``, ``out/site-2``, … (the five OMOP tables; site k in format
    ``fmt_cycle[(k − 1) % len(fmt_cycle)]``, so CSV for odd and Parquet for even sites by
    default; a ``duckdb`` site is the file ``out/site-k.duckdb``: :func:`write_site`) and ``out/simulation.json`` (seed, per-site sizes and habits, and the hidden
    truth: per disease the true phenotype probabilities, drug preferences, adverse-event
    probabilities, lab ordering rates, and each site's shifts).

    Parameters
    ----------
    result
        The output of :func:`simulate_consortium`.
    out
        The folder to create. It appears whole or not at all.
    fmt_cycle
        Formats, cycled over sites; each "csv", "parquet" or "duckdb".
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
    if not fmts or any(f not in SITE_FORMATS for f in fmts):
        raise ValueError(f"fmt_cycle must be a non-empty sequence of {', '.join(SITE_FORMATS)}, got {fmt_cycle!r}")
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
            written = write_site(Cohort(persons=cohort.persons, events=events),
                                 site_path(tmp, f"site-{profile.site}", fmt), fmt=fmt)
            counts = cohort.events.loc[cohort.events["domain"] == "diagnosis"].drop_duplicates("person_id")
            sites.append({
                "folder": written.name, "format": fmt, **({"schema": SITE_SCHEMA} if fmt == "duckdb" else {}),
                **profile.to_json(),
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


__all__ = ["COMEDICATIONS", "COMORBIDITIES", "DISEASE_PROFILES", "SITE_FORMATS", "SITE_SCHEMA", "DiseaseProfile",
           "SimulationKnowledge", "SimulationTruth", "SiteProfile", "check_draw", "check_fresh", "fresh_patients", "knowledge_from_bundle",
           "load_site", "simulate_consortium", "site_data", "site_path", "write_consortium", "write_site"]
