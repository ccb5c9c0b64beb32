"""The privacy settings that code which runs no mechanism needs: the command line's help and
defaults, and the independent audit's tolerance.

Importing this module imports nothing else (no Opacus, no torch), so a command that only shows
or checks these values loads in a fraction of a second (issue 23).
"""

from __future__ import annotations

#: The site accountants' registered names, sorted: the keys of
#: :data:`shared.privacy.registry.ACCOUNTANTS`, which maps them to the classes (a test checks
#: they agree); written here so that a help text can list them without loading Opacus.
ACCOUNTANT_NAMES: tuple[str, ...] = ("prv", "rdp")

#: Default per-patient clip norm C. The denoiser's per-patient gradient norm, measured on
#: simulated sites from the coordinator's pretrained weights, has median 0.14 (10th–90th
#: percentile 0.07–0.20): with C = 1 clipping never binds and the noise (σ·C) is ~7× larger
#: than it needs to be. At C = 0.1 almost every gradient is clipped, which AdamW's per-
#: coordinate scaling makes harmless; 3 sites at ε = 4 went from prevalence R² −0.45 to 0.13
#: and MMD²_u 0.068 to 0.040 (README, "Choosing the clip norm").
DEFAULT_CLIP_NORM = 0.1

EPS_ERROR = 0.01  # Opacus's default: absolute error allowed in the PRV accountant's numerical ε, added to the bound
