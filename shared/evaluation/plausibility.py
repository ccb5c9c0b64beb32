"""Plausibility: does a cohort agree with public medical knowledge?

Checks against the study bundle (its meta-path scores, NOT annotations and prior graph)
and a few facts of anatomy and physiology. Each check is a share of counted items, so
the real cohort's value is the baseline: real records are not perfectly plausible
either (coding noise, phenotypes the graph does not know yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.bundle import StudyBundle
from shared.model.constraints import HardFacts, vocabulary_columns
from shared.trajectories.tensors import TrajectoryTensors

@dataclass(frozen=True)
class GraphKnowledge:
    """Bundle knowledge aligned to a cohort's columns (B binary features, L labs).

    Attributes
    ----------
    supported
        bool [n_diseases, B]: the graph links disease and phenotype: a positive path
        count in some phenotype meta-path the study weights (DhP, DhPiP, DaGhP, …) or an
        annotated frequency. False for other domains.
    negative
        bool [n_diseases, B]: HPO says the disease does NOT have the phenotype.
    drug_effect
        bool [B, B]: [drug column, adverse-event column] has a ``drug_effect`` edge.
    female_only, male_only
        bool [B]: HPO terms of :mod:`shared.model.sex_terms` (phenotype or adverse event).
    lab_mid, lab_half
        float64 [L]: the bundle's reference range as (low + high)/2 and (high − low)/2, to
        turn standardized values back into natural units.
    lab_low_limit, lab_high_limit
        float64 [L]: physiological limits in natural units (−inf / +inf: none).
    """

    supported: np.ndarray
    negative: np.ndarray
    drug_effect: np.ndarray
    female_only: np.ndarray
    male_only: np.ndarray
    lab_mid: np.ndarray
    lab_half: np.ndarray
    lab_low_limit: np.ndarray
    lab_high_limit: np.ndarray

    @classmethod
    def from_bundle(cls, bundle: StudyBundle, like: TrajectoryTensors) -> GraphKnowledge:
        """Read the bundle's knowledge for the columns of ``like``.

        Lab limits: a lab whose reference range lies in [0, ∞) measures a concentration,
        count, activity or rate, which cannot be negative, so its lower limit is 0 (a lab
        with a negative reference low, such as base excess, gets none); upper limits come
        from :data:`shared.model.constraints.PHYSIOLOGICAL_CEILINGS`.

        Raises
        ------
        ValueError
            A column or lab of ``like`` is not in the bundle's vocabulary or lab table,
            or the bundle has no phenotype path counts.
        """
        facts = HardFacts.from_bundle(bundle, like)  # the facts the sampler keeps, defined once
        cols = vocabulary_columns(bundle, like)
        pheno = np.asarray(like.binary_domains) == "phenotype"
        support = np.isfinite(bundle.frequency)
        phenotype_paths = [name for name, meta in bundle.manifest.get("metapaths", {}).items()
                           if meta.get("domain") == "phenotype" and meta.get("weight", 0) > 0]
        if not phenotype_paths and not support.any():
            raise ValueError("the bundle has neither phenotype meta-path scores nor annotated frequencies")
        for name in phenotype_paths:
            support = support | (bundle.scores(name, metric="pc").toarray() > 0)
        return cls(supported=support[:, cols] & pheno[None, :], negative=facts.negative,
                   drug_effect=facts.drug_effect, female_only=facts.female_only, male_only=facts.male_only,
                   lab_mid=facts.lab_mid, lab_half=facts.lab_half, lab_low_limit=facts.lab_low_limit,
                   lab_high_limit=facts.lab_high_limit)


def disease_phenotype_pairs(t: TrajectoryTensors, knowledge: GraphKnowledge) -> dict[str, float]:
    """Shares of a cohort's disease–phenotype pairs that the graph supports or negates.

    A pair is (patient p, phenotype column j) with j present in some window of p, taken
    with p's disease d; each patient counts a phenotype once.

    Returns
    -------
    dict
        ``phenotype_pairs`` (count), ``phenotype_pairs_supported`` (share with
        ``supported[d, j]``; compare with the real patients' share, 0.84–0.89 on simulated
        sites; the release gate asks ≥ 0.80) and ``phenotype_pairs_negated`` (share with
        ``negative[d, j]``: the graph says NOT; target 0). NaN shares without pairs.

    Raises
    ------
    ValueError
        A disease row is outside the bundle's disease table.
    """
    _check_diseases(t, knowledge)
    present = (t.events > 0.5).any(axis=1)  # [N, B]
    is_pheno = np.asarray(t.binary_domains) == "phenotype"
    rows, cols = np.nonzero(present & is_pheno[None, :])
    d = t.disease[rows]
    n = rows.size
    return {"phenotype_pairs": n,
            "phenotype_pairs_supported": _share(knowledge.supported[d, cols].sum(), n),
            "phenotype_pairs_negated": _share(knowledge.negative[d, cols].sum(), n)}


def drug_adverse_events(t: TrajectoryTensors, knowledge: GraphKnowledge) -> dict[str, float]:
    """Adverse events against the drugs before them.

    An occurrence is (patient p, adverse-event column a) with a present in some window;
    k_a is its first window and k_drug p's first window with any drug.

    Returns
    -------
    dict
        ``adverse_events`` (occurrences), ``adverse_events_with_drug_signal`` (share whose
        patient has a drug g present in a window ≤ k_a with a ``drug_effect`` edge g → a)
        and ``adverse_events_before_any_drug`` (share with no drug in any window ≤ k_a).
        NaN shares without occurrences.
    """
    domains = np.asarray(t.binary_domains)
    drugs, events = np.flatnonzero(domains == "drug"), np.flatnonzero(domains == "adverse_event")
    present = t.events > 0.5
    t_len = t.windows
    ae = present[:, :, events]  # [N, T, A]
    rows, a = np.nonzero(ae.any(axis=1))
    first_ae = ae[rows, :, a].argmax(axis=1)  # [occurrences]
    steps = np.arange(t_len)
    # drugs present up to each occurrence's first window: [occurrences, G]
    drug_on = present[rows][:, :, drugs] & (steps[None, :] <= first_ae[:, None])[:, :, None]
    taken = drug_on.any(axis=1)
    signal = (taken & knowledge.drug_effect[drugs][:, events].T[a]).any(axis=1)
    n = rows.size
    return {"adverse_events": n,
            "adverse_events_with_drug_signal": _share(signal.sum(), n),
            "adverse_events_before_any_drug": _share((~taken.any(axis=1)).sum(), n)}


def wrong_sex(t: TrajectoryTensors, knowledge: GraphKnowledge) -> dict[str, float]:
    """Patients with a term only the other sex can have (:mod:`shared.model.sex_terms`).

    Returns
    -------
    dict
        ``sex_specific_columns`` (how many columns the check can see; 0 makes the share
        trivially 0) and ``wrong_sex_patients``: share of patients, male (sex 1) with a
        female-only term or female (sex 0) with a male-only term, in any window.
    """
    present = (t.events > 0.5).any(axis=1)
    male = t.sex > 0.5
    bad = np.where(male, present[:, knowledge.female_only].any(axis=1), present[:, knowledge.male_only].any(axis=1))
    return {"sex_specific_columns": int(knowledge.female_only.sum() + knowledge.male_only.sum()),
            "wrong_sex_patients": _share(bad.sum(), t.n)}


def lab_limits(t: TrajectoryTensors, knowledge: GraphKnowledge) -> dict[str, float]:
    """Observed lab values outside physiological limits.

    A value is mid + half·z in the bundle's unit (z the standardized value, observed where
    ``lab_mask`` is 1); it violates when below ``lab_low_limit`` or above ``lab_high_limit``.

    Returns
    -------
    dict
        ``lab_values`` (observed values) and ``lab_values_outside_limits`` (share; NaN
        without observed values).
    """
    observed = t.lab_mask > 0.5
    value = knowledge.lab_mid + knowledge.lab_half * t.labs.astype(np.float64)
    bad = observed & ((value < knowledge.lab_low_limit) | (value > knowledge.lab_high_limit))
    n = int(observed.sum())
    return {"lab_values": n, "lab_values_outside_limits": _share(bad.sum(), n)}


def plausibility(t: TrajectoryTensors, knowledge: GraphKnowledge) -> dict[str, float]:
    """Every check of this module on one cohort, merged into one dict (see each function)."""
    return (disease_phenotype_pairs(t, knowledge) | drug_adverse_events(t, knowledge)
            | wrong_sex(t, knowledge) | lab_limits(t, knowledge))


def _check_diseases(t: TrajectoryTensors, knowledge: GraphKnowledge) -> None:
    """ValueError unless every disease row indexes the bundle's disease table."""
    n = knowledge.supported.shape[0]
    if t.n and (t.disease.min() < 0 or t.disease.max() >= n):
        raise ValueError(f"disease rows must lie in [0, {n}) (the bundle's diseases), "
                         f"got {int(t.disease.min())} … {int(t.disease.max())}")


def _share(count: int | np.integer, n: int) -> float:
    """count / n, NaN when n is 0."""
    return float(count) / n if n else float("nan")
