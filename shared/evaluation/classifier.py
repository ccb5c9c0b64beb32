"""A small L2-regularised multinomial logistic regression, fitted with L-BFGS.

The discriminator (:mod:`shared.evaluation.detection`) and the TSTR/TRTR tasks
(:mod:`shared.evaluation.utility`) need a fast, deterministic, dependency-free classifier.
scikit-learn is not a dependency, so this is the textbook model on numpy and
``scipy.optimize``: no randomness, so equal inputs give equal models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

#: L2 penalty λ on the weights of standardized inputs, per sample (loss = mean CE + λ/2·‖W‖²).
#: 0.05 keeps a model on ~2,000 binary columns from memorising 500 training rows.
DEFAULT_L2 = 0.05
#: L-BFGS iterations; the loss is smooth and convex, so this is reached only on separable data.
DEFAULT_MAX_ITER = 200


@dataclass(frozen=True)
class LogisticModel:
    """A fitted model: standardization, then softmax(x·W + b).

    Attributes
    ----------
    classes
        The K ≥ 2 training labels, sorted; column k of :meth:`predict_proba` is ``classes[k]``.
    mean, scale
        float64 [D]: training column means and SDs (1 for a constant column).
    weights, bias
        float64 [D, K] and [K].
    """

    classes: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """float64 [n, K]: class probabilities of the rows of ``x`` [n, D]."""
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        return softmax(z @ self.weights + self.bias, axis=1)

    def scores(self, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """float64 [n, len(classes)]: probability of each requested class; 0 for a class
        the model never saw in training (it cannot rank what it was never shown)."""
        proba = self.predict_proba(x)
        out = np.zeros((proba.shape[0], len(classes)))
        column = {c: k for k, c in enumerate(self.classes.tolist())}
        for j, c in enumerate(np.asarray(classes).tolist()):
            if c in column:
                out[:, j] = proba[:, column[c]]
        return out


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = DEFAULT_L2, max_iter: int = DEFAULT_MAX_ITER
) -> LogisticModel:
    """Fit multinomial logistic regression by minimising the penalised cross-entropy.

    ===========  ============================================================
    variable     symbol
    ===========  ============================================================
    ``z``        x̃ = (x − μ)/σ, columns standardized on the training rows
    ``w, b``     W ∈ ℝ^{D×K}, b ∈ ℝ^K
    ``onehot``   Y ∈ {0,1}^{n×K}
    ``p``        P = softmax(x̃W + b)
    ===========  ============================================================

    L(W, b) = −(1/n) Σᵢ log Pᵢ,yᵢ + (λ/2)‖W‖²; ∇_W = x̃ᵀ(P − Y)/n + λW, ∇_b = 1ᵀ(P − Y)/n
    (Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*, 2nd ed., §4.4;
    the intercept is not penalised). Minimised by L-BFGS-B from W = 0, b = 0.

    Parameters
    ----------
    x
        float [n, D] inputs.
    y
        [n] labels (ints or strings) with at least two distinct values.
    l2
        λ ≥ 0 (per-sample scale, on standardized inputs).
    max_iter
        L-BFGS iterations (≥ 1).

    Returns
    -------
    LogisticModel

    Raises
    ------
    ValueError
        Shapes disagree, fewer than two classes, a value is not finite, or an option is
        out of range.
    """
    xs = np.asarray(x, np.float64)
    labels = np.asarray(y)
    if xs.ndim != 2 or labels.ndim != 1 or xs.shape[0] != labels.shape[0]:
        raise ValueError(f"x must be [n, D] and y [n], got {xs.shape} and {labels.shape}")
    if not np.isfinite(xs).all():
        raise ValueError("x contains NaN or infinite values")
    if not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a finite number ≥ 0, got {l2!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be ≥ 1, got {max_iter!r}")
    classes, codes = np.unique(labels, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"need at least two classes to fit a classifier, got {classes.tolist()!r}")
    n, d = xs.shape
    k = classes.size
    mean = xs.mean(axis=0)
    scale = xs.std(axis=0)
    scale[scale == 0] = 1.0
    z = (xs - mean) / scale
    onehot = np.zeros((n, k))
    onehot[np.arange(n), codes] = 1.0

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: d * k].reshape(d, k), theta[d * k:]
        logits = z @ w + b
        log_p = log_softmax(logits, axis=1)
        residual = (np.exp(log_p) - onehot) / n
        loss = -float((log_p * onehot).sum()) / n + 0.5 * l2 * float((w * w).sum())
        grad = np.concatenate([(z.T @ residual + l2 * w).ravel(), residual.sum(axis=0)])
        return loss, grad

    result = minimize(loss_and_grad, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter})
    return LogisticModel(classes=classes, mean=mean, scale=scale,
                         weights=result.x[: d * k].reshape(d, k), bias=result.x[d * k:])


def stratified_folds(y: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """int [n]: a fold number per row; each class is shuffled and dealt round-robin, so
    every fold holds ⌊n_c/folds⌋ or ⌈n_c/folds⌉ rows of class c."""
    labels = np.asarray(y)
    out = np.empty(labels.shape[0], dtype=np.int64)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        out[rows] = np.arange(rows.size) % folds
    return out
