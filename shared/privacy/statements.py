"""What a model's privacy guarantee is, in words: the statement model.json and every data card carry.

One place for the three situations a model can come from, so that the guarantee a reader is
told always matches the code path that trained it.
"""

from __future__ import annotations

_RNG = ("Sampling and noise drew from {source} (not Opacus' secure RNG: torchcsprng is not "
        "installable here).")

#: ``raregraph train`` without ``--epsilon`` (and the coordinator's pretraining on public-prior patients)
NON_PRIVATE = (
    "Trained without differential privacy on one site's records: the model and its samples may "
    "reveal information about individual training patients. For internal evaluation only; do not release."
)

#: ``raregraph train --epsilon``: DP-SGD at one site, composed on the site's persistent privacy state
SINGLE_SITE_DP = (
    "Trained on one site's records with DP-SGD (Poisson sampling, per-patient clipping, Gaussian noise); "
    "record-level (ε, δ)-DP, add/remove-one, for the ε recorded here (cumulative for this dataset). "
    "The model and its samples are post-processing. " + _RNG.format(source="a generator seeded with OS entropy")
)

#: a federated run: every site under its own budget, the server's aggregate is post-processing
FEDERATED_DP = (
    "Each site trained with DP-SGD (Poisson sampling, per-patient clipping, Gaussian noise) under its own "
    "(ε, δ) budget; the guarantee is record-level per site, add/remove-one. Aggregation, this model and "
    "its samples are post-processing. Site patient counts and training losses were shared in the clear. "
    + _RNG.format(source="generators seeded with OS entropy at each site")
)

#: what model.json and every data card say about a model federated without DP (every site reported ε = ∞:
#: ``federate --epsilon inf``), instead of :data:`FEDERATED_DP`
NON_PRIVATE_FEDERATED = (
    "Trained federated without differential privacy (plain SGD at every site: no clipping, no noise): the model "
    "and its samples may reveal information about individual training patients. A reference for evaluation only; "
    "do not release."
)

#: appended to :data:`FEDERATED_DP` when at least one site released its disease histogram
FEDERATED_DISEASE_MIX_DP = (
    "The disease mix synthetic patients are drawn in is the sum of the sites' disease histograms, each released "
    "once with Gaussian noise (L2 sensitivity 1: one disease per patient) and charged to that site's budget; "
    "sites that declined count as a uniform mix over their patient count."
)

#: appended to :data:`FEDERATED_DP` when no site released its disease histogram
FEDERATED_DISEASE_MIX_UNIFORM = (
    "No site released its disease mix: synthetic patients are drawn uniformly over the study diseases."
)
