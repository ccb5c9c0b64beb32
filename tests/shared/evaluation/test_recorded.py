"""Fidelity over every recorded code (issue 21): counted by hand, against the representation
ceiling, against scikit-learn, and in the suite's report."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import r2_score

from shared.bundle import StudyBundle
from shared.ehr.cohort import SYNTHETIC_ID_BASE, Cohort
from shared.evaluation.recorded import recorded_fidelity
from shared.evaluation.suite import evaluate, write_report
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium
from shared.trajectories.representation import ROUND_TRIP_SEED, representation_ceiling
from shared.trajectories.tensorize import tensorize, to_cohort

#: codes no code map takes and no vocabulary holds: a comorbidity and a lab the site records
UNMAPPED = ("ICD10:Z99.1", "ICD10:Z99.2", "ICD10:E11.9", "LOINC:99999-9")


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def sites(bundle) -> tuple[Cohort, Cohort]:
    """Two simulated sites; the first also records codes outside the vocabulary, often."""
    (_, one), (_, two) = simulate_consortium(knowledge_from_bundle(bundle), sites=2, seed=3, min_patients=80,
                                             max_patients=80)
    rng = np.random.default_rng(0)
    first = one.events.groupby("person_id")["date"].min()
    rows = [(pid, day + pd.Timedelta(days=int(rng.integers(0, 300))), code)
            for pid, day in first.items() for k, code in enumerate(UNMAPPED) for _ in range(2)
            if rng.random() < 0.7 - 0.15 * k]
    extra = pd.DataFrame(rows, columns=["person_id", "date", "code"]).assign(value=1.0, unit="")
    events = pd.concat([one.events.drop(columns=["domain"]), extra], ignore_index=True)
    return Cohort.from_frames(one.persons, events), two


def _cohort(events: list[tuple[int, str]]) -> Cohort:
    e = pd.DataFrame(events, columns=["person_id", "code"]).assign(date=pd.Timestamp("2020-01-01"))
    e["date"] += pd.to_timedelta(np.arange(len(e)), unit="D")
    persons = pd.DataFrame({"person_id": sorted(set(e["person_id"]))}).assign(sex="F", year_of_birth=1980)
    return Cohort.from_frames(persons, e)


def test_two_patients_a_side_counted_by_hand() -> None:
    real = _cohort([(1, "ORPHA:1"), (1, "A"), (1, "B"), (2, "ORPHA:1"), (2, "A"), (2, "C"), (2, "C")])
    synth = _cohort([(7, "ORPHA:1"), (7, "A"), (8, "A"), (8, "B"), (8, "D")])
    r = recorded_fidelity(real, synth, exclude=["ORPHA:1"], top_codes=3)
    # codes A B C D: x = (1, ½, ½, 0), y = (1, ½, 0, ½); x̄ = ½, SST = ½, SSE = ½: R² = 0
    assert r.prevalence.r2_identity == pytest.approx(0.0, abs=1e-12) and r.prevalence.n_points == 4
    # dx = (½, 0, 0, −½), dy = (½, 0, −½, 0): r = ¼ / ½ = ½
    assert r.prevalence.corr == pytest.approx(0.5) and r.prevalence.r2_corr == pytest.approx(0.25)
    # top 3 by x: A, B, C; pairs AB AC BC: real (½, ½, 0), synthetic (½, 0, 0); x̄ = ⅓,
    # SST = 1/36 + 1/36 + 4/36 = 1/6, SSE = ¼: R² = 1 − 6/4 = −½; r = (1/12) / (1/6) = ½
    assert r.cooccurrence.r2_identity == pytest.approx(-0.5) and r.cooccurrence.corr == pytest.approx(0.5)
    assert (r.cooccurrence.n_points, r.cooccurrence_codes) == (3, 3)
    d = r.as_dict()
    assert (d["codes_per_patient_real"], d["codes_per_patient_synthetic"]) == (2.0, 2.0)
    assert d["codes_per_patient_relative_difference"] == 0.0
    # C is never generated: 2 of the 5 real occurrences (the diagnoses left out)
    assert (d["occurrences_real"], d["occurrences_real_never_generated"]) == (5, 2)
    assert d["share_real_occurrences_never_generated"] == pytest.approx(0.4)
    assert (d["codes"], d["codes_real"], d["codes_synthetic"], d["codes_real_never_generated"]) == (4, 3, 3, 1)
    # with two top codes one pair is left: no correlation to speak of
    assert np.isnan(recorded_fidelity(real, synth, exclude=["ORPHA:1"], top_codes=2).cooccurrence.corr)


def test_the_real_round_trip_scores_the_representation_ceiling(sites, bundle) -> None:
    real, _ = sites
    tensors, stats = tensorize(real, bundle)
    assert stats.events_outside_vocabulary > len(real.events) * 0.08  # the codes added above (448 of 5,368)
    ceiling = representation_ceiling(real, tensors, bundle).as_dict()
    back = to_cohort(tensors, bundle, seed=ROUND_TRIP_SEED)
    # the ceiling scores every code, study diagnoses too: nothing excluded here
    r = recorded_fidelity(real, back, real_patients=tensors.person_id, synthetic_patients=tensors.person_id)
    assert ceiling["prevalence"]["r2"] < 0.9
    assert round(r.prevalence.r2_identity, 4) == ceiling["prevalence"]["r2"]
    assert round(r.prevalence.r2_corr, 4) == ceiling["prevalence"]["r2_corr"]
    assert r.codes == ceiling["prevalence"]["codes"] and r.codes_real == ceiling["codes"]["recorded"]
    assert round(r.codes_per_patient_real, 4) == ceiling["codes_per_patient"]["recorded"]
    assert round(r.codes_per_patient_synthetic, 4) == ceiling["codes_per_patient"]["round_trip"]
    assert r.occurrences_real == ceiling["occurrences"]["recorded"]
    assert r.codes_synthetic == ceiling["codes"]["representable"]


def test_exact_copies_score_one(sites, bundle) -> None:
    real, _ = sites
    ids = real.persons["person_id"].to_numpy()
    renumber = dict(zip(ids, SYNTHETIC_ID_BASE + np.arange(ids.size)))
    copy = Cohort.from_frames(real.persons.assign(person_id=real.persons["person_id"].map(renumber)),
                              real.events.assign(person_id=real.events["person_id"].map(renumber)))
    d = recorded_fidelity(real, copy, exclude=bundle.diseases["id"]).as_dict()
    assert d["prevalence_r2_identity"] == 1.0 and d["cooccurrence_r2_identity"] == 1.0
    assert d["prevalence_corr"] == pytest.approx(1.0) and d["cooccurrence_pairs"] == 50 * 49 // 2
    assert d["codes_per_patient_relative_difference"] == 0.0 and d["share_real_occurrences_never_generated"] == 0.0
    recorded = set(real.events["code"])
    assert d["codes"] == d["codes_real"] == len(recorded - set(bundle.diseases["id"])) < len(recorded)


def test_prevalence_agrees_with_scikit_learn(sites, bundle) -> None:
    real, other = sites
    study = set(bundle.diseases["id"])
    r = recorded_fidelity(real, other, exclude=study)

    def shares(c: Cohort) -> pd.Series:
        e = c.events[~c.events["code"].isin(study)]
        return pd.crosstab(e["person_id"], e["code"]).gt(0).sum() / c.n_persons

    x, y = shares(real), shares(other)
    codes = x.index.union(y.index)
    x, y = x.reindex(codes, fill_value=0.0), y.reindex(codes, fill_value=0.0)
    assert r.prevalence.n_points == len(codes)
    assert abs(r.prevalence.r2_identity - r2_score(x, y)) < 1e-9
    assert abs(r.prevalence.r2_corr - pearsonr(x, y).statistic ** 2) < 1e-9
    assert 0 < r.prevalence.r2_identity < 1


def test_a_perfect_model_of_the_tensors_scores_below_its_vocabulary_only_figure(sites, bundle, tmp_path) -> None:
    real, other = sites
    t_real, t_other = tensorize(real, bundle)[0], tensorize(other, bundle)[0]
    # the synthetic sample is the real tensors themselves, arriving as tensors (as at a federated site)
    copy = dataclasses.replace(t_real, person_id=SYNTHETIC_ID_BASE + np.arange(t_real.n))
    m = evaluate(t_real, copy, holdout=t_other, bundle=bundle, real_cohort=real, holdout_cohort=other,
                 permutations=10)
    rec = m["recorded"]
    assert m["fidelity"]["prevalence_r2_identity"] == 1.0  # the vocabulary-only figure sees nothing lost
    assert rec["prevalence_r2_identity"] < 0.9 and rec["share_real_occurrences_never_generated"] > 0.05
    assert rec["prevalence_r2_identity"] == pytest.approx(rec["round_trip"]["prevalence_r2_identity"], abs=1e-12)
    assert rec["codes_real_never_generated"] >= len(UNMAPPED)
    assert rec["codes_per_patient_relative_difference"] < -0.1
    assert 0 < rec["holdout"]["prevalence_r2_identity"] < 1 and rec["holdout"]["patients_synthetic"] == t_other.n
    ceiling = representation_ceiling(real, t_real, bundle).as_dict()
    assert rec["representation_ceiling"] == {k: v for k, v in ceiling.items() if k != "top_lost_codes"}
    assert m["settings"]["recorded_top_codes"] == 50

    md = (write_report(m, tmp_path / "report", title="copy vs real") / "report.md").read_text()
    section = md[md.index("## Fidelity over every code the site records"):]
    assert f"These compare the records: all {rec['codes']} codes either side records" in section
    row = next(line for line in section.splitlines() if line.startswith("| Prevalence R² (around y = x)"))
    assert row.split(" | ")[1:5] == [f"{rec['prevalence_r2_identity']:.4g}",
                                     f"{rec['round_trip']['prevalence_r2_identity']:.4g}",
                                     f"{rec['holdout']['prevalence_r2_identity']:.4g}", "1"]
    share = ceiling["occurrences"]["share_representable"]
    assert f"{share:.1%} of {ceiling['occurrences']['recorded']:,} code occurrences representable" in section
    assert f"prevalence R² {ceiling['prevalence']['r2']:.4g}" in section


def test_bad_input_is_named(sites, bundle) -> None:
    real, other = sites
    t_real = tensorize(real, bundle)[0]
    with pytest.raises(ValueError, match="synthetic patient 5 is not in the synthetic cohort"):
        recorded_fidelity(real, other, synthetic_patients=np.array([5]))
    with pytest.raises(ValueError, match="top_codes must be an integer ≥ 2"):
        recorded_fidelity(real, other, top_codes=1)
    with pytest.raises(ValueError, match="no patients"):
        recorded_fidelity(real, other, real_patients=np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="needs the bundle"):
        evaluate(t_real, t_real, real_cohort=real, permutations=2)
    with pytest.raises(ValueError, match="give real_cohort too"):
        evaluate(t_real, t_real, synthetic_cohort=real, permutations=2, bundle=bundle)
