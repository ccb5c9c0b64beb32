"""Plausibility checks on hand-built patients, and the knowledge read from a real bundle."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from shared.bundle import StudyBundle
from shared.evaluation.plausibility import (
    GraphKnowledge,
    disease_phenotype_pairs,
    drug_adverse_events,
    lab_limits,
    plausibility,
    wrong_sex,
)
from shared.trajectories.tensorize import TensorLayout
from shared.trajectories.tensors import TrajectoryTensors
from tests.shared.evaluation.cohorts import replace, study_cohort

# columns of study_cohort(…, phenotypes=3, drugs=2, labs=2): P0 P1 P2 | D0 D1 | AE0 AE1


def _knowledge(**overrides) -> GraphKnowledge:
    b = 7
    supported = np.zeros((2, b), bool)
    supported[0, [0, 1]] = True  # disease 0 has P0, P1
    supported[1, 2] = True  # disease 1 has P2
    negative = np.zeros((2, b), bool)
    negative[0, 2] = True  # HPO: disease 0 does NOT have P2
    drug_effect = np.zeros((b, b), bool)
    drug_effect[3, 5] = True  # D0 → AE0
    fields = dict(supported=supported, negative=negative, drug_effect=drug_effect,
                  female_only=np.eye(b, dtype=bool)[0], male_only=np.eye(b, dtype=bool)[1],
                  lab_mid=np.array([14.5, 0.0]), lab_half=np.array([14.5, 2.0]),
                  lab_low_limit=np.array([0.0, -np.inf]), lab_high_limit=np.array([160.0, np.inf]))
    return GraphKnowledge(**(fields | overrides))


def _cohort(events: np.ndarray, disease, sex) -> TrajectoryTensors:
    t = study_cohort(len(disease), windows=events.shape[1], phenotypes=3, drugs=2, labs=2)
    return replace(t, events=events.astype(np.float32), disease=np.array(disease), sex=np.array(sex, np.float32))


def test_disease_phenotype_pairs_count_supported_and_negated() -> None:
    e = np.zeros((3, 2, 7))
    e[0, 0, 0] = e[0, 1, 0] = 1  # disease 0, P0 in two windows: one pair, supported
    e[0, 1, 2] = 1  # disease 0, P2: not supported and NOT
    e[1, 0, 2] = 1  # disease 1, P2: supported
    e[2, 0, 1] = 1  # disease 1, P1: not supported
    e[2, 0, 3] = 1  # a drug is not a phenotype pair
    r = disease_phenotype_pairs(_cohort(e, [0, 1, 1], [0, 0, 0]), _knowledge())
    assert r == {"phenotype_pairs": 4, "phenotype_pairs_supported": 0.5, "phenotype_pairs_negated": 0.25}
    with pytest.raises(ValueError, match="disease rows"):
        disease_phenotype_pairs(_cohort(e, [0, 1, 2], [0, 0, 0]), _knowledge())


def test_drug_adverse_events_signal_and_order() -> None:
    e = np.zeros((3, 3, 7))
    e[0, 1, 3] = e[0, 2, 5] = 1  # D0 in window 1, AE0 in window 2: signal
    e[1, 0, 5] = e[1, 1, 3] = 1  # AE0 in window 0 before D0 in window 1: before any drug
    e[2, 0, 4] = e[2, 0, 6] = 1  # D1 and AE1 in the same window: a drug, but no graph edge
    r = drug_adverse_events(_cohort(e, [0, 0, 0], [0, 0, 0]), _knowledge())
    assert r["adverse_events"] == 3
    assert r["adverse_events_with_drug_signal"] == pytest.approx(1 / 3)
    assert r["adverse_events_before_any_drug"] == pytest.approx(1 / 3)
    empty = drug_adverse_events(_cohort(np.zeros((1, 2, 7)), [0], [0]), _knowledge())
    assert empty["adverse_events"] == 0 and math.isnan(empty["adverse_events_with_drug_signal"])


def test_wrong_sex() -> None:
    e = np.zeros((4, 2, 7))
    e[0, 0, 0] = 1  # female-only term in a man: wrong
    e[1, 0, 0] = 1  # female-only term in a woman: fine
    e[2, 1, 1] = 1  # male-only term in a woman: wrong
    e[3, 0, 1] = 1  # male-only term in a man: fine
    r = wrong_sex(_cohort(e, [0, 0, 0, 0], [1, 0, 0, 1]), _knowledge())
    assert r == {"sex_specific_columns": 2, "wrong_sex_patients": 0.5}


def test_lab_limits() -> None:
    t = _cohort(np.zeros((2, 2, 7)), [0, 0], [0, 0])
    labs = np.zeros((2, 2, 2), np.float32)
    mask = np.ones((2, 2, 2), np.float32)
    labs[0, 0, 0] = -1.5  # 14.5 − 1.5·14.5 < 0: impossible
    labs[0, 1, 0] = 10.0  # 14.5 + 145 = 159.5: just plausible
    labs[1, 0, 0] = 10.2  # 162.4 > 160: impossible
    labs[1, 1, 1] = -9.0  # a lab without a lower limit may go negative
    mask[1, 1, 0] = 0.0
    labs_t = replace(t, labs=labs, lab_mask=mask)
    assert lab_limits(labs_t, _knowledge()) == {"lab_values": 7, "lab_values_outside_limits": pytest.approx(2 / 7)}


def test_plausibility_merges_every_check() -> None:
    r = plausibility(_cohort(np.zeros((2, 2, 7)), [0, 1], [0, 1]), _knowledge())
    assert set(r) == {"phenotype_pairs", "phenotype_pairs_supported", "phenotype_pairs_negated", "adverse_events",
                      "adverse_events_with_drug_signal", "adverse_events_before_any_drug", "sex_specific_columns",
                      "wrong_sex_patients", "lab_values", "lab_values_outside_limits"}


def bundle_cohort(bundle: StudyBundle, n: int) -> TrajectoryTensors:
    """``n`` empty patients in the bundle's columns."""
    layout = TensorLayout.from_bundle(bundle)
    b, l_ = len(layout.binary_codes), len(layout.lab_codes)
    return TrajectoryTensors(
        events=np.zeros((n, layout.windows, b), np.float32), labs=np.zeros((n, layout.windows, l_), np.float32),
        lab_mask=np.zeros((n, layout.windows, l_), np.float32), sex=np.zeros(n, np.float32),
        age=np.full(n, 30.0, np.float32), disease=np.zeros(n, np.int64), person_id=np.arange(n, dtype=np.int64),
        index_date=np.full(n, np.datetime64("2020-01-01")), binary_codes=layout.binary_codes,
        binary_domains=layout.binary_domains, lab_codes=layout.lab_codes, window_days=layout.window_days,
        windows_before=layout.windows_before)


