"""The logistic model: known maximum-likelihood values, determinism, folds, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from shared.evaluation.classifier import fit_logistic, stratified_folds


def test_unpenalised_fit_recovers_the_empirical_rates() -> None:
    # one binary input: the MLE of P(y = 1 | x) is the observed rate in each group (3/4 and 1/4)
    x = np.array([[0.0]] * 4 + [[1.0]] * 4)
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    model = fit_logistic(x, y, l2=0.0)
    p = model.predict_proba(np.array([[0.0], [1.0]]))
    np.testing.assert_allclose(p[:, 1], [0.75, 0.25], atol=1e-4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert model.classes.tolist() == [0, 1]


def test_penalty_shrinks_towards_the_base_rate() -> None:
    x = np.array([[0.0]] * 4 + [[1.0]] * 4)
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    weak = fit_logistic(x, y, l2=0.0).predict_proba(np.array([[0.0]]))[0, 1]
    strong = fit_logistic(x, y, l2=100.0).predict_proba(np.array([[0.0]]))[0, 1]
    assert weak == pytest.approx(0.75, abs=1e-4)
    assert 0.5 < strong < 0.52  # the base rate is ½; a heavy penalty leaves almost only the intercept


def test_multiclass_fit_is_deterministic_and_scores_unseen_classes_zero() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=150)
    x = rng.normal(size=(150, 4)) + 4.0 * np.eye(4)[y]
    a, b = fit_logistic(x, y), fit_logistic(x, y)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert (a.predict_proba(x).argmax(axis=1) == y).mean() > 0.9
    scores = a.scores(x[:5], np.array([2, 7]))
    np.testing.assert_allclose(scores[:, 0], a.predict_proba(x[:5])[:, 2])
    assert (scores[:, 1] == 0.0).all()  # class 7 was never seen


def test_constant_columns_do_not_break_the_fit() -> None:
    x = np.column_stack([np.zeros(20), np.r_[np.zeros(10), np.ones(10)]])
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    assert (fit_logistic(x, y).predict_proba(x).argmax(axis=1) == y).all()


@pytest.mark.parametrize(("x", "y", "kwargs", "match"), [
    (np.zeros((4, 2)), np.zeros(4), {}, "two classes"),
    (np.zeros((4, 2)), np.array([0, 1, 0]), {}, "shape|must be"),
    (np.full((2, 2), np.nan), np.array([0, 1]), {}, "NaN"),
    (np.zeros((2, 2)), np.array([0, 1]), {"l2": -1.0}, "l2"),
    (np.zeros((2, 2)), np.array([0, 1]), {"max_iter": 0}, "max_iter"),
])
def test_fit_rejects_bad_input(x, y, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        fit_logistic(x, y, **kwargs)


def test_stratified_folds_balance_every_class() -> None:
    y = np.array([0] * 23 + [1] * 7)
    folds = stratified_folds(y, 5, np.random.default_rng(1))
    for f in range(5):
        assert (y[folds == f] == 0).sum() in (4, 5)
        assert (y[folds == f] == 1).sum() in (1, 2)
