"""The simulated consortium: deterministic, well-formed, realistic, and not the graph verbatim."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import shared.simulation.consortium as simulate
import shared.simulation.site as simulation_site
import shared.simulation.truth as simulation_truth
from shared.bundle import StudyBundle
from shared.simulation.consortium import (
    COMORBIDITIES,
    SimulationKnowledge,
    fresh_patients,
    knowledge_from_bundle,
    simulate_consortium,
    write_consortium,
)
from shared.errors import OutputExistsError
from shared.model.sex_terms import FEMALE_SPECIFIC, MALE_SPECIFIC

SEED = 11
TABLES = ("person", "observation_period", "condition_occurrence", "observation", "drug_exposure", "measurement")


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def knowledge(bundle) -> SimulationKnowledge:
    return knowledge_from_bundle(bundle)


@pytest.fixture(scope="module")
def consortium(knowledge):
    return simulate_consortium(knowledge, sites=8, seed=SEED)


@pytest.fixture(scope="module")
def pooled(consortium) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(persons, events) of all sites, with each person's disease and index date."""
    persons = pd.concat([c.persons for _, c in consortium], ignore_index=True)
    events = pd.concat([c.events for _, c in consortium], ignore_index=True)
    dx = events[events["domain"] == "diagnosis"].sort_values(["person_id", "date"]).drop_duplicates("person_id")
    persons = persons.merge(dx[["person_id", "code", "date"]].rename(columns={"code": "disease", "date": "index"}),
                            on="person_id", how="left")
    return persons, events


# --- knowledge ---------------------------------------------------------------------


def test_knowledge_is_what_the_bundle_says(bundle, knowledge) -> None:
    assert knowledge.disease_ids == tuple(bundle.diseases["id"])
    assert "DRUGBANK:DB00053" in knowledge.indicated_drugs["ORPHA:355"]  # imiglucerase for Gaucher
    assert "DRUGBANK:DB00053" not in knowledge.indicated_drugs["ORPHA:324"]
    assert "HP:0002315" in knowledge.drug_adverse_events["DRUGBANK:DB00053"]  # headache
    assert knowledge.lab_links["HP:0010837"] == (("LOINC:2064-4", -1),)  # low ceruloplasmin
    assert knowledge.lab_links["HP:0004923"] == (("LOINC:14875-9", 1),)  # hyperphenylalaninemia
    for row in bundle.labs.itertuples():
        assert knowledge.lab_ranges[row.code] == (row.low, row.high, row.unit)
    codes = bundle.vocabulary["code"].tolist()
    values = []
    for i, d in enumerate(knowledge.disease_ids):
        for code, f in knowledge.phenotype_frequency[d].items():
            j = codes.index(code)
            assert bundle.vocabulary["domain"][j] == "phenotype"
            if np.isfinite(f):
                assert f == pytest.approx(float(bundle.frequency[i, j]))
            else:
                assert bundle.combined[i, j] > 0
            values.append(f)
    assert np.isnan(values).any() and np.isfinite(values).sum() > 50


