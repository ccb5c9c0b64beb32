"""Cohort ↔ tensors: windows, domains, lab standardization, and the OMOP round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.bundle import StudyBundle
from shared.ehr.cohort import Cohort
from shared.ehr.omop import read_omop
from shared.ehr.omop_tables import write_omop
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium
from shared.trajectories.tensorize import LAB_CLIP, TensorLayout, tensorize, to_cohort


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture(scope="module")
def layout(bundle) -> TensorLayout:
    return TensorLayout.from_bundle(bundle)


def cohort(events: list[tuple], persons=((1, "F", 1980),)) -> Cohort:
    p = pd.DataFrame(list(persons), columns=["person_id", "sex", "year_of_birth"])
    e = pd.DataFrame(events, columns=["person_id", "date", "code", "value", "unit", "end_date"])
    e["date"] = pd.to_datetime(e["date"])
    e["end_date"] = pd.to_datetime(e["end_date"])
    return Cohort.from_frames(p, e)


def test_windows_around_the_index_date(bundle, layout) -> None:
    pheno = layout.binary_codes[layout.binary_domains.index("phenotype")]
    days = layout.window_days
    index = pd.Timestamp("2020-01-01")
    on = lambda d: (index + pd.Timedelta(days=d)).strftime("%Y-%m-%d")  # noqa: E731
    c = cohort([(1, on(0), "ORPHA:558", np.nan, "", None), (1, on(-1), pheno, np.nan, "", None),
                (1, on(-days - 1), pheno, np.nan, "", None), (1, on(days * 7 - 1), pheno, np.nan, "", None),
                (1, on(days * 7), pheno, np.nan, "", None)])
    t, stats = tensorize(c, bundle)
    j = layout.binary_codes.index(pheno)
    assert t.events[0, :, j].tolist() == [1, 0, 0, 0, 0, 0, 0, 1]  # day −1 → window 0, day 7·days−1 → last
    assert stats.events_outside_grid == 2
    assert t.disease[0] == list(layout.diseases).index("ORPHA:558")
    assert t.age[0] == 40 and t.sex[0] == 0


def test_first_study_diagnosis_is_the_index_and_others_are_left_out(bundle) -> None:
    c = cohort([(1, "2021-05-01", "ORPHA:355", np.nan, "", None), (1, "2020-05-01", "ORPHA:905", np.nan, "", None),
                (2, "2020-01-01", "ORPHA:999999", np.nan, "", None)],
               persons=((1, "M", 1990), (2, "F", 1970)))
    t, stats = tensorize(c, bundle)
    assert t.n == 1 and str(t.index_date[0]) == "2020-05-01"
    assert stats.patients_without_study_diagnosis == 1
    with pytest.raises(ValueError, match="no patient has a diagnosis of a study disease"):
        tensorize(cohort([(1, "2020-01-01", "HP:0001166", np.nan, "", None)]), bundle)


def test_hp_term_is_an_adverse_event_only_after_a_linked_drug(bundle, layout) -> None:
    drug, ae = sorted(layout.drug_effects)[0]
    jd = layout.binary_codes.index(drug)
    j_ae = [i for i, (c, d) in enumerate(zip(layout.binary_codes, layout.binary_domains))
            if c == ae and d == "adverse_event"][0]
    c = cohort([(1, "2020-01-01", "ORPHA:558", np.nan, "", None), (1, "2020-03-01", ae, np.nan, "", None),
                (1, "2020-04-01", drug, np.nan, "", "2021-01-15"), (1, "2020-12-01", ae, np.nan, "", None)])
    t, _ = tensorize(c, bundle)
    assert t.events[0, :, jd].tolist() == [0, 1, 1, 1, 0, 0, 0, 0]  # exposure Apr 2020 – Jan 2021
    assert t.events[0, 2, j_ae] == 1  # December, after the drug
    assert t.events[0, 1, j_ae] == 0  # March, before the drug: not an adverse event


def test_labs_use_public_ranges_and_the_last_value(bundle, layout) -> None:
    lab, unit = layout.lab_codes[0], layout.lab_units[0]
    low, high = layout.lab_mid[0] - layout.lab_half[0], layout.lab_mid[0] + layout.lab_half[0]
    c = cohort([(1, "2020-01-01", "ORPHA:558", np.nan, "", None), (1, "2020-01-02", lab, low, unit, None),
                (1, "2020-02-02", lab, high, unit, None), (1, "2020-08-01", lab, high * 1000, unit, None),
                (1, "2020-09-01", lab, 1.0, "furlongs", None)])
    t, stats = tensorize(c, bundle)
    assert t.labs[0, 1, 0] == pytest.approx(1.0) and t.lab_mask[0, 1, 0] == 1  # last in window: high → +1
    assert t.labs[0, 2, 0] == LAB_CLIP  # absurd values are clipped
    assert t.lab_mask[0, 0, 0] == 0 and t.labs[0, 0, 0] == 0
    assert stats.lab_unit_mismatch == 1


def test_omop_round_trip_keeps_every_in_vocabulary_event_in_its_window(bundle, tmp_path) -> None:
    (_, site), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=3, min_patients=80,
                                     max_patients=80)
    write_omop(site, tmp_path / "real")
    first, _ = tensorize(read_omop(tmp_path / "real")[0], bundle)
    back = to_cohort(first, bundle, seed=0)
    write_omop(back, tmp_path / "again", fmt="parquet")
    second, stats = tensorize(read_omop(tmp_path / "again")[0], bundle)
    assert stats.events_outside_grid == 0 and stats.events_outside_vocabulary == 0
    assert first.events.sum() > 500
    np.testing.assert_array_equal(second.events, first.events)
    np.testing.assert_array_equal(second.lab_mask, first.lab_mask)
    np.testing.assert_allclose(second.labs, first.labs, atol=1e-3)
    np.testing.assert_array_equal(second.disease, first.disease)
    np.testing.assert_array_equal(second.index_date, first.index_date)
    np.testing.assert_array_equal(second.sex, first.sex)
    np.testing.assert_allclose(second.age, first.age, atol=1.0)
