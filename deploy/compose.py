"""``raregraph deploy compose``: a consortium folder for the container images, one coordinator
and N hospitals, ready for ``docker-compose up`` (Debian's 1.29 or Compose v2).

What it writes under ``OUT`` (container paths after the arrow; ``:ro`` read-only)::

    compose.yaml
    certs/ca.crt, superlink.crt, superlink.key       → coordinator /certs/… :ro (ca.crt also to sites)
    certs/ca.key                                     stays here: never mounted
    certs/supernode-auth/<site>.key / .pub           → the site's /keys/auth.key :ro; the coordinator registers the .pub
    coordinator/keys/coordinator.key                 stays here: signs bundles, never mounted
    coordinator/keys/coordinator.pub, bundle/        → /bundle :ro
    coordinator/run-config.toml                      → /config/run-config.toml :ro
    coordinator/state/                               → /state   (SuperLink database, flwr CLI connection)
    coordinator/runs/                                → /runs    (run folder: checkpoint, ledgers, model)
    sites/<site>/site.toml                           → /config/site.toml :ro (every option commented)
    sites/<site>/keys/site.key, site.pub, coordinator.pub → /keys :ro
    sites/<site>/data/                               → /data :ro (simulated sites' OMOP tables)
    sites/<site>/state/                              → /state   (privacy accountant, ledger, bundle cache)

Every service uses the host's network (``network_mode: host``): the SuperLink listens on
``--port``, each SuperNode dials ``SUPERLINK_HOST:PORT`` and keeps its Runtime API and its
health service on ports of its own. The containers run as UID/GID 10001 with a read-only root
filesystem and a tmpfs ``/tmp``; run as root, this command gives the state folders and the
private keys to 10001 (otherwise it says which ``chown`` to run).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from client.config import NodeConfig
from deploy import flower
from deploy.certs import make_certs
from deploy.images import image_tag
from deploy.local import simulate_sites
from kg.embedded import make_embedded_bundle
from server.config import RunConfig
from shared.errors import ConfigError, OutputExistsError
from shared.privacy.settings import DEFAULT_CLIP_NORM
from shared.signing.keys import new_keypair

Step = Callable[[str], None]
UID = GID = 10001  # the images' user (deploy/Dockerfile)
EXAMPLE = Path(__file__).with_name("site.example.toml")
CONNECTION = flower.CONNECTION


@dataclass(frozen=True)
class ComposeLayout:
    """What :func:`write_compose` wrote."""

    out: Path
    compose_file: Path
    sites: list[str]
    superlink_port: int
    health_ports: dict[str, int]  # service → its health service's port
    run_dir: Path  # the run folder on the host (coordinator/runs/run)

    def site_state(self, site: str) -> Path:
        return self.out / "sites" / site / "state"


def example_comments(path: Path = EXAMPLE) -> dict[str, str]:
    """key → the comment of its line in ``deploy/site.example.toml``."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r'^([a-z-]+)\s*=\s*.*?#\s*(.+)$', line)
        if m:
            out[m[1]] = m[2].strip()
    return out


def commented_node_config(node: NodeConfig) -> str:
    """The node config as TOML, each key with its explanation from ``site.example.toml``."""
    comments = example_comments()
    missing = sorted(set(node.as_mapping()) - set(comments))
    if missing:
        raise ConfigError(f"{EXAMPLE} explains no {missing[0]!r}: add it there")
    lines = [f"# {node.site_id}'s SuperNode configuration (flower-supernode --node-config /config/site.toml).",
             "# Paths are as the hospital container sees them (compose.yaml's volumes).", ""]
    for key, value in node.as_mapping().items():
        lines.append(f"{flower.toml_table({key: value}).strip():<44} # {comments[key]}")
    return "\n".join(lines) + "\n"


def _own(path: Path) -> None:
    """Give ``path`` (and what is under it) to the images' user when this process may (root)."""
    if os.geteuid() == 0:
        for p in [path, *(path.rglob("*") if path.is_dir() else ())]:
            os.chown(p, UID, GID)


