"""Privacy: does the synthetic cohort reveal who was in the training data?

Distance-based checks on patient vectors (``TrajectoryTensors.patient_vectors()``):
distance to closest record (DCR), a DCR membership-inference attack scored by AUROC,
the share of exact copies, and DCR percentiles against a held-out baseline. "Members"
are the real patients the generator was trained on; "holdout" are real patients from the
same population that it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.evaluation.stats import BLOCK_BYTES, as_vectors, auroc, check_same_width, nearest_distances
from shared.trajectories.tensors import TrajectoryTensors

Vectors = np.ndarray | TrajectoryTensors


def dcr(synth_vectors: Vectors, reference_vectors: Vectors, *, block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """Distance to closest record: for each query row, the Euclidean distance to the
    nearest reference row.

    DCR as used for tabular synthetic data by Park et al. (2018), "Data Synthesis based
    on Generative Adversarial Networks", PVLDB 11(10), Zhao et al. (2021), "CTAB-GAN",
    ACML, and synthcity (Qian et al. 2023).

    ==================  ===============================================================
    variable            symbol
    ==================  ===============================================================
    ``q``               sᵢ: query rows (synthetic patients, or real ones for an attack)
    ``r``               rⱼ: reference rows
    result              DCR(sᵢ) = minⱼ ‖sᵢ − rⱼ‖₂
    ==================  ===============================================================

    Parameters
    ----------
    synth_vectors
        float [n, D] query rows, or a cohort (its ``patient_vectors()``).
    reference_vectors
        float [m, D] reference rows, or a cohort.
    block_bytes
        Memory cap for one block of the n × m distance matrix (float64); the queries are
        processed in as many blocks as needed, so memory does not grow with n.

    Returns
    -------
    np.ndarray
        float64 [n], ≥ 0; exactly 0 for a query that is a copy of a reference row.

    Raises
    ------
    ValueError
        The widths differ, a side is empty, or a value is not finite.
    """
    q, r = as_vectors(synth_vectors, "synth_vectors"), as_vectors(reference_vectors, "reference_vectors")
    check_same_width(synth_vectors=q, reference_vectors=r)
    if block_bytes < 8:
        raise ValueError(f"block_bytes must be ≥ 8, got {block_bytes}")
    return nearest_distances(q, r, block_bytes=block_bytes)


def dcr_membership_auroc(synth: Vectors, members: Vectors, holdout: Vectors) -> float:
    """AUROC of a distance-to-closest-synthetic-record membership-inference attack.

    The attacker holds the synthetic cohort and a real record and guesses "member" when
    the record lies close to some synthetic patient — the full black-box attack of Chen
    et al. (2020), "GAN-Leaks: A Taxonomy of Membership Inference Attacks against
    Generative Models", CCS, and synthcity's DCR detector.

    ==================  ===========================================================
    variable            symbol
    ==================  ===========================================================
    ``score_members``   −DCR(xᵢ → S) for training patients xᵢ (positives)
    ``score_holdout``   −DCR(x'ⱼ → S) for held-out patients x'ⱼ (negatives)
    result              AUROC = P(score⁺ > score⁻) + ½ P(score⁺ = score⁻)
    ==================  ===========================================================

    1. Score every member and holdout record by minus its DCR to the synthetic set.
    2. AUROC of members (positives) against holdout (negatives), ties counted as ½.

    Parameters
    ----------
    synth, members, holdout
        float [n_s, D], [n_m, D], [n_h, D] patient vectors, or cohorts.

    Returns
    -------
    float
        0.5: members are no closer to the synthetic data than unseen patients (no leak
        this attack can see); 1: every member is closer than every holdout patient.

    Raises
    ------
    ValueError
        As in :func:`dcr`.

    Assumptions
    -----------
    Members and holdout are drawn from the same population; otherwise the AUROC also
    measures the population difference.
    """
    s = as_vectors(synth, "synth")
    m, h = as_vectors(members, "members"), as_vectors(holdout, "holdout")
    check_same_width(synth=s, members=m, holdout=h)
    # 1. attacker's scores
    score_members = -nearest_distances(m, s)
    score_holdout = -nearest_distances(h, s)
    # 2. AUROC, members positive
    return auroc(score_members, score_holdout)


def exact_copy_share(synth: Vectors, members: Vectors, *, decimals: int = 6) -> float:
    """Share of synthetic patients whose vector equals some member's vector exactly.

    Vectors are compared after rounding to ``decimals`` places (default 1e-6, below the
    resolution of any standardized lab), so −0.0 and tiny round-off do not hide a copy.
    It is rounding, not a tolerance: two values a hair apart on either side of a rounding
    boundary stay different. Patient vectors are float32 on both sides, so a verbatim copy
    is bitwise equal anyway; near-copies are what the DCR percentiles are for.

    Parameters
    ----------
    synth, members
        float [n_s, D] and [n_m, D] patient vectors, or cohorts.
    decimals
        Rounding before comparison (≥ 0).

    Returns
    -------
    float
        In [0, 1]; 0 is what a private generator should give. Compare with the same share
        against a holdout set: coarse features (no events, same sex and age) can make
        distinct patients equal.

    Raises
    ------
    ValueError
        As in :func:`dcr`, or ``decimals`` < 0.
    """
    s, m = as_vectors(synth, "synth"), as_vectors(members, "members")
    check_same_width(synth=s, members=m)
    if decimals < 0:
        raise ValueError(f"decimals must be ≥ 0, got {decimals}")
    # + 0.0 turns −0.0 into 0.0, which would otherwise hash differently
    known = {row.tobytes() for row in np.round(m, decimals) + 0.0}
    copies = sum(row.tobytes() in known for row in np.round(s, decimals) + 0.0)
    return copies / s.shape[0]


def dcr_percentiles(
    synth: Vectors,
    members: Vectors,
    holdout: Vectors | None = None,
    *,
    percentiles: Sequence[float] = (5.0, 50.0),
) -> dict[str, float]:
    """DCR percentiles of synthetic→members, with holdout→members as the baseline.

    A held-out real patient's distance to the training set is what "a new patient from
    the same population" looks like. Synthetic patients systematically closer to the
    training set than that (a low 5th percentile especially) suggests memorisation
    (the DCR baseline of synthcity; Zhao et al. 2021). Both use the same reference set,
    so the percentiles compare even when the query counts differ.

    Parameters
    ----------
    synth, members
        float [n_s, D] and [n_m, D] patient vectors, or cohorts.
    holdout
        float [n_h, D] or a cohort; without it only the synthetic percentiles are given.
    percentiles
        Percentiles in [0, 100].

    Returns
    -------
    dict[str, float]
        ``synth_to_members_p{q}`` and, with a holdout, ``holdout_to_members_p{q}`` for each
        q (``p5``, ``p50``; a fractional q keeps its decimals, e.g. ``p2.5``).

    Raises
    ------
    ValueError
        As in :func:`dcr`, or a percentile outside [0, 100].
    """
    qs = [float(q) for q in percentiles]
    if not qs or not all(0.0 <= q <= 100.0 for q in qs):
        raise ValueError(f"percentiles must be values in [0, 100], got {percentiles!r}")
    m = as_vectors(members, "members")
    sides = {"synth_to_members": as_vectors(synth, "synth")}
    if holdout is not None:
        sides["holdout_to_members"] = as_vectors(holdout, "holdout")
    check_same_width(members=m, **sides)
    out: dict[str, float] = {}
    for name, queries in sides.items():
        d = nearest_distances(queries, m)
        for q in qs:
            out[f"{name}_p{q:g}"] = float(np.percentile(d, q))
    return out
