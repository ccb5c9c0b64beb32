"""A simulated site's node config for ``flwr run .`` on Flower's simulation engine.

Flower 1.41's simulation engine gives every virtual SuperNode a node config of only
``partition-id`` and ``num-partitions`` (``flwr/server/superlink/fleet/vce/vce_api.py``); there
is no way to hand it per-node settings. A simulated site therefore derives its hospital facts
from its partition id and the run config, which every node sees:

- its data: the ``k``-th site of ``simulation.sites-dir`` (site folders and ``.duckdb`` CDM
  files, sorted by name: what ``raregraph data simulate`` or ``raregraph demo`` wrote), or,
  with no such folder, site ``k + 1`` of the consortium simulated from the study bundle with
  ``train.seed`` (deterministic per partition: site k does not depend on how many are
  simulated), written once to ``RUN/state/site-<k+1>/simulated-data``;
- its privacy state and ledger key: ``RUN/state/<site-id>/`` (the key is made on first use and
  its public half copied to ``RUN/site-keys/<site-id>.pub``, as ``raregraph federate`` does);
- the coordinator key it pins: the run config's ``bundle.pub``;
- its budget, sampling and disease-mix noise: the ``simulation.*`` run-config keys below.

This is for one machine only (the coordinator's paths are the sites' paths). A real site
never gets here: its SuperNode's ``--node-config`` holds ``site-id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from client.config import NodeConfig
from shared.atomic import write_bytes_atomic
from shared.errors import ConfigError
from shared.runs import RunFolder
from shared.signing.keys import new_keypair

PARTITION_ID = "partition-id"  # flwr.common.constant.PARTITION_ID_KEY
NUM_PARTITIONS = "num-partitions"  # flwr.common.constant.NUM_PARTITIONS_KEY
PREFIX = "simulation."
#: run-config key → (field, type, default); the defaults match [tool.flwr.app.config]
KEYS: dict[str, tuple[str, type, object]] = {
    "simulation.sites-dir": ("sites_dir", str, ""),  # folder of site folders / .duckdb files ("": simulate each site)
    "simulation.epsilon": ("epsilon", float, 8.0),  # each simulated site's lifetime ε
    "simulation.delta": ("delta", float, 1e-5),  # each simulated site's δ
    "simulation.batch-size": ("batch_size", int, 32),  # expected Poisson batch per site
    "simulation.noise-multiplicity": ("noise_multiplicity", int, 2),  # diffusion noise draws per patient and step
    "simulation.min-patients": ("min_patients", int, 30),  # smallest simulated site (no sites-dir)
    "simulation.max-patients": ("max_patients", int, 120),  # largest simulated site (no sites-dir)
    # σ of each simulated site's one disease-mix release (0: the sites decline it)
    "simulation.histogram-noise-multiplier": ("histogram_noise_multiplier", float, 0.0),
    # σ of each simulated site's one vocabulary-survey release (survey.run = true; 0: the sites decline it)
    "simulation.survey-noise-multiplier": ("survey_noise_multiplier", float, 0.0),
}
NEEDS = ("run-dir", "bundle.path", "bundle.pub")  # run-config paths a simulated site reads (absolute)
MISSING = ("node config has no 'site-id' and the run config does not describe simulated sites: a real site sets "
           "its facts with `flower-supernode --node-config`; `flwr run .` on the simulation engine needs absolute "
           "{keys} in --run-config")


def is_simulated(node_config: dict) -> bool:
    """A virtual SuperNode of Flower's simulation engine: a partition id and no site id."""
    return "site-id" not in node_config and PARTITION_ID in node_config