def _public(path: Path) -> None:
    """Make ``path`` (public: the signed bundle) readable by everyone, the images' user included."""
    for p in [path, *(path.rglob("*") if path.is_dir() else ())]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def write_compose(out: Path, *, sites: int, superlink_host: str = "127.0.0.1", port: int = flower.SUPERLINK_PORT,
                  first_port: int | None = None, epsilon: float, delta: float = 1e-5,
                  clip_norm: float = DEFAULT_CLIP_NORM, batch_size: int = 32, noise_multiplicity: int = 2,
                  rounds: int = 3, local_steps: int = 20, pretrain_steps: int = 200, pretrain_patients: int = 3000,
                  min_sites: int | None = None, round_timeout: float = 600.0, seed: int = 0, min_patients: int = 30,
                  max_patients: int = 120, version: str | None = None, project: str = "raregraph",
                  step: Step = lambda _: None) -> ComposeLayout:
    """Write the consortium folder (see the module doc); simulated hospitals' data.

    ``first_port``: the SuperNodes' Runtime API and the health services take ports from here
    on [default: ``port + 10``].

    Raises
    ------
    OutputExistsError
        ``out`` exists and is not empty.
    """
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out}: already exists and is not empty; choose another --out")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    coordinator = out / "coordinator"
    made = make_embedded_bundle(coordinator, step=step)
    names = [f"site-{k}" for k in range(1, sites + 1)]
    step(f"data: simulating {sites} hospitals")
    simulated = simulate_sites(out / "simulated", made.bundle, made.pub, sites=sites, seed=seed,
                                min_patients=min_patients, max_patients=max_patients, site_format=None)
    step("keys: CA, SuperLink certificate, SuperNode auth keys, site ledger keys")
    certs = make_certs(out / "certs", superlink_host=superlink_host, sites=names, loopback=True)
    next_port = first_port or port + 10
    health: dict[str, int] = {"superlink": next_port}
    next_port += 1
    services: dict[str, dict] = {}
    site_keys = coordinator / "runs" / "run" / "site-keys"
    site_keys.mkdir(parents=True)
    for name, data in zip(names, simulated):
        folder = out / "sites" / name
        (folder / "keys").mkdir(parents=True)
        shutil.move(str(data), folder / "data")
        new_keypair(folder / "keys" / "site")
        shutil.copyfile(made.pub, folder / "keys" / "coordinator.pub")
        shutil.copyfile(folder / "keys" / "site.pub", site_keys / f"{name}.pub")
        (folder / "state").mkdir()
        node = NodeConfig(site_id=name, data_path=Path("/data"), state_path=Path("/state"),
                          coordinator_pub=Path("/keys/coordinator.pub"), site_key=Path("/keys/site.key"),
                          epsilon=epsilon, delta=delta, clip_norm=clip_norm, batch_size=batch_size,
                          noise_multiplicity=noise_multiplicity)
        (folder / "site.toml").write_text(commented_node_config(node))
        for secret in (folder / "keys" / "site.key", certs.site_keys[name][0]):
            _own(secret)
        _own(folder / "state")
        _own(folder / "data")  # the patients' data: readable by the site's container user only
        runtime_port, health[name] = next_port, next_port + 1
        next_port += 2
        argv = flower.supernode_argv(superlink=f"{superlink_host}:{port}", root_cert=Path("/certs/ca.crt"),
                                     auth_key=Path("/keys/auth.key"), node_config=Path("/config/site.toml"),
                                     port=runtime_port)
        services[name] = _service("hospital", version, argv[1:] + [f"--health-server-address=127.0.0.1:{health[name]}"],
                                  health[name], [
            "./certs/ca.crt:/certs/ca.crt:ro",
            f"./certs/supernode-auth/{name}.key:/keys/auth.key:ro",
            f"./sites/{name}/keys/site.key:/keys/site.key:ro",
            f"./sites/{name}/keys/coordinator.pub:/keys/coordinator.pub:ro",
            f"./sites/{name}/site.toml:/config/site.toml:ro",
            f"./sites/{name}/data:/data:ro",
            f"./sites/{name}/state:/state"])
    shutil.rmtree(out / "simulated")
    run = RunConfig(run_dir=Path("/runs/run"), bundle_path=Path("/bundle/bundle"),
                    bundle_pub=Path("/bundle/keys/coordinator.pub"), rounds=rounds, local_steps=local_steps,
                    pretrain_steps=pretrain_steps, pretrain_patients=pretrain_patients, seed=seed,
                    min_sites=sites if min_sites is None else min_sites, round_timeout=round_timeout,
                    site_keys=Path("/runs/run/site-keys"))
    (coordinator / "run-config.toml").write_text(
        "# the federation's run config: flwr run /app raregraph --run-config /config/run-config.toml\n"
        + flower.toml_table(run.as_mapping()))
    for sub in ("state", "runs"):
        (coordinator / sub).mkdir(exist_ok=True)
    flower.write_connection(coordinator / "state" / "flwr-home", address=f"127.0.0.1:{port}",
                            root_cert=Path("/certs/ca.crt"), name=CONNECTION)
    for path in (coordinator / "state", coordinator / "runs", certs.server_key):
        _own(path)
    _public(made.bundle)
    argv = flower.superlink_argv(ca_cert=Path("/certs/ca.crt"), server_cert=Path("/certs/superlink.crt"),
                                 server_key=Path("/certs/superlink.key"), database=Path("/state/superlink.db"),
                                 host="0.0.0.0", port=port)
    superlink = _service("coordinator", version, argv[1:] + [f"--health-server-address=127.0.0.1:{health['superlink']}"],
                         health["superlink"], [
        "./certs/ca.crt:/certs/ca.crt:ro",
        "./certs/superlink.crt:/certs/superlink.crt:ro",
        "./certs/superlink.key:/certs/superlink.key:ro",
        "./certs/supernode-auth:/certs/supernode-auth:ro",
        "./coordinator/bundle:/bundle/bundle:ro",
        "./coordinator/keys/coordinator.pub:/bundle/keys/coordinator.pub:ro",
        "./coordinator/run-config.toml:/config/run-config.toml:ro",
        "./coordinator/state:/state",
        "./coordinator/runs:/runs"])
    compose = {"version": "2.4", "services": {"superlink": superlink,
                                             **{n: {**s, "depends_on": ["superlink"]} for n, s in services.items()}}}
    compose_file = out / "compose.yaml"
    compose_file.write_text(_HEADER.format(project=project, sites=sites, connection=CONNECTION)
                            + yaml.safe_dump(compose, sort_keys=False, width=120))
    step(f"compose: {compose_file}")
    return ComposeLayout(out=out, compose_file=compose_file, sites=names, superlink_port=port, health_ports=health,
                         run_dir=coordinator / "runs" / "run")


