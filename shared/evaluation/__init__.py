"""Evaluation of a synthetic cohort against real data: fidelity (MMD², prevalence and
co-occurrence agreement, lab W1), privacy (DCR, membership-inference AUROC, exact copies)
and the report that bundles them. See DESIGN.md, "Evaluation"."""

from shared.evaluation.fidelity import (
    Agreement,
    LabWasserstein,
    MMDResult,
    cooccurrence_r2,
    lab_wasserstein,
    mmd2_unbiased,
    prevalence,
    prevalence_r2,
)
from shared.evaluation.privacy import dcr, dcr_membership_auroc, dcr_percentiles, exact_copy_share
from shared.evaluation.report import evaluate, write_report
from shared.evaluation.stats import auroc

__all__ = [
    "Agreement", "LabWasserstein", "MMDResult", "auroc", "cooccurrence_r2", "dcr", "dcr_membership_auroc",
    "dcr_percentiles", "evaluate", "exact_copy_share", "lab_wasserstein", "mmd2_unbiased", "prevalence",
    "prevalence_r2", "write_report",
]
