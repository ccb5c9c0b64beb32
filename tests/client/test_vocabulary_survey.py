"""The site's vocabulary survey called through the ClientApp (no Flower engine): a Gaussian release of
its candidate-code counts and event-time shares, charged once and signed into its ledger, resent
without a new charge, declined at σ = 0; and its contribution bound."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, RecordDict

from client.config import NodeConfig
from client.vocabulary_survey import survey_rows
from shared import protocol as P
from shared.bundle import StudyBundle
from shared.privacy.budget import epsilon_for
from shared.errors import ConfigError
from shared.survey import DEFAULT_SURVEY_NOISE, SurveyRequest, parse_time_edges
from tests.client.test_disease_mix import bundle, call, config, message, node  # noqa: F401 — fixtures

REQUEST = SurveyRequest()


def survey_node(node: NodeConfig, sigma: float) -> NodeConfig:  # noqa: F811
    return NodeConfig(**{**node.__dict__, "survey_noise_multiplier": sigma})


def ask(node: NodeConfig, bundle: StudyBundle, request: SurveyRequest = REQUEST, **kw):  # noqa: F811
    reply = call(node, message(RecordDict({P.CONFIG: config(bundle, **kw), P.SURVEY: ConfigRecord(request.to_record())}),
                               P.SURVEY_QUERY))
    assert not reply.has_error(), reply.error
    return reply


def test_a_site_releases_its_survey_once_charged_as_one_gaussian_step_and_resends_it(node, bundle) -> None:  # noqa: F811
    site = survey_node(node, DEFAULT_SURVEY_NOISE)
    first = ask(site, bundle, run_id="survey-a")
    record, metrics = first.content[P.SURVEY], first.content[P.METRICS]
    candidates = bundle.survey_candidates()  # the candidates outside the vocabulary: its own features stay anyway
    assert 0 < len(candidates) < len(bundle.candidates())
    assert not set(candidates["code"]) & set(bundle.vocabulary["code"])
    assert len(record[P.SURVEY_CODES]) == len(candidates) and len(record[P.SURVEY_TIME]) == REQUEST.bins
    assert record[P.SURVEY_RUN] == "survey-a" and metrics[P.REFUSED] == 0.0
    expected = epsilon_for(noise_multiplier=DEFAULT_SURVEY_NOISE, sample_rate=1.0, steps=1, delta=site.delta)
    assert metrics[P.EPSILON] == pytest.approx(expected, rel=1e-6)
    assert 0.9 < metrics[P.EPSILON] < 1.1
    # the time shares of the 60 patients sum to 60; the noise of 40 bins has sd √40 · σ·S/w ≈ 36
    assert abs(sum(record[P.SURVEY_TIME]) - 60) < 5 * np.sqrt(REQUEST.bins) * REQUEST.time_sd(DEFAULT_SURVEY_NOISE)
    again = ask(site, bundle, run_id="survey-b")
    assert list(again.content[P.SURVEY][P.SURVEY_CODES]) == list(record[P.SURVEY_CODES])
    assert again.content[P.SURVEY][P.SURVEY_RUN] == "survey-a"  # resent: charged in the first run only
    assert again.content[P.METRICS][P.EPSILON] == pytest.approx(metrics[P.EPSILON])
    other = ask(site, bundle, request=SurveyRequest(max_codes=4), run_id="survey-c")  # another question: a new charge
    assert other.content[P.METRICS][P.EPSILON] > metrics[P.EPSILON]


def test_a_site_with_survey_noise_0_declines(node, bundle) -> None:  # noqa: F811
    reply = ask(survey_node(node, 0.0), bundle, run_id="survey-d")
    assert reply.content[P.METRICS][P.REFUSED] == 1.0 and list(reply.content[P.SURVEY][P.SURVEY_CODES]) == []
    assert P.LEDGER not in reply.content


def test_each_patient_adds_at_most_max_codes_and_time_shares_summing_to_one() -> None:
    request = SurveyRequest(max_codes=3, time_edges=(-10, 0, 10))  # bins: < -10, [-10, 0), [0, 10), ≥ 10
    candidates = [f"HP:{i:07d}" for i in range(10)]
    persons = pd.DataFrame({"person_id": [1, 2], "index_date": np.array(["2020-01-01", "2020-01-01"],
                                                                        dtype="datetime64[D]")})
    events = pd.DataFrame({"person_id": [1] * 6 + [2, 2],
                           "date": pd.to_datetime(["2019-01-01", "2020-01-05", "2020-01-15", "2020-01-15",
                                                   "2021-01-01", "2019-12-25", "2020-01-03", "2020-01-03"]),
                           "code": candidates[:5] + ["ICD10:I10", candidates[0], candidates[0]]})
    codes, time = survey_rows(events, persons, candidates, request, np.random.default_rng(0))
    assert codes.sum() == 3 + 1  # patient 1: 5 candidates bounded to 3; patient 2: one distinct code
    assert codes[0] >= 1 and set(np.flatnonzero(codes)) <= set(range(5))
    assert time.sum() == pytest.approx(2.0)
    # patient 1: days -365 (the open first bin), 4 ([0, 10)), 14, 14, 366 (the open last bin), -7 ([-10, 0));
    # patient 2: both events on day 2
    assert time.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6 + 1.0, 3 / 6])


def test_time_edges_must_rise_across_the_index_date() -> None:
    for edges in ((0, 10), (-10, -5), (-10, 5, 5), (-10,)):
        with pytest.raises(ConfigError, match="time-edges"):
            SurveyRequest(time_edges=edges)
    with pytest.raises(ConfigError, match="comma-separated whole days"):
        parse_time_edges("-10,zero,10")
    assert parse_time_edges("-10,0,10") == (-10, 0, 10)
