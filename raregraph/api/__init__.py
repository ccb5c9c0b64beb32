"""The Python API: the pipeline's steps as plain functions, the same ones the commands call.

Each function runs one step as its ``raregraph`` command does (the command adds option
parsing, the progress display, printing and exit codes), takes paths as ``str`` or ``Path``,
returns paths or result objects, prints nothing and raises the project's errors
(:mod:`shared.errors`: ``InputError``, ``ConfigError``, ``SignatureError``,
``OutputExistsError``) instead of exiting. Keyword arguments follow the commands' options;
each function's numpy-style docstring gives them with their units and defaults.

=====================  ================================  ====================================
step                   function                          command
=====================  ================================  ====================================
keys                   :func:`new_keys`                  ``raregraph keys new``
the graph              :func:`build_graph`               ``raregraph kg build``
the signed bundle      :func:`make_bundle`               ``raregraph bundle make``
simulated hospitals    :func:`simulate_sites`            ``raregraph data simulate``
a site's export        :func:`validate_site`             ``raregraph data validate``
vocabulary survey      :func:`survey`                    ``raregraph survey``
the grown bundle       :func:`grow_bundle`               ``raregraph bundle grow``
federated DP training  :func:`federate`                  ``raregraph federate`` (``method=`` a baseline;
                                                         ``epsilon=inf`` a no-DP reference)
synthetic patients     :func:`generate`                  ``raregraph generate``
their evaluation       :func:`evaluate`                  ``raregraph evaluate``
the gated release      :func:`release`                   ``raregraph release``
the ledger audit       :func:`audit`                     ``raregraph audit``
=====================  ================================  ====================================

Importing this package loads no torch, Opacus or Flower (issue 23): each function imports
what it drives when it runs.
"""

from raregraph.api.federation import FederationPlan, FederationResult, federate, plan_federation, run_federation
from raregraph.api.knowledge import build_graph, make_bundle, new_keys
from raregraph.api.outputs import ReleaseOutcome, audit, evaluate, generate, release
from raregraph.api.sites import simulate_sites, validate_site
from raregraph.api.survey import SurveyResult, grow_bundle, survey

__all__ = [
    "FederationPlan",
    "FederationResult",
    "ReleaseOutcome",
    "SurveyResult",
    "audit",
    "build_graph",
    "evaluate",
    "federate",
    "generate",
    "grow_bundle",
    "make_bundle",
    "new_keys",
    "plan_federation",
    "release",
    "run_federation",
    "simulate_sites",
    "survey",
    "validate_site",
]
