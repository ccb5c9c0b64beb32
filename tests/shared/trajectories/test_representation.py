"""The representation ceiling (issue 21): real records → tensors → OMOP, counted by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shared.bundle import StudyBundle
from shared.ehr.cohort import Cohort
from shared.ehr.omop_tables import write_omop
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium
from shared.trajectories.representation import REASONS, representation_ceiling
from shared.trajectories.site_validation import validate_site, write_report
from shared.trajectories.tensorize import TensorLayout, tensorize, to_cohort

UNMAPPED = "ICD10:Z99.9"  # a well-formed ICD-10 code no code map takes: it stays as written


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def layout(bundle) -> TensorLayout:
    return TensorLayout.from_bundle(bundle)


@pytest.fixture(scope="module")
def base(bundle) -> Cohort:
    """A simulated site written back from its tensors: every occurrence representable, none merged."""
    (_, site), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=3, min_patients=80, max_patients=80)
    return to_cohort(tensorize(site, bundle)[0], bundle, seed=0)


def _codes_of(layout: TensorLayout, domain: str) -> list[str]:
    return [c for c, d in zip(layout.binary_codes, layout.binary_domains) if d == domain]


def _cohort(events: list[tuple], persons: list[tuple]) -> Cohort:
    e = pd.DataFrame(events, columns=["person_id", "date", "code", "value", "unit"])
    e["date"] = pd.to_datetime(e["date"])
    return Cohort.from_frames(pd.DataFrame(persons, columns=["person_id", "sex", "year_of_birth"]), e)


def test_two_patients_counted_by_hand(bundle, layout) -> None:
    p1, p2 = _codes_of(layout, "phenotype")[:2]
    lab, unit = layout.lab_codes[0], layout.lab_units[0]
    nan = np.nan
    c = _cohort([(1, "2020-01-01", "ORPHA:558", nan, ""), (1, "2020-02-01", p1, nan, ""),
                 (1, "2020-03-01", UNMAPPED, nan, ""), (1, "2020-03-02", lab, 5.0, "furlongs"),
                 (2, "2020-01-01", "ORPHA:558", nan, ""), (2, "2020-02-01", p1, nan, ""),
                 (2, "2019-01-01", p2, nan, ""),  # 365 days before the index: before window 0 (180 days)
                 (2, "2020-02-02", lab, 5.0, unit), (2, "2020-02-03", lab, 6.0, unit),  # one window: merged
                 (3, "2020-01-01", "HP:0001166", nan, "")],  # no study diagnosis: outside the study
                [(1, "F", 1980), (2, "M", 1990), (3, "F", 1970)])
    tensors, _ = tensorize(c, bundle)
    r = representation_ceiling(c, tensors, bundle).as_dict()
    o = r["occurrences"]
    assert r["patients"] == 2 and r["outside_study"] == {"persons": 1, "occurrences": 1}
    assert (o["recorded"], o["representable"], o["lost"]) == (9, 6, 3)
    assert o["lost_by_reason"] == {**dict.fromkeys(REASONS, 0), "outside_vocabulary": 1, "lab_unit": 1,
                                   "before_first_window": 1}
    assert o["share_representable"] == round(6 / 9, 4) and o["share_lost_by_reason"]["lab_unit"] == round(1 / 9, 4)
    assert (o["merged_within_window"], o["after_round_trip"]) == (1, 5)  # 2 diagnoses, 2 × p1, 1 lab
    assert r["codes"] == {"recorded": 5, "in_vocabulary": 4, "representable": 3}
    assert r["codes_per_patient"] == {"recorded": 4.0, "round_trip": 2.5}  # (4 + 4) / 2 and (2 + 3) / 2
    # prevalence x: ORPHA:558 1, p1 1, lab 1, UNMAPPED ½, p2 ½; round trip y: 1, 1, ½, 0, 0
    # x̄ = 0.8, SST = 3·0.04 + 2·0.09 = 0.30, SSE = ¼ + ¼ + ¼ = 0.75: R² = 1 − 0.75 / 0.30 = −1.5
    assert r["prevalence"]["r2"] == pytest.approx(-1.5) and r["prevalence"]["codes"] == 5
    # deviations dx = (.2, .2, .2, −.3, −.3), dy = (.5, .5, 0, −.5, −.5): r² = .5² / (.30 · 1.0) = 5/6
    assert r["prevalence"]["r2_corr"] == pytest.approx(5 / 6, abs=1e-4)
    assert [(t["code"], t["lost"], t["recorded"]) for t in r["top_lost_codes"]] == sorted(
        [(UNMAPPED, 1, 1), (lab, 1, 3), (p2, 1, 1)], key=lambda t: t[0])


def test_an_hp_term_the_vocabulary_holds_as_an_adverse_event_needs_its_drug_before_it(bundle, layout) -> None:
    drug, ae = next((d, a) for d, a in sorted(layout.drug_effects) if a not in _codes_of(layout, "phenotype"))
    nan = np.nan
    c = _cohort([(1, "2020-01-01", "ORPHA:558", nan, ""), (1, "2020-02-01", ae, nan, ""),  # before the drug
                 (1, "2020-03-01", drug, nan, ""), (1, "2020-04-01", ae, nan, "")],  # after it: an adverse event
                [(1, "F", 1980)])
    tensors, stats = tensorize(c, bundle)
    o = representation_ceiling(c, tensors, layout).as_dict()["occurrences"]
    assert o["lost_by_reason"]["adverse_event_without_drug"] == 1 and o["representable"] == 3
    assert stats.events_outside_vocabulary == 1 and stats.events_used == 2  # tensorize agrees


def _extras(base: Cohort, layout: TensorLayout, bundle: StudyBundle) -> tuple[pd.DataFrame, dict]:
    """Deliberately lost and merged occurrences for the first patient, and what they add."""
    tensors, _ = tensorize(base, bundle)
    i = int(np.argmin(tensors.index_date))  # the earliest index: its last window is long past
    pid, index = int(tensors.person_id[i]), pd.Timestamp(tensors.index_date[i])
    condition = layout.diseases[tensors.disease[i]]
    mine = base.events[base.events["person_id"] == pid]
    adverse = set(_codes_of(layout, "adverse_event"))
    fresh = [c for c in _codes_of(layout, "phenotype") if c not in set(mine["code"]) and c not in adverse]
    x, z = fresh[0], fresh[1]
    taken = set(mine.loc[mine["domain"] == "drug", "code"])
    y = next(a for a in _codes_of(layout, "adverse_event") if a.startswith("HP:")
             and a not in _codes_of(layout, "phenotype") and not any((d, a) in layout.drug_effects for d in taken))
    other = next(d for d in layout.diseases if d != condition)
    day = lambda n: index + pd.Timedelta(days=n)  # noqa: E731
    days, before, t_len = layout.window_days, layout.windows_before, layout.windows
    rows = [(UNMAPPED, day(30), np.nan, ""), (UNMAPPED, day(31), np.nan, ""),  # outside_vocabulary 2
            (x, day(-before * days - 1), np.nan, ""),  # before_first_window 1
            (x, day((t_len - before) * days), np.nan, ""),  # after_last_window 1
            (layout.lab_codes[0], day(40), 1.0, "furlongs"),  # lab_unit 1
            (y, day(50), np.nan, ""),  # adverse_event_without_drug 1
            (other, day(60), np.nan, ""),  # other_study_disease 1
            (condition, day(70), np.nan, ""),  # the condition again: representable, merged
            (z, day(10), np.nan, ""), (z, day(20), np.nan, "")]  # one window: 2 representable, 1 merged
    extra = pd.DataFrame(rows, columns=["code", "date", "value", "unit"]).assign(person_id=pid)
    added = {"codes": {UNMAPPED, x, layout.lab_codes[0], y, other, condition, z}, "representable_codes": {z}, "x": x,
             "person": pid, "new_for_person": len({UNMAPPED, x, layout.lab_codes[0], y, other, z} - set(mine["code"]))}
    return extra, added


def test_data_validate_reports_the_ceiling_exactly(bundle, layout, base, tmp_path) -> None:
    write_omop(base, tmp_path / "clean")
    clean = validate_site(tmp_path / "clean", bundle=bundle).representation
    n, recorded = clean["patients"], len(base.events)
    assert clean["occurrences"]["recorded"] == recorded > 500
    assert clean["occurrences"]["representable"] == recorded and clean["occurrences"]["lost"] == 0
    assert clean["occurrences"]["merged_within_window"] == 0 and clean["occurrences"]["after_round_trip"] == recorded
    assert clean["prevalence"]["r2"] == 1.0 and clean["top_lost_codes"] == []
    assert clean["codes"]["recorded"] == clean["codes"]["representable"] == base.events["code"].nunique()

    extra, added = _extras(base, layout, bundle)
    events = pd.concat([base.events, extra], ignore_index=True).drop(columns=["domain"])
    write_omop(Cohort.from_frames(base.persons, events), tmp_path / "site")
    result = validate_site(tmp_path / "site", bundle=bundle)
    r, o = result.representation, result.representation["occurrences"]
    assert (o["recorded"], o["representable"], o["lost"]) == (recorded + 10, recorded + 3, 7)
    assert o["lost_by_reason"] == {"other_study_disease": 1, "outside_vocabulary": 2, "adverse_event_without_drug": 1,
                                   "lab_unit": 1, "before_first_window": 1, "after_last_window": 1}
    assert (o["merged_within_window"], o["after_round_trip"]) == (2, recorded + 1)
    codes = set(base.events["code"])
    assert r["codes"] == {"recorded": len(codes | added["codes"]), "in_vocabulary": len(codes | added["codes"]) - 1,
                          "representable": len(codes | added["representable_codes"])}
    per_patient = base.events.groupby("person_id")["code"].nunique()
    assert r["codes_per_patient"]["recorded"] == round((per_patient.sum() + added["new_for_person"]) / n, 4)
    assert r["codes_per_patient"]["round_trip"] == round((per_patient.sum() + 1) / n, 4)  # z is new
    assert 0 < r["prevalence"]["r2"] < 1
    top = {t["code"]: t for t in r["top_lost_codes"][:2]}  # lost twice each; the rest once
    assert top[UNMAPPED] == {"code": UNMAPPED, "lost": 2, "recorded": 2, "reasons": {"outside_vocabulary": 2}}
    assert top[added["x"]]["reasons"] == {"before_first_window": 1, "after_last_window": 1}
    assert f"{o['share_representable']:.1%} of their {o['recorded']:,} code occurrences" in \
        result.report.verdict["message"]
    assert result.tensors["events_outside_grid"] == 2 and result.tensors["events_outside_vocabulary"] == 3

    write_report(tmp_path / "report", result.as_dict())
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["representation"] == json.loads(json.dumps(r))
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.index("Verdict: ok") < page.index("Representation ceiling") < page.index(UNMAPPED)
    assert f"({o['share_representable']:.1%}) can be represented" in page


@pytest.mark.parametrize("seed", [3, 11])
def test_the_reasons_add_up_to_what_tensorize_counts(bundle, seed) -> None:
    """The fates are worked out apart from tensorize; on a simulated site they must give its counts."""
    (_, site), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=seed, min_patients=150,
                                     max_patients=150)
    tensors, stats = tensorize(site, bundle)
    r = representation_ceiling(site, tensors, bundle).as_dict()
    o = r["occurrences"]
    lost = o["lost_by_reason"]
    assert lost["outside_vocabulary"] + lost["adverse_event_without_drug"] == stats.events_outside_vocabulary > 0
    assert lost["before_first_window"] + lost["after_last_window"] == stats.events_outside_grid > 0
    assert lost["lab_unit"] == stats.lab_unit_mismatch
    assert o["representable"] - o["per_domain"]["diagnosis"]["representable"] == stats.events_used
    assert o["merged_within_window"] > 0 and r["prevalence"]["r2"] < 1
