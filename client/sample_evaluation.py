"""Federated evaluation at a site: the coordinator's synthetic sample measured against the
site's own patients with the full suite (:func:`shared.evaluation.suite.evaluate`); numbers only
leave (DESIGN.md, "Data flow", step 4).

1. The cached bundle (by the hash the coordinator names) is verified with the pinned key.
2. The site's training patients (``data-path``) and, when the node config names one, its
   held-out patients (``holdout-path``: patients it never trains on) are read as for training.
3. The synthetic sample is cut to the site's own disease mix (:func:`match_disease_mix`: the
   largest part of the sample in the site's proportions), so that fidelity measures the
   model, not the difference between the coordinator's uniform conditions and the site's
   case mix. The mix never leaves the site.
4. The suite runs: fidelity and plausibility always, also over every code the site's patients
   record (``recorded``: the sample written back to codes against the site's own records, and
   the site's representation ceiling); utility (TSTR vs TRTR) and the membership, DOMIAS and
   attribute-disclosure attacks need held-out patients.

What leaves is the suite's dict of aggregate numbers (MMD², R², AUROCs, shares, counts; its
text leaves are dropped first, :func:`shared.evaluation.numbers.drop_text`). They
are computed on real patients without noise, so they are *not* covered by the site's ε; the
node config ``eval-suite = false`` declines (the reply then says so and carries no number).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from client import bundle_cache
from client.config import NodeConfig
from client.training import read_cohort
from shared.evaluation.numbers import drop_text
from shared.evaluation.suite import evaluate
from shared.trajectories.tensorize import TensorLayout, tensorize
from shared.trajectories.tensors import TrajectoryTensors

log = logging.getLogger("raregraph.client")


@dataclass(frozen=True)
class SuiteRequest:
    """What the coordinator asks: which bundle, which seed, the sample itself."""

    run_id: str
    bundle_sha256: str
    seed: int
    sample: dict[str, np.ndarray]  # TrajectoryTensors.to_arrays()


def match_disease_mix(synthetic: TrajectoryTensors, disease: np.ndarray, *, seed: int) -> TrajectoryTensors:
    """The largest part of ``synthetic`` that follows the disease mix of ``disease``, drawn without
    replacement.

    With ``want_d`` real patients of disease d and ``have_d`` synthetic ones, every disease gets
    ``floor(s · want_d)`` synthetic patients for the largest scale s ≥ 1 the sample allows
    (s = min over the site's diseases of have_d / want_d). Where the sample has fewer patients of
    some disease than the site (s < 1), each disease gets min(want_d, have_d) instead, so a rare
    disease is never dropped. A synthetic side larger than the real one keeps its own sampling
    noise out of the prevalence and co-occurrence comparisons; the real side's noise stays.
    """
    rng = np.random.default_rng(seed)
    want = np.bincount(disease, minlength=int(max(disease.max(initial=0), synthetic.disease.max(initial=0))) + 1)
    have = np.bincount(synthetic.disease, minlength=want.size)
    wanted = want > 0
    scale = max(1.0, float((have[wanted] / want[wanted]).min())) if wanted.any() else 1.0
    take = np.minimum(have, np.floor(scale * want + 1e-9).astype(np.int64))
    rows = [rng.permutation(np.flatnonzero(synthetic.disease == d))[:k] for d, k in enumerate(take) if k]
    return synthetic.subset(np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64))


def evaluate_sample(node: NodeConfig, request: SuiteRequest) -> dict:
    """The suite's numbers for the request at this site (see the module docstring).

    Raises
    ------
    SignatureError
        The bundle is not cached or does not verify.
    InputError
        Bad site or held-out data.
    ValueError
        The sample does not fit the bundle's grid, or too few of its patients match the site.
    """
    bundle = bundle_cache.load(node.state_path, request.bundle_sha256, node.coordinator_pub)
    cohort = read_cohort(node, bundle, node.data_source)
    holdout_cohort = read_cohort(node, bundle, node.holdout_path) if node.holdout_path is not None else None
    real = tensorize(cohort, bundle)[0]
    holdout = tensorize(holdout_cohort, bundle)[0] if holdout_cohort is not None else None
    synthetic = TrajectoryTensors.from_arrays(request.sample, like=TensorLayout.from_bundle(bundle))
    matched = match_disease_mix(synthetic, real.disease, seed=request.seed)
    if matched.n < 2:
        raise ValueError(f"only {matched.n} synthetic patients match this site's diseases")
    metrics = drop_text(evaluate(real, matched, holdout=holdout, seed=request.seed, bundle=bundle, real_cohort=cohort,
                                 holdout_cohort=holdout_cohort))
    log.info("site %s evaluated %d synthetic patients of run %s against %d training and %s held-out patients "
             "(aggregate numbers, not covered by ε)", node.site_id, matched.n, request.run_id, real.n,
             holdout.n if holdout is not None else "no")
    return metrics
