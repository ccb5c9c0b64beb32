"""The alternative simulator: valid OMOP that `data validate` accepts, reproducible, and measurably
unlike our simulator's assumptions (frequencies, comorbidities, local codes, recording, timing)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kg.assembly.pipeline import default_hpo_dir
from kg.sources.obo import parse_obo
from raregraph.cli import app
from shared.bundle import StudyBundle
from shared.simulation.alt_catalogue import COMEDICATIONS, COMORBIDITIES, SYMPTOMS
from shared.simulation.alternative import (
    AlternativeKnowledge,
    alternative_fresh_patients,
    alternative_knowledge,
    read_as_site,
    simulate_alternative,
    write_alternative,
)
from shared.simulation.consortium import knowledge_from_bundle

SEED = 5
runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def knowledge(bundle) -> AlternativeKnowledge:
    return alternative_knowledge(bundle)


@pytest.fixture(scope="module")
def consortium(knowledge):
    return simulate_alternative(knowledge, sites=4, seed=SEED, max_patients=150)


@pytest.fixture(scope="module")
def read(consortium, bundle) -> list[pd.DataFrame]:
    """Each site's events as its reader sees them with the bundle (code map, units)."""
    return [read_as_site(c, bundle).events for _, c in consortium]


def _first_study_diagnosis(events: pd.DataFrame, diseases: list[str]) -> pd.Series:
    dx = events[events["code"].isin(diseases)]
    return dx.groupby("person_id")["date"].min()


# --- the catalogue is real HPO ------------------------------------------------------


def test_catalogue_terms_and_snomed_codes_are_the_shipped_hpo():
    terms = parse_obo(default_hpo_dir() / "hp.obo").terms
    for m in COMORBIDITIES:
        term = terms[m.hp]
        assert not term.obsolete and m.name.split()[-1].lower() in term.name.lower()
        assert "SNOMEDCT_US:" + m.snomed.split(":")[1] in term.xrefs, m
    for code in SYMPTOMS:
        assert not terms[code].obsolete
    assert len({c.drugbank for c in COMEDICATIONS}) == len(COMEDICATIONS)


# --- reproducible -------------------------------------------------------------------


def test_same_seed_same_consortium_and_site_k_does_not_depend_on_the_site_count(knowledge, consortium):
    again = simulate_alternative(knowledge, sites=2, seed=SEED, max_patients=150)
    for (s1, c1), (s2, c2) in zip(consortium, again):
        assert s1 == s2
        pd.testing.assert_frame_equal(c1.events, c2.events)
        pd.testing.assert_frame_equal(c1.persons, c2.persons)
    other = simulate_alternative(knowledge, sites=1, seed=SEED + 1, max_patients=150)
    assert not other[0][1].events.equals(consortium[0][1].events)
    fresh = [alternative_fresh_patients(consortium[0][0], 20, seed=3) for _ in range(2)]
    pd.testing.assert_frame_equal(fresh[0].events, fresh[1].events)
    assert fresh[0].n_persons == 20


def test_bad_arguments_are_refused(bundle, knowledge):
    with pytest.raises(ValueError, match="AlternativeKnowledge"):
        simulate_alternative(knowledge_from_bundle(bundle), sites=1, seed=0)
    with pytest.raises(ValueError, match="sites must be >= 1"):
        simulate_alternative(knowledge, sites=0, seed=0)
    with pytest.raises(ValueError, match="result is empty"):
        write_alternative([], "unused")


# --- valid OMOP that the real commands accept -----------------------------------------


def test_cli_writes_sites_that_data_validate_accepts(demo_bundle, coordinator_key, tmp_path):
    pub = coordinator_key[1]
    out = tmp_path / "sites"
    result = runner.invoke(app, ["data", "simulate", "--sites", "2", "--out", str(out), "--seed", "2",
                                 "--bundle", str(demo_bundle), "--pub", str(pub), "--max-patients", "80",
                                 "--simulator", "independent", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "simulation.json").read_text())
    assert doc["simulator"] == "independent" and [s["folder"] for s in doc["sites"]] == ["site-1", "site-2"]
    assert (out / "site-1" / "person.csv").is_file() and (out / "site-2" / "person.parquet").is_file()
    for site in ("site-1", "site-2"):
        check = runner.invoke(app, ["data", "validate", str(out / site), "--bundle", str(demo_bundle),
                                    "--pub", str(pub), "--json"])
        assert check.exit_code == 0, check.output
        report = json.loads(check.output)
        assert report["verdict"]["status"] in ("ok", "below minimum")  # read and placed on the grid
        assert report["time_grid"] and report["study_cohort"]["patients"] > 0
        ceiling = report["representation"]
        # what the bundle cannot represent is substantial here (ours keeps ~95 %)
        assert ceiling["occurrences"]["share_representable"] < 0.8
        assert ceiling["occurrences"]["lost_by_reason"]["after_last_window"] > 0
    bad = runner.invoke(app, ["data", "simulate", "--sites", "1", "--out", str(tmp_path / "x"), "--bundle",
                              str(demo_bundle), "--pub", str(pub), "--simulator", "nope"])
    assert bad.exit_code == 1 and "--simulator must be one of graph, independent" in bad.output


# --- the assumptions it breaks are measurably present -----------------------------------