def _service(target: str, version: str | None, command: list[str], health_port: int, volumes: list[str]) -> dict:
    return {"image": image_tag(target, version), "network_mode": "host", "read_only": True,
            "tmpfs": ["/tmp"], "user": f"{UID}:{GID}", "restart": "unless-stopped",
            "environment": {"RAREGRAPH_HEALTH": f"127.0.0.1:{health_port}"},
            "command": command, "volumes": volumes}


_HEADER = """\
# A RareGraph-Synth consortium: one coordinator (superlink) and {sites} hospitals, TLS and
# SuperNode authentication on, written by `raregraph deploy compose`. In a real consortium
# each hospital runs only its own service, on its own host. Runs with docker-compose 1.29
# and Compose v2 (`docker compose`); every service uses the host's network.
#
#   docker-compose -p {project} up -d superlink
#   docker-compose -p {project} exec -T superlink flwr supernode register /certs/supernode-auth/site-1.pub {connection} --name site-1
#     (once per site; the node ids survive restarts in the SuperLink's database on ./coordinator/state)
#   docker-compose -p {project} up -d
#   docker-compose -p {project} ps                       # health: starting -> healthy
#   docker-compose -p {project} exec -T superlink flwr run /app {connection} --run-config /config/run-config.toml
#   docker-compose -p {project} exec -T superlink flwr ls {connection}
#   docker-compose -p {project} logs -f site-1
#   docker-compose -p {project} exec -T superlink raregraph audit /runs/run/ledger --keys /runs/run/site-keys --out /runs/audit
#   docker-compose -p {project} down
"""
