"""What the coordinator does with the sites' updates: check each one against the global model,
bound its influence, and average.

The ServerApp's strategy (:mod:`server.strategy`) calls these pure functions; they hold no
state. Every check works for any number of sites, two included (where "far from the median" can
never fire: the median of two is their mean).

1. :func:`update_problem`: a reply's weights must have exactly the global model's tensor names,
   shapes and dtypes and only finite values, and its patient count must be a whole number in
   [1, ``max_patients``]; otherwise the reply is rejected (the round goes on without it).
2. :func:`clip_update`: the change Δ = w_site − w_global is scaled down to norm ``max_norm``
   when it is longer, ‖Δ‖ ≤ C (as in DP-FedAvg, McMahan et al. 2018, Algorithm 1): one site can
   move the model by at most C × its weight, however it was made.
3. :func:`site_weights`: FedAvg's weights n_k / Σ n, each capped at ``max_share`` of the total
   (the excess goes to the others in proportion), so no site's claim of its size decides the model.
4. :func:`aggregate`: w_global + Σ_k ω_k Δ_k (``"mean"``, FedAvg), or the coordinate-wise median
   of the Δ_k (``"median"``, Yin et al. 2018), robust to a minority of arbitrary updates at the
   cost of ignoring the weights and of more noise with few sites.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from server.config import RULES, Rule

Weights = Mapping[str, torch.Tensor]


def update_problem(base: Weights, update: Weights, num_examples: object, *, max_patients: int) -> str | None:
    """Why a site's reply cannot be averaged, or None.

    Parameters
    ----------
    base
        The global weights the round started from (names, shapes and dtypes are the contract).
    update
        The site's weights.
    num_examples
        The patient count the site reports (it weights the average).
    max_patients
        The largest count a site may claim (``fed.max-site-patients``).
    """
    missing, extra = sorted(set(base) - set(update)), sorted(set(update) - set(base))
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}"] if missing else []) + \
                ([f"unknown {', '.join(extra[:3])}{' …' if len(extra) > 3 else ''}"] if extra else [])
        return f"the weights do not match the global model ({'; '.join(parts)})"
    for name, ref in base.items():
        got = update[name]
        if tuple(got.shape) != tuple(ref.shape):
            return f"tensor {name} has shape {list(got.shape)}, the global model {list(ref.shape)}"
        if got.dtype != ref.dtype:
            return f"tensor {name} has dtype {got.dtype}, the global model {ref.dtype}"
        if got.dtype.is_floating_point and not bool(torch.isfinite(got).all()):
            return "non-finite values"
    n = num_examples
    if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n) or n != int(n) \
            or not 1 <= n <= max_patients:
        return f"num-examples {n!r} is not a whole number of patients in [1, {max_patients}]"
    return None


def change_norm(base: Weights, update: Weights) -> float:
    """‖w_site − w_global‖₂ over every floating-point tensor."""
    return math.sqrt(sum(float(((update[k].double() - base[k].double()) ** 2).sum())
                         for k in base if base[k].dtype.is_floating_point))


def weights_norm(weights: Weights) -> float:
    """‖w‖₂ over every floating-point tensor."""
    return math.sqrt(sum(float((v.double() ** 2).sum()) for v in weights.values() if v.dtype.is_floating_point))


def clip_update(base: Weights, update: Weights, *, max_norm: float) -> tuple[dict[str, torch.Tensor], float]:
    """Δ = update − base scaled to norm ≤ ``max_norm``; (Δ, the factor applied, 1.0 when unclipped).

    ``max_norm`` ≤ 0 (or infinite) turns clipping off. Non-float tensors (counters) carry no
    change.
    """
    delta = {k: (update[k].double() - base[k].double()) if base[k].dtype.is_floating_point
             else torch.zeros_like(base[k], dtype=torch.float64) for k in base}
    norm = math.sqrt(sum(float((d ** 2).sum()) for d in delta.values()))
    factor = 1.0 if not (0 < max_norm < math.inf) or norm <= max_norm else max_norm / norm
    if factor != 1.0:
        delta = {k: d * factor for k, d in delta.items()}
    return delta, factor


def site_weights(counts: Sequence[float], *, max_share: float) -> list[float]:
    """FedAvg weights n_k / Σ n with every weight capped at ``max_share`` (water-filling: the
    excess of a capped site goes to the uncapped ones in proportion to their counts).

    Raises
    ------
    ValueError
        No counts, a count ≤ 0, or ``max_share`` outside (0, 1] (a cap below 1 / #sites cannot
        be met: the weights are then equal).
    """
    if not counts or any(c <= 0 for c in counts):
        raise ValueError(f"counts must be positive, got {list(counts)}")
    if not 0 < max_share <= 1:
        raise ValueError(f"max_share must be in (0, 1], got {max_share}")
    k = len(counts)
    if max_share * k < 1:
        return [1.0 / k] * k
    weights = [0.0] * k
    free = list(range(k))
    left = 1.0
    while True:
        total = sum(counts[i] for i in free)
        over = [i for i in free if left * counts[i] / total > max_share]
        if not over:
            for i in free:
                weights[i] = left * counts[i] / total
            return weights
        for i in over:
            weights[i] = max_share
            free.remove(i)
        left = 1.0 - max_share * (k - len(free))


def aggregate(base: Weights, deltas: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float], *,
              rule: Rule = "mean") -> dict[str, torch.Tensor]:
    """The new global weights: base + Σ ω_k Δ_k (``"mean"``) or base + median_k Δ_k
    coordinate-wise (``"median"``), cast back to each tensor's dtype.

    Raises
    ------
    ValueError
        No deltas, or an unknown rule.
    """
    if not deltas:
        raise ValueError("no updates to aggregate")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    out = {}
    for name, ref in base.items():
        if not ref.dtype.is_floating_point:
            out[name] = ref.clone()
            continue
        stacked = torch.stack([d[name] for d in deltas])
        if rule == "mean":
            step = (stacked * torch.tensor(np.asarray(weights, dtype=np.float64)).view(-1, *[1] * ref.dim())).sum(0)
        else:
            step = torch.from_numpy(np.median(stacked.numpy(), axis=0))  # the mean of the middle two for an even k
        out[name] = (ref.double() + step).to(ref.dtype)
    return out