def test_a_substantial_share_of_occurrences_is_outside_the_vocabulary(read, bundle):
    known = set(bundle.vocabulary["code"]) | set(bundle.diseases["id"])
    outside = [float((~e["code"].isin(known)).mean()) for e in read]
    assert min(outside) > 0.1 and float(np.mean(outside)) > 0.15, outside
    codes = pd.concat(read)["code"]
    assert codes.str.startswith("ICD10").any()  # comorbidities in ICD-10: the code map leaves them
    assert codes.str.startswith("LOINC:4548-4").any()  # HbA1c: a routine lab outside the study


def test_events_fall_outside_the_default_time_grid_with_a_heavy_tail(read, bundle):
    time = bundle.study["time"]
    before = -time["windows-before"] * time["window-days"]
    after = (time["windows"] - time["windows-before"]) * time["window-days"]
    diseases = list(bundle.diseases["id"])
    offsets = []
    for e in read:
        index = _first_study_diagnosis(e, diseases)
        ev = e[e["person_id"].isin(index.index)]
        offsets.append(((ev["date"] - ev["person_id"].map(index)).dt.days).to_numpy())
    days = np.concatenate(offsets)
    assert np.mean(days < before) > 0.02 and np.mean(days >= after) > 0.15
    assert np.quantile(days, 0.99) > 8 * 365 and days.min() < -3 * 365  # years after, years before


def test_recorded_frequencies_depart_from_the_annotations_and_between_sites(consortium, read, bundle):
    world = consortium[0][0].world
    knowledge = alternative_knowledge(bundle).facts
    # Per site, for its two commonest diseases: share of patients with each annotated phenotype vs its frequency.
    gaps, silent, frequent_unannotated, by_site = [], 0, 0, []
    diseases = list(bundle.diseases["id"])
    for e in read:
        dx = e[e["code"].isin(diseases)].sort_values("date").drop_duplicates("person_id")
        seen = {}
        for d in dx["code"].value_counts().index[:2]:
            people = set(dx.loc[dx["code"] == d, "person_id"])
            if len(people) < 15:
                continue
            share = e[e["person_id"].isin(people)].drop_duplicates(["person_id", "code"])["code"].value_counts()
            share = share / len(people)
            for code, f in knowledge.phenotype_frequency[d].items():
                got = float(share.get(code, 0.0))
                seen[(d, code)] = got
                if np.isfinite(f):
                    gaps.append(abs(got - f))
                    silent += f >= 0.5 and got < 0.05
            annotated = set(knowledge.phenotype_frequency[d])
            frequent_unannotated += sum(share.get(c, 0.0) >= 0.15 for c in knowledge.phenotype_codes
                                        if c not in annotated)
        by_site.append(seen)
    assert np.mean(gaps) > 0.15 and silent >= 3 and frequent_unannotated >= 3, (np.mean(gaps), silent,
                                                                                 frequent_unannotated)
    shared = [(by_site[a][k], by_site[b][k]) for a in range(len(by_site)) for b in range(a + 1, len(by_site))
              for k in set(by_site[a]) & set(by_site[b])]
    if shared:  # the same disease at two sites: site habits move the same term apart
        assert np.mean([abs(x - y) for x, y in shared]) > 0.05
    assert (world.kind == "silent").sum() > 0 and (world.kind == "unannotated").sum() >= 6


def test_comorbidities_cluster_and_rise_with_age(consortium):
    site = consortium[0][0]
    cohort = alternative_fresh_patients(site, 800, seed=1)
    name = {code: m.name for m in COMORBIDITIES for code in (m.hp, m.icd10, m.snomed)}
    e = cohort.events[cohort.events["code"].isin(list(name))]
    has = pd.crosstab(e["person_id"], e["code"].map(name)).reindex(cohort.persons["person_id"], fill_value=0) > 0
    phi = has.astype(float).corr()
    assert phi.loc["hypertension", "type 2 diabetes"] > 0.1 and phi.loc["depression", "anxiety"] > 0.1
    assert abs(phi.loc["hypertension", "anxiety"]) < phi.loc["depression", "anxiety"]
    born = cohort.persons.set_index("person_id")["year_of_birth"]
    old = born < born.median()
    assert has.loc[old.to_numpy(), "hypertension"].mean() > has.loc[~old.to_numpy(), "hypertension"].mean()


def test_recording_habits_differ_by_site(consortium, bundle):
    rows_per_visit, duplicated = [], []
    for site, c in consortium:
        e = c.events
        conditions = e[e["domain"].isin(["phenotype", "diagnosis"])]
        rows_per_visit.append(len(conditions) / max(1, len(e[["person_id", "date"]].drop_duplicates())))
        dates = conditions.groupby(["person_id", "code"])["date"].nunique()
        duplicated.append(float((dates >= 2).mean()))
        assert not e["code"].isin(site.lab_missing).any()  # labs the site does not measure never appear
        units = e.loc[e["code"] == "LOINC:2160-0", "unit"].unique().tolist()
        assert units in ([], ["umol/L"] if site.lab_units == "SI" else ["mg/dL"])
        drugs = e[e["domain"] == "drug"]
        length = (drugs["end_date"] - drugs["date"]).dt.days
        if site.drug_records == "dispensing" and len(drugs):
            assert length.max() <= 89
    assert max(rows_per_visit) / min(rows_per_visit) > 1.5 and max(duplicated) > 0.3, (rows_per_visit, duplicated)
    lengths = pd.concat([(c.events["end_date"] - c.events["date"]).dt.days[c.events["domain"] == "drug"]
                         for s, c in consortium if s.drug_records == "episode"])
    if len(lengths):
        assert lengths.min() < 60 and lengths.max() > 2 * 365
