"""The generative model: a knowledge-guided continuous-time diffusion model of patient trajectories.

Modules, in the order a patient passes through them:

- :mod:`~shared.model.layout`: trajectory tensors ↔ flat model vectors, and the knowledge
  (priors, frequencies, the feature graph) the model reads from the bundle;
- :mod:`~shared.model.schedule`: the per-feature noise schedule λ_j(t | d) = λ(t) + γ·z_{d,j};
- :mod:`~shared.model.denoiser`: the network (and its inference-only twin for sampling);
- :mod:`~shared.model.training`: the loss and the optimisation step;
- :mod:`~shared.model.fit`: a whole training, with or without DP-SGD;
- :mod:`~shared.model.checkpoint`: the model folder (this package's file names below);
- :mod:`~shared.model.sampling`: the DDIM sampling loop;
- :mod:`~shared.model.generation`: synthetic patients as OMOP tables with a data card;
- :mod:`~shared.model.cli`: ``raregraph train`` and ``raregraph generate``.

Importing the package itself imports no torch: it only names the model folder's files.
"""

#: A model folder (``raregraph train --out``, ``RUN/model``): what :mod:`~shared.model.checkpoint` writes.
META_FILE = "model.json"  # format, architecture, schedule, guidance, bundle sha256, training, privacy
WEIGHTS_FILE = "weights.pt"  # the EMA weights, a plain state_dict
LOSSES_FILE = "training.json"  # the loss of every step