@dataclass(frozen=True)
class SimulatedSites:
    """What every simulated site reads from the run config (parsed once per message)."""

    run_dir: Path  # the coordinator's run folder; sites keep their state under RUN/state
    bundle_path: Path  # the study bundle (simulating data on the fly reads its public knowledge)
    bundle_pub: Path  # the coordinator key every simulated site pins
    seed: int = 0  # train.seed: the simulated consortium's seed
    sites_dir: Path | None = None  # site folders, or None: simulate each site
    epsilon: float = 8.0  # lifetime ε per site
    delta: float = 1e-5  # δ per site
    batch_size: int = 32  # expected Poisson batch
    noise_multiplicity: int = 2  # diffusion noise draws per patient and step
    min_patients: int = 30  # bounds of a simulated site's size (log-uniform)
    max_patients: int = 120
    histogram_noise_multiplier: float = 0.0  # σ of the disease-mix release (0: declined)
    survey_noise_multiplier: float = 0.0  # σ of the vocabulary-survey release (0: declined)

    def __post_init__(self) -> None:
        if not 1 <= self.min_patients <= self.max_patients:
            raise ConfigError(f"simulation.min-patients must be in [1, simulation.max-patients], got "
                              f"{self.min_patients} and {self.max_patients}")

    @classmethod
    def from_run_config(cls, values: dict) -> SimulatedSites:
        """Parse the run config's paths, ``train.seed`` and ``simulation.*`` keys.

        Raises
        ------
        ConfigError
            A path unset or relative, an unknown ``simulation.*`` key, or a wrong type.
        """
        missing = [k for k in NEEDS if not str(values.get(k, "")) or not Path(str(values[k])).is_absolute()]
        if missing:
            raise ConfigError(MISSING.format(keys=", ".join(missing)))
        unknown = sorted(k for k in values if k.startswith(PREFIX) and k not in KEYS)
        if unknown:
            raise ConfigError(f"unknown run config key {unknown[0]!r}; known: {', '.join(KEYS)}")
        parsed: dict = {}
        for key, (name, kind, _) in KEYS.items():
            if key not in values:
                continue
            value = values[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"run config {key!r} must be {kind.__name__}, got {value!r}")
            parsed[name] = value
        sites_dir = parsed.pop("sites_dir", "")
        return cls(run_dir=Path(values["run-dir"]), bundle_path=Path(values["bundle.path"]),
                   bundle_pub=Path(values["bundle.pub"]), seed=int(values.get("train.seed", 0)),
                   sites_dir=Path(sites_dir) if sites_dir else None, **parsed)


def simulated_node(run_config: dict, node_config: dict) -> NodeConfig:
    """The node config of the simulated site at ``node_config``'s partition.

    Parameters
    ----------
    run_config
        The run's config (``context.run_config``): ``run-dir``, ``bundle.path``, ``bundle.pub``
        (absolute), ``train.seed`` and the ``simulation.*`` keys.
    node_config
        The simulation engine's ``partition-id`` and ``num-partitions``.

    Returns
    -------
    NodeConfig
        Site ``site-<k+1>`` (or the k-th folder's name) with its state under ``RUN/state``.

    Raises
    ------
    ConfigError
        Settings missing or wrong, or fewer sites in ``simulation.sites-dir`` than partitions.
    """
    sites = SimulatedSites.from_run_config(run_config)
    partition, partitions = int(node_config[PARTITION_ID]), int(node_config.get(NUM_PARTITIONS, 1))
    run = RunFolder(sites.run_dir)
    if sites.sites_dir is not None:
        found = sorted(p for p in sites.sites_dir.glob("*") if p.is_dir() or p.suffix == ".duckdb")
        if len(found) < partitions:
            raise ConfigError(f"simulation.sites-dir {sites.sites_dir} holds {len(found)} sites for {partitions} "
                              "simulated SuperNodes (flwr run . --federation-config 'num-supernodes=N')")
        data, site_id = found[partition], found[partition].stem
    else:
        site_id = f"site-{partition + 1}"
        data = _simulate(sites, partition, run.state / site_id / "simulated-data") / site_id
    state = (run.state / site_id).resolve()
    key = state / "identity" / "site.key"
    if not key.exists():
        new_keypair(key.with_suffix(""))
    published = run.site_keys / f"{site_id}.pub"
    if not published.exists() or published.read_bytes() != key.with_suffix(".pub").read_bytes():
        published.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(published, key.with_suffix(".pub").read_bytes())
    from shared.simulation.consortium import SITE_SCHEMA

    where = ({"cdm_url": f"duckdb:///{data.resolve()}", "cdm_schema": SITE_SCHEMA} if data.suffix == ".duckdb"
             else {"data_path": data.resolve()})
    return NodeConfig(site_id=site_id, state_path=state, coordinator_pub=sites.bundle_pub, site_key=key,
                      epsilon=sites.epsilon, delta=sites.delta, batch_size=sites.batch_size,
                      noise_multiplicity=sites.noise_multiplicity, threads=1,
                      histogram_noise_multiplier=sites.histogram_noise_multiplier,
                      survey_noise_multiplier=sites.survey_noise_multiplier, **where)


def _simulate(sites: SimulatedSites, partition: int, folder: Path) -> Path:
    """Write site ``partition + 1`` of the seeded consortium to ``folder`` once; ``folder``."""
    if folder.is_dir():
        return folder
    from shared.bundle import StudyBundle
    from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium, write_consortium

    knowledge = knowledge_from_bundle(StudyBundle.load(sites.bundle_path, sites.bundle_pub))
    # site k's stream does not depend on how many sites are simulated: simulate only up to k
    result = simulate_consortium(knowledge, sites=partition + 1, seed=sites.seed, min_patients=sites.min_patients,
                                 max_patients=sites.max_patients)
    write_consortium(result[partition:], folder)
    return folder