def test_knowledge_from_the_demo_bundle(demo_bundle) -> None:
    bundle = StudyBundle.load(demo_bundle, None)
    t = bundle_cohort(bundle, 2)
    k = GraphKnowledge.from_bundle(bundle, t)
    codes, domains = np.array(t.binary_codes), np.array(t.binary_domains)
    pheno = domains == "phenotype"
    assert k.supported.shape == (len(bundle.diseases), len(codes)) and not k.supported[:, ~pheno].any()
    # an annotated phenotype (known frequency) is supported
    v = bundle.vocabulary
    col = {(d, c): j for j, (c, d) in enumerate(zip(codes, domains))}
    annotated = [(i, col[("phenotype", c)]) for i, j in zip(*np.nonzero(np.isfinite(bundle.frequency)))
                 for c, d in [(v["code"][j], v["domain"][j])] if d == "phenotype"]
    assert annotated and all(k.supported[i, j] for i, j in annotated)
    effects = bundle.prior_graph[bundle.prior_graph["kind"] == "drug_effect"]
    assert k.drug_effect.sum() == len(effects) > 0
    assert k.female_only[col[("phenotype", "HP:0000140")]] and k.male_only[col[("phenotype", "HP:0012873")]]
    labs = pd.Series(t.lab_codes)
    assert (k.lab_low_limit == 0.0).all()  # every demo reference range starts at ≥ 0
    assert k.lab_high_limit[labs[labs == "LOINC:2077-6"].index[0]] == 160.0
    # a man with a menstrual-cycle abnormality, and a phenotype his disease is annotated with
    d, j = annotated[0]
    events = t.events.copy()
    events[0, 1, col[("phenotype", "HP:0000140")]] = 1
    events[1, 1, j] = 1
    t = replace(t, events=events, sex=np.array([1, 0], np.float32), disease=np.array([0, d]))
    r = plausibility(t, k)
    assert r["wrong_sex_patients"] == 0.5 and r["sex_specific_columns"] >= 2
    assert r["phenotype_pairs"] == 2 and r["phenotype_pairs_supported"] >= 0.5


def test_knowledge_rejects_foreign_columns(demo_bundle) -> None:
    bundle = StudyBundle.load(demo_bundle, None)
    with pytest.raises(ValueError, match="not in the bundle's vocabulary"):
        GraphKnowledge.from_bundle(bundle, study_cohort(5))