# --- arguments and determinism -----------------------------------------------------


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sites": 0}, "sites must be >= 1"),
    ({"sites": 2.5}, "sites must be an integer"),
    ({"sites": True}, "sites must be an integer"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"min_patients": 0}, "min_patients must be in"),
    ({"min_patients": 50, "max_patients": 40}, "max_patients must be in \\[50"),
    ({"max_patients": 1_000_000}, "max_patients must be in"),
])
def test_bad_arguments_are_rejected(knowledge, kwargs, match) -> None:
    args = {"sites": 2, "seed": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate_consortium(knowledge, **args)


def test_knowledge_must_be_simulation_knowledge(bundle) -> None:
    with pytest.raises(ValueError, match="knowledge_from_bundle"):
        simulate_consortium(bundle, sites=1, seed=1)


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (pa, ca), (pb, cb) in zip(a, b):
        assert pa == pb and pa.to_json() == pb.to_json()
        pd.testing.assert_frame_equal(ca.persons, cb.persons)
        pd.testing.assert_frame_equal(ca.events, cb.events)


def test_same_seed_same_consortium(knowledge, consortium) -> None:
    _assert_same(simulate_consortium(knowledge, sites=8, seed=SEED), consortium)


def test_site_k_does_not_depend_on_the_number_of_sites(knowledge, consortium) -> None:
    _assert_same(simulate_consortium(knowledge, sites=3, seed=SEED), consortium[:3])


def test_different_seeds_differ(knowledge, consortium) -> None:
    other = simulate_consortium(knowledge, sites=8, seed=SEED + 1)
    assert [p.n_patients for p, _ in other] != [p.n_patients for p, _ in consortium]
    assert not other[0][1].events.equals(consortium[0][1].events)


def test_site_sizes_and_habits_within_bounds(knowledge, consortium) -> None:
    assert [p.site for p, _ in consortium] == list(range(1, 9))
    for p, c in consortium:
        assert 30 <= p.n_patients <= 300 and c.n_persons == p.n_patients
        assert 0.6 <= p.phenotype_completeness <= 1.0
        assert p.phenotype_table in ("observation", "condition_occurrence")
        assert sum(p.disease_mix) == pytest.approx(1.0)
    assert len({p.n_patients for p, _ in consortium}) > 1  # sizes vary by site
    small = simulate_consortium(knowledge, sites=4, seed=3, min_patients=5, max_patients=7)
    assert all(5 <= c.n_persons <= 7 for _, c in small)


# --- well-formed records -----------------------------------------------------------


def test_person_ids_unique_and_every_event_has_its_person(consortium, pooled) -> None:
    persons, events = pooled
    assert persons["person_id"].is_unique
    for p, c in consortium:
        assert (c.persons["person_id"] // 1_000_000 == p.site).all()
        assert c.events["person_id"].isin(c.persons["person_id"]).all()
        assert set(c.persons["sex"]) <= {"F", "M"}
    assert events["date"].min() >= pd.Timestamp("2010-01-01")
    assert events[["date", "end_date"]].max().max() <= pd.Timestamp("2024-12-31")


def test_one_index_diagnosis_of_a_study_disease_and_drugs_after_it(knowledge, pooled) -> None:
    persons, events = pooled
    dx = events[events["domain"] == "diagnosis"]
    assert dx["code"].isin(knowledge.disease_ids).all()
    assert (dx.groupby("person_id")["code"].nunique() == 1).all()
    assert persons["disease"].notna().all()
    first = dx.merge(persons[["person_id", "index"]], on="person_id")
    assert ((first["date"] == first["index"]).groupby(first["person_id"]).sum() == 1).all()
    drugs = events[events["domain"] == "drug"].merge(persons, on="person_id")
    study = drugs[drugs["code"].isin(knowledge.vocabulary_codes)]
    assert len(study) > 100
    assert (study["date"] >= study["index"]).all()
    assert (study["date"] <= study["index"] + pd.Timedelta(days=365)).all()
    assert (drugs["end_date"] >= drugs["date"]).all()
    # a study drug is one indicated for the patient's disease
    assert all(c in knowledge.indicated_drugs[d] for c, d in zip(study["code"], study["disease"]))
    assert (study.groupby("person_id").size() <= 2).all()


def test_adverse_events_follow_their_drug(knowledge, pooled) -> None:
    _, events = pooled
    ae = events[events["domain"] == "adverse_event"].reset_index()
    assert len(ae) > 50
    drugs = events.loc[events["domain"] == "drug", ["person_id", "code", "date"]]
    pairs = ae.merge(drugs, on="person_id", suffixes=("", "_drug"))
    linked = [c in knowledge.drug_adverse_events.get(d, ()) for c, d in zip(pairs["code"], pairs["code_drug"])]
    ok = pairs[np.array(linked, dtype=bool) & (pairs["date_drug"] <= pairs["date"]).to_numpy()]
    assert set(ok["index"]) == set(ae["index"])  # each has a linked drug started before it
    assert ae["code"].str.startswith("HP:").all()


def test_labs_numeric_in_bundle_units_and_shifted_by_linked_terms(knowledge, pooled) -> None:
    _, events = pooled
    labs = events[events["domain"] == "lab"]
    assert np.isfinite(labs["value"]).all() and (labs["value"] >= 0).all()
    assert (labs["unit"] == labs["code"].map(lambda c: knowledge.lab_ranges[c][2])).all()
    assert set(labs["code"]) == set(knowledge.lab_ranges)
    shifts = []  # (term, lab, direction × (mean after − mean before)) per patient
    for term, links in knowledge.lab_links.items():
        # Within each patient who has the term: labs in the half year from the day it is
        # first recorded against those before (patients differ in disease and severity; a
        # patient does not differ from herself; an adverse event lasts about as long as
        # its drug, and an opposite term on the same lab may start later).
        first = events[events["code"] == term].groupby("person_id")["date"].min().rename("first")
        for lab, direction in links:
            low, high, _ = knowledge.lab_ranges[lab]
            rows = labs[labs["code"] == lab].merge(first, left_on="person_id", right_index=True)
            rows = rows[rows["date"] < rows["first"] + pd.Timedelta(days=180)]
            z = (rows["value"] - (low + high) / 2) / ((high - low) / 2)
            means = z.groupby([rows["person_id"], rows["date"] >= rows["first"]]).mean().unstack()
            if True in means and False in means:
                shift = (direction * (means[True] - means[False])).dropna()
                shifts.extend((term, lab, float(x)) for x in shift)
    shifts = pd.DataFrame(shifts, columns=["term", "lab", "shift"])
    assert len(shifts) >= 30 and shifts["term"].nunique() >= 5
    assert shifts["shift"].mean() > 0.5 and (shifts["shift"] > 0).mean() > 0.7
    per_link = shifts.groupby(["term", "lab"])["shift"].agg(["mean", "size"])
    assert (per_link.loc[per_link["size"] >= 5, "mean"] > 0).all(), per_link


def test_sex_effect_on_haemoglobin(pooled) -> None:
    persons, events = pooled
    hb = events[events["code"] == "LOINC:718-7"].merge(persons, on="person_id")
    adults = hb[(hb["index"].dt.year - hb["year_of_birth"]) >= 18]
    means = adults.groupby("sex")["value"].mean()
    assert means["M"] - means["F"] > 1.0


# --- realism against the graph ------------------------------------------------------


def _wrong_sex_events(consortium) -> pd.DataFrame:
    """Events with a term only the other sex can have (any domain), with the patient's sex."""
    rows = []
    for _, c in consortium:
        e = c.events.merge(c.persons[["person_id", "sex"]], on="person_id")
        rows.append(e[((e["sex"] == "M") & e["code"].isin(FEMALE_SPECIFIC))
                      | ((e["sex"] == "F") & e["code"].isin(MALE_SPECIFIC))])
    return pd.concat(rows, ignore_index=True)


def test_sex_specific_terms_only_in_their_own_sex(knowledge, consortium, monkeypatch) -> None:
    assert _wrong_sex_events(consortium).empty
    persons, events = (pd.concat([getattr(c, k) for _, c in consortium], ignore_index=True)
                       for k in ("persons", "events"))
    right = events.merge(persons, on="person_id")
    right = right[((right["sex"] == "M") & right["code"].isin(MALE_SPECIFIC))
                  | ((right["sex"] == "F") & right["code"].isin(FEMALE_SPECIFIC))]
    assert right["person_id"].nunique() >= 10  # the terms still occur where they can
    # Without the rule (every term possible for both sexes) the same seed puts them on the
    # other sex too, and the rule removes exactly those events and nothing else.
    for module in (simulation_site, simulation_truth):
        monkeypatch.setattr(module, "sex_specific_masks", lambda codes: (np.zeros(len(codes), bool),) * 2)
    unruled = simulate_consortium(knowledge, sites=8, seed=SEED)
    wrong = _wrong_sex_events(unruled)
    assert wrong["person_id"].nunique() >= 10
    for (_, fixed), (_, old) in zip(consortium, unruled):
        pd.testing.assert_frame_equal(fixed.persons, old.persons)
        sex = old.events["person_id"].map(old.persons.set_index("person_id")["sex"])
        code = old.events["code"]
        bad = ((sex == "M") & code.isin(FEMALE_SPECIFIC)) | ((sex == "F") & code.isin(MALE_SPECIFIC))
        pd.testing.assert_frame_equal(fixed.events, old.events[~bad].reset_index(drop=True))


def test_frequency_and_prevalence_correlate_but_not_perfectly(knowledge, pooled) -> None:
    persons, events = pooled
    n = persons["disease"].value_counts()
    hp = events.loc[events["code"].str.startswith("HP:"), ["person_id", "code"]].drop_duplicates()
    hp = hp.merge(persons[["person_id", "disease"]], on="person_id")
    counts = hp.groupby(["disease", "code"]).size()
    freq, prevalence = [], []
    for d, annotated in knowledge.phenotype_frequency.items():
        if n.get(d, 0) < 40:
            continue
        for code, f in annotated.items():
            if np.isfinite(f):
                freq.append(f)
                prevalence.append(counts.get((d, code), 0) / n[d])
    assert len(freq) >= 40
    rho = spearmanr(freq, prevalence).statistic
    assert 0.3 < rho < 0.98, rho


def test_unannotated_vocabulary_phenotypes_appear_at_low_rates(knowledge, pooled) -> None:
    persons, events = pooled
    hp = events.loc[events["domain"] == "phenotype", ["person_id", "code"]].drop_duplicates()
    hp = hp.merge(persons[["person_id", "disease"]], on="person_id")
    vocab = set(knowledge.phenotype_codes)
    outside = np.array([c not in knowledge.phenotype_frequency[d] for c, d in zip(hp["code"], hp["disease"])])
    unannotated = hp[hp["code"].isin(vocab).to_numpy() & outside]
    assert unannotated["code"].nunique() > 20
    share = unannotated.groupby(["disease", "code"]).size() / persons["disease"].value_counts()
    assert share.max() < 0.35


def test_disease_specific_ages_and_x_linked_severity(knowledge) -> None:
    large = simulate_consortium(knowledge, sites=8, seed=SEED, min_patients=300, max_patients=300)
    persons = pd.concat([c.persons for _, c in large], ignore_index=True)
    events = pd.concat([c.events for _, c in large], ignore_index=True)
    dx = events[events["domain"] == "diagnosis"].sort_values("date").drop_duplicates("person_id")
    persons = persons.merge(dx[["person_id", "code", "date"]], on="person_id")
    age = persons["date"].dt.year - persons["year_of_birth"]
    median = age.groupby(persons["code"]).median()
    assert median["ORPHA:716"] <= 1 and median["ORPHA:70"] <= 5 and median["ORPHA:586"] <= 5
    assert median["ORPHA:324"] >= 15 and median["ORPHA:355"] >= 10 and median["ORPHA:905"] >= 10
    fabry = persons[persons["code"] == "ORPHA:324"]
    assert len(fabry) >= 40
    annotated = set(knowledge.phenotype_frequency["ORPHA:324"])
    hp = events[events["person_id"].isin(fabry["person_id"]) & events["code"].isin(annotated)]
    burden = hp.drop_duplicates(["person_id", "code"]).groupby("person_id").size()
    burden = burden.reindex(fabry["person_id"], fill_value=0).groupby(fabry["sex"].to_numpy()).mean()
    assert burden["M"] > burden["F"]


def test_comorbidities_and_comedications_outside_the_vocabulary(knowledge, pooled) -> None:
    persons, events = pooled
    outside = events[~events["code"].isin(knowledge.vocabulary_codes) & (events["domain"] != "diagnosis")]
    assert outside.loc[outside["code"].str.startswith("HP:"), "code"].nunique() >= 4
    assert outside.loc[outside["code"].str.startswith("DRUGBANK:"), "code"].nunique() >= 3
    assert set(outside["code"].str.split(":").str[0]) <= {"HP", "DRUGBANK"}
    # age-dependent: hypertension is commoner in adults over 40 than in children
    ages = (persons["index"].dt.year - persons["year_of_birth"]).to_numpy()
    hyper = persons["person_id"].isin(events.loc[events["code"] == COMORBIDITIES[0][0], "person_id"]).to_numpy()
    assert hyper[ages >= 40].mean() > 3 * hyper[ages < 12].mean()


def test_truth_is_not_the_graph_verbatim(consortium, knowledge) -> None:
    truth = consortium[0][0].truth.to_json()
    gaps = []
    for d, annotated in knowledge.phenotype_frequency.items():
        for code, f in annotated.items():
            if np.isfinite(f):
                gaps.append(truth["diseases"][d]["phenotypes"][code]["true_probability"] - f)
    assert np.mean(np.abs(gaps)) > 0.05
    kinds = {v["kind"] for d in truth["diseases"].values() for v in d["phenotypes"].values()}
    assert {"annotated", "hidden", "background"} <= kinds


# --- writing -----------------------------------------------------------------------


def test_fresh_patients_come_from_the_same_hospital(consortium) -> None:
    profile, cohort = consortium[0]
    fresh = fresh_patients(profile, 2000, seed=7)
    assert fresh.persons.shape[0] == 2000
    assert fresh.persons["person_id"].min() // 1_000_000 == profile.site
    # the site's case mix and its recording habit (which table holds phenotypes) carry over
    first = fresh.events[fresh.events["domain"] == "diagnosis"].groupby("person_id")["code"].first()
    mix = first.value_counts(normalize=True)
    want = dict(zip(profile.truth.disease_ids, profile.disease_mix))
    assert max(abs(mix.get(d, 0.0) - p) for d, p in want.items()) < 0.05
    same = fresh_patients(profile, 2000, seed=7)
    pd.testing.assert_frame_equal(fresh.events, same.events)
    with pytest.raises(ValueError, match="n"):
        fresh_patients(profile, 0, seed=1)


def test_write_consortium_layout(consortium, tmp_path) -> None:
    out = tmp_path / "sim"
    write_consortium(consortium, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"site-{k}" for k in range(1, 9)] + ["simulation.json"])
    doc = json.loads((out / "simulation.json").read_text())
    assert doc["seed"] == SEED
    assert [s["n_patients"] for s in doc["sites"]] == [p.n_patients for p, _ in consortium]
    assert doc["truth"]["diseases"]["ORPHA:355"]["phenotypes"]
    tables_seen = set()
    for profile, cohort in consortium:
        fmt = "csv" if profile.site % 2 else "parquet"
        folder = out / f"site-{profile.site}"
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{t}.{fmt}" for t in TABLES)
        read = pd.read_csv if fmt == "csv" else pd.read_parquet
        person = read(folder / f"person.{fmt}")
        assert len(person) == profile.n_patients
        condition = read(folder / f"condition_occurrence.{fmt}")
        observation = read(folder / f"observation.{fmt}")
        hp_in_condition = condition["condition_source_value"].str.startswith("HP:").any()
        assert hp_in_condition == (profile.phenotype_table == "condition_occurrence")
        assert observation["observation_source_value"].str.startswith("HP:").all()
        n_obs_expected = (cohort.events["domain"] == "adverse_event").sum()
        if profile.phenotype_table == "observation":
            n_obs_expected += (cohort.events["domain"] == "phenotype").sum()
        assert len(observation) == n_obs_expected
        measurement = read(folder / f"measurement.{fmt}")
        assert pd.api.types.is_numeric_dtype(measurement["value_as_number"])
        tables_seen.add(profile.phenotype_table)
    assert tables_seen == {"observation", "condition_occurrence"}  # this seed has both habits


def test_write_consortium_leaves_nothing_on_failure(consortium, tmp_path, monkeypatch) -> None:
    calls = []

    def failing(cohort, out, *, fmt):
        calls.append(out)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(cohort, out, fmt=fmt)

    original = simulate.write_omop
    monkeypatch.setattr(simulate, "write_omop", failing)
    with pytest.raises(OSError, match="disk full"):
        write_consortium(consortium, tmp_path / "sim")
    assert list(tmp_path.iterdir()) == []


def test_write_consortium_bad_arguments(consortium, tmp_path) -> None:
    with pytest.raises(ValueError, match="fmt_cycle"):
        write_consortium(consortium, tmp_path / "a", fmt_cycle=("csv", "xlsx"))
    with pytest.raises(ValueError, match="empty"):
        write_consortium([], tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "c").mkdir()
    with pytest.raises(OutputExistsError):
        write_consortium(consortium[:1], tmp_path / "c")
    write_consortium(consortium[:1], tmp_path / "c", fmt_cycle=("parquet",), overwrite=True)
    assert (tmp_path / "c" / "site-1" / "person.parquet").is_file()
