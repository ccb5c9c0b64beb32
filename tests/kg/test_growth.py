"""The grown bundle (kg.growth): which surveyed codes enter, with what domain, score and frequency;
how the time grid follows the sites' event times; and that the tensorizer then keeps a comorbidity
recorded with a code the graph does not know."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from kg.bundle import make_bundle
from kg.growth import grow, grown_time_grid, read_survey
from shared.bundle import StudyBundle
from shared.ehr.cohort import Cohort
from shared.errors import ConfigError, InputError
from shared.signing.keys import load_private_key
from shared.survey import DEFAULT_TIME_EDGES, SURVEY_FORMAT
from shared.trajectories.tensorize import tensorize

STUDY_TIME = {"windows": 8, "windows-before": 1, "window-days": 180}


@pytest.fixture(scope="module")
def parent(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


def a_survey(parent: StudyBundle, codes: dict[str, tuple[float, str]], *, sd: float = 10.0,
             mass: list[float] | None = None, patients: float = 400.0) -> dict:
    return {"format": SURVEY_FORMAT, "run_id": "r1", "bundle_sha256": parent.bundle_hash, "candidates": 20000,
            "code_noise_sd": sd, "time_noise_sd": 5.0, "patients": patients, "sites": {"site-1": {}, "site-2": {}},
            "codes": {c: {"count": n, "domain": d} for c, (n, d) in codes.items()},
            "time": {"edges": list(DEFAULT_TIME_EDGES),
                     "mass": mass if mass is not None else [0.0] * (len(DEFAULT_TIME_EDGES) + 1)}}


def test_codes_above_the_threshold_enter_with_their_domain_and_those_below_do_not(parent, real_graph) -> None:
    in_graph = sorted(set(real_graph.ids_of_type("phenotype")) - set(parent.vocabulary["code"]))[:2]
    z = float(norm.isf(1.0 / 20000))  # the default: one false code expected among 20,000 candidates
    survey = a_survey(parent, {"ICD10:I10": (200.0, "phenotype"), in_graph[0]: (10 * z + 1, "phenotype"),
                               in_graph[1]: (10 * z - 1, "phenotype"), "LOINC:99999-9": (300.0, "lab")})
    study, growth = grow(parent, survey, real_graph)
    vocab = growth.vocabulary
    assert set(parent.vocabulary["code"]) <= set(vocab["code"])  # the public features all stay
    assert (vocab.loc[vocab["code"] == "ICD10:I10", "domain"] == "phenotype").all()
    assert in_graph[0] in set(vocab["code"]) and in_graph[1] not in set(vocab["code"])
    assert "LOINC:99999-9" not in set(vocab["code"])  # no public reference range: cannot be standardized
    assert growth.provenance["skipped"] == {"lab_without_reference_range": 1}
    assert growth.provenance["unknown_to_graph"] == ["ICD10:I10"]
    assert growth.provenance["threshold"] == pytest.approx(10 * z, abs=1e-3)
    assert growth.prevalence["ICD10:I10"] == pytest.approx(0.5)
    assert vocab["index"].tolist() == list(range(len(vocab)))
    assert growth.provenance["kept_public"] == len(parent.vocabulary)


def test_a_survey_of_another_bundle_or_file_is_refused(parent, real_graph, tmp_path) -> None:
    survey = a_survey(parent, {}) | {"bundle_sha256": "0" * 64}
    with pytest.raises(ConfigError, match="grow the bundle the sites were surveyed on"):
        grow(parent, survey, real_graph)
    path = tmp_path / "survey.json"
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a survey"):
        read_survey(path)
    path.write_text(json.dumps({"format": SURVEY_FORMAT}))
    with pytest.raises(InputError, match="lacks the key 'run_id'"):
        read_survey(path)


def test_the_time_grid_grows_where_a_tail_stands_out_of_the_noise_and_stays_otherwise() -> None:
    rng = np.random.default_rng(0)
    edges = list(DEFAULT_TIME_EDGES)  # bin b holds edges[b-1] ≤ day < edges[b]; the study grid is bins 5-8
    assert edges[4:9] == [-365, 0, 365, 730, 1460]
    mass = np.zeros(len(edges) + 1)
    mass[5:9] = 100.0  # inside the study grid (1 window of 180 d before the index date, 7 after)
    mass[9:11] = 60.0  # a follow-up to 10 years (bins up to 3650 d)
    mass[3] = 60.0  # records from 2 to 5 years before the diagnosis
    survey = {"time_noise_sd": 5.0, "time": {"edges": edges, "mass": (mass + 5.0 * rng.standard_normal(len(mass))).tolist()}}
    table, report = grown_time_grid(survey, STUDY_TIME, 0.95)
    assert table["window-days"] == 180
    assert report["start_day"] == -1825 and table["windows-before"] == 11  # ceil(1825 / 180)
    assert report["end_day"] == 3650 and table["windows"] - table["windows-before"] == 21  # not the empty years after
    assert report["estimated_share_outside"] < 0.05
    noise = {"time_noise_sd": 5.0, "time": {"edges": edges, "mass": (5.0 * rng.standard_normal(len(mass))).tolist()}}
    table, report = grown_time_grid(noise, STUDY_TIME, 0.95)
    assert table == STUDY_TIME  # no reason to grow: the study's span exactly, not rounded out to the bins
    assert (report["start_day"], report["end_day"]) == (-180, 1260)


def test_a_grown_bundle_scores_an_unknown_code_neutrally_and_the_tensorizer_keeps_it(parent, real_graph,
                                                                                      coordinator_key, tmp_path) -> None:
    survey = a_survey(parent, {"ICD10:E11": (200.0, "phenotype")})
    study, growth = grow(parent, survey, real_graph, time_from_survey=False)
    out = tmp_path / "grown"
    manifest = make_bundle(real_graph, study, sign_key=load_private_key(coordinator_key[0]), out=out, growth=growth)
    grown = StudyBundle.load(out, coordinator_key[1])
    assert manifest["grown_from"] == parent.bundle_hash == grown.growth()["parent"]
    j = int(grown.vocabulary.loc[grown.vocabulary["code"] == "ICD10:E11", "index"].iloc[0])
    assert np.all(grown.combined[:, j] == 0.0)  # no evidence either way
    assert np.allclose(grown.frequency[:, j], 0.5)  # the consortium's DP prevalence, 200 / 400
    assert grown.candidates() is not None and "ICD10:E11" not in set(parent.candidates()["code"])
    disease = str(grown.diseases["id"].iloc[0])
    cohort = Cohort.from_frames(
        pd.DataFrame({"person_id": [1], "sex": ["F"], "year_of_birth": [1980]}),
        pd.DataFrame({"person_id": [1, 1], "date": pd.to_datetime(["2020-01-01", "2020-03-01"]),
                      "code": [disease, "ICD10:E11"], "domain": ["diagnosis", "unknown"]}))
    tensors, stats = tensorize(cohort, grown)
    assert tensors.events[0, :, tensors.binary_codes.index("ICD10:E11")].sum() == 1.0
    assert stats.events_outside_vocabulary == 0
    assert tensorize(cohort, parent)[1].events_outside_vocabulary == 1  # the first bundle cannot hold it
