"""What a baseline spends at each site, charged to the same persistent privacy state and signed
into the same ledger a federated site keeps (``STATE/<site>/privacy``: ``privacy_state.json``,
``ledger.jsonl``; the site's key ``STATE/<site>/identity/site.key``), so that ε composes across
every method trained on the same dataset and ``raregraph audit`` recomputes it.

Each baseline's mechanism is one a ledger entry records exactly (sample rate, σ, clip norm,
steps; add/remove-one, Poisson sampling), so the audit's independent accountant recomputes the
very ε the site was charged:

============  =====================================================================  ==========
method        mechanism at the site                                                  entry
============  =====================================================================  ==========
marginals     one Gaussian release of bounded sums, L2 sensitivity 1                 q = 1, 1 step,
              (:func:`shared.baselines.marginals.release_site`)                       clip norm 1
dpgan         DP-SGD on the discriminator, Poisson rate q = min(1, batch / n),       q, σ, C,
              per-patient clip norm C (:mod:`shared.baselines.dpgan`)                 rounds × steps
============  =====================================================================  ==========

The ledger's kinds are those of the federation; a baseline's one charge is entered as kind
``train``, round 1 of its run (the mechanism fields say what ran). The graph-priors sampler
reads no patient and charges nothing.

Order, as for a federated round: σ is calibrated for every site against what its budget has
left before anything is fitted (:func:`plan_charges`; a site whose budget cannot cover the fit
stops the run before any site spends), and every site's charge is recorded and signed
(:meth:`SiteCharge.record`) as soon as the fit is done, before the model is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.model.fit import PrivateTraining
from shared.privacy.dp_sgd import Mechanism
from shared.privacy.ledger import Ledger, LedgerEntry, round_key
from shared.privacy.state import PrivacyState
from shared.trajectories.tensors import TrajectoryTensors

RELEASE_CLIP_NORM = 1.0  # marginals: each patient's scaled contribution has L2 norm ≤ 1 (the sensitivity)
ROUND = 1  # a baseline fits once: round 1 of its run


@dataclass(frozen=True)
class BaselineSite:
    """One site of a baseline run, as the site itself holds it."""

    site_id: str  # names its ledger entries and the server's copy RUN/ledger/<site_id>.jsonl
    tensors: TrajectoryTensors  # its patients in the bundle's layout
    fingerprint: str  # the dataset's identity (:func:`shared.ehr.site.data_fingerprint`)
    state_path: Path  # its privacy folder, STATE/<site>/privacy, as a federated site keeps it
    site_key: Path  # its Ed25519 key, which signs the ledger


@dataclass(frozen=True)
class SiteCharge:
    """One site's mechanism for the fit, calibrated against its budget, not yet charged."""

    site: BaselineSite
    mechanism: Mechanism  # σ, q, clip norm
    steps: int  # mechanism applications: 1 for a release, rounds × local steps for DP-SGD
    state: PrivacyState
    ledger: Ledger

    def record(self, *, run_id: str) -> LedgerEntry:
        """Charge the fit to the site's accountant (saved on its disk) and sign it into its
        ledger; call it once the site's release or training is done. Returns the entry."""
        m = self.mechanism
        self.state.record_round(round_id=round_key(run_id, ROUND, "train"), steps=self.steps,
                                noise_multiplier=m.noise_multiplier, sample_rate=m.sample_rate, clip_norm=m.clip_norm,
                                noise_multiplicity=m.noise_multiplicity)
        return self.ledger.append_round(self.state, run_id=run_id, server_round=ROUND)


def plan_charges(sites: Sequence[BaselineSite], *, method: str, epsilon: float, delta: float, run_id: str,
                 steps: int = 1, batch_size: int = 32, clip_norm: float = RELEASE_CLIP_NORM,
                 accountant: str = "rdp") -> list[SiteCharge]:
    """Every site's σ for the fit, against what its persistent budget (ε, δ) has left.

    Parameters
    ----------
    sites
        The sites, each with its patients, dataset fingerprint, privacy folder and key.
    method
        ``marginals`` (one release: q = 1, one step, clip norm 1; ``steps``, ``batch_size`` and
        ``clip_norm`` are not used) or ``dpgan`` (``steps`` discriminator steps at
        q = min(1, ``batch_size`` / n), clip norm ``clip_norm``).
    epsilon, delta
        Each site's lifetime budget for its dataset (a budget changed since the state was made
        is refused unless raised on purpose: :class:`~shared.model.fit.PrivateTraining`).
    run_id
        The run the charges belong to (ledger entries and state round ids).
    accountant
        ``rdp`` or ``prv``.

    Raises
    ------
    ValueError
        An unknown method.
    BudgetExceededError
        A site's budget cannot cover the fit (nothing is charged anywhere).
    LedgerError
        A site's ledger does not verify or disagrees with its state.
    ConfigError
        A bad ε, δ or clip norm.
    """
    if method not in ("marginals", "dpgan"):
        raise ValueError(f"method must be 'marginals' or 'dpgan' (the baselines that read patients), got {method!r}")
    charges = []
    for site in sites:
        n = site.tensors.n
        release = method == "marginals"
        private = PrivateTraining(state_path=site.state_path, fingerprint=site.fingerprint, epsilon=epsilon,
                                  delta=delta, clip_norm=RELEASE_CLIP_NORM if release else clip_norm,
                                  noise_multiplicity=1, accountant=accountant, site_key=site.site_key,
                                  site_id=site.site_id)
        fit_steps = 1 if release else steps
        mechanism, state, ledger = private.prepare(n, steps=fit_steps, batch_size=n if release else batch_size,
                                                   run_id=run_id)
        charges.append(SiteCharge(site=site, mechanism=mechanism, steps=fit_steps, state=state, ledger=ledger))
    return charges


#: what model.json and every data card say about a baseline's guarantee (``None``: fitted without DP)
STATEMENTS = {
    "marginals": ("Each site released its per-disease sums of bounded patient contributions once, with Gaussian "
                  "noise (L2 sensitivity 1), under its own (ε, δ) budget; the guarantee is record-level per site, "
                  "add/remove-one. Pooling the releases, the fitted marginals and their samples are "
                  "post-processing. Noise drew from OS entropy."),
    "dpgan": ("Each site trained the GAN's discriminator with DP-SGD (Poisson sampling, per-patient clipping, "
              "Gaussian noise) under its own (ε, δ) budget; the guarantee is record-level per site, add/remove-one. "
              "The generator learnt only from the DP discriminator; FedAvg, this model and its samples are "
              "post-processing. Site patient counts were shared in the clear. Sampling, noise and fakes drew from a "
              "generator seeded with OS entropy."),
    "prior": ("Drawn from the study bundle's public knowledge alone: no patient record was read, so no privacy "
              "budget was spent."),
    None: ("Fitted without differential privacy on the sites' records: the model and its samples may reveal "
           "information about individual training patients. A reference for evaluation only; do not release."),
}
