"""Evaluation of a synthetic cohort against real data: fidelity (MMD² on patients and
windows, prevalence, co-occurrence and transition agreement, lab W1, a real-vs-synthetic
discriminator), utility (TSTR vs TRTR), plausibility against the study bundle, privacy
(DCR, membership inference, DOMIAS, attribute disclosure, NNAA, exact copies) and the report
that bundles them. See DESIGN.md, "Evaluation"."""

from shared.evaluation.attacks import (
    AttributeDisclosure,
    DomiasResult,
    NNAAResult,
    attribute_disclosure,
    domias_auroc,
    nnaa,
)
from shared.evaluation.detection import DiscriminatorResult, discriminator_auroc
from shared.evaluation.fidelity import (
    Agreement,
    LabWasserstein,
    MMDResult,
    cooccurrence_r2,
    lab_wasserstein,
    mmd2_unbiased,
    prevalence,
    prevalence_r2,
    window_vectors,
)
from shared.evaluation.plausibility import GraphKnowledge, plausibility
from shared.evaluation.dcr import dcr, dcr_membership_auroc, dcr_percentiles, exact_copy_share
from shared.evaluation.suite import evaluate, write_report
from shared.evaluation.stats import auroc
from shared.evaluation.temporal import transition_probabilities, transition_r2
from shared.evaluation.utility import TaskResult, tstr_trtr

__all__ = [
    "Agreement", "AttributeDisclosure", "DiscriminatorResult", "DomiasResult", "GraphKnowledge", "LabWasserstein",
    "MMDResult", "NNAAResult", "TaskResult", "attribute_disclosure", "auroc", "cooccurrence_r2", "dcr",
    "dcr_membership_auroc", "dcr_percentiles", "discriminator_auroc", "domias_auroc", "evaluate", "exact_copy_share",
    "lab_wasserstein", "mmd2_unbiased", "nnaa", "plausibility", "prevalence", "prevalence_r2",
    "transition_probabilities", "transition_r2", "tstr_trtr", "window_vectors", "write_report",
]
