"""Evaluation of a synthetic cohort against real data: fidelity (MMD² on patients and
windows, prevalence, co-occurrence and transition agreement, lab W1, a real-vs-synthetic
discriminator), utility (TSTR vs TRTR), plausibility against the study bundle, privacy
(DCR, membership inference, DOMIAS, attribute disclosure, NNAA, exact copies) and the report
that bundles them. See DESIGN.md, "Evaluation".

Importing the package imports none of its modules, which need numpy, scipy and torch: import
what you use from its module, e.g. ``from shared.evaluation.fidelity import mmd2_unbiased``.
"""
