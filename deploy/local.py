"""``raregraph deploy local``: a real Flower deployment on one machine, as processes.

For anyone without containers, and for the tests. Everything is real: a ``flower-superlink``
with TLS and SuperNode authentication, one ``flower-supernode`` per hospital with its own
data and state folders, the federation submitted with ``flwr run``. Nothing is simulated
but the hospitals' patients.

1. prepare ``OUT``: the coordinator key and the signed study bundle (or given ones), the
   simulated hospitals' OMOP folders or DuckDB CDM files (or given folders and CDM
   databases), each site's ledger key and state folder, the CA / SuperLink certificate /
   SuperNode auth keys (:mod:`deploy.certs`), one node config per site (``OUT/nodes/<site>.toml``) and the run config
   (``OUT/run-config.toml``);
2. start the SuperLink, register every site's auth key, start the SuperNodes;
3. ``flwr run`` the app; follow the run's checkpoint for progress and ``flwr ls`` for its
   status; the model lands in ``OUT/run/model``;
4. stop everything it started, by process id (also on an error or Ctrl-C).

A site whose CDM is in a database reads it with its node config's ``cdm-url``, ``cdm-schema``
and ``vocabulary-schema``; its password comes from the environment variable the node config
names (``cdm-password-env``) or a file (``cdm-password-file``), never from a node config or a
command line. The launcher passes each such variable from its own environment to that site's
SuperNode only (and so to its ClientApps); the SuperLink, the ServerApp and the ``flwr`` CLI
run without any site's password variable.

Logs: ``OUT/logs/superlink.log``, ``OUT/logs/serverapp.log`` (the run's ServerApp, saved with
``flwr log``) and ``OUT/logs/<site>.log`` (a SuperNode and its ClientApps).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from client.config import NodeConfig
from deploy import flower
from deploy.certs import CertFiles, make_certs
from deploy.processes import ProcessError, ProcessGroup, Started, free_port, wait_for_port
from deploy.simulation import SiteData, publish_site_keys, site_nodes
from kg.embedded import make_embedded_bundle
from server.config import RunConfig
from shared.ehr.cdm_connection import CdmDatabase
from shared.model import META_FILE
from shared.privacy.settings import DEFAULT_CLIP_NORM
from shared.errors import ConfigError, OutputExistsError, RareGraphError
from shared.runs import RunFolder

Step = Callable[[str], None]


class DeploymentError(RareGraphError):
    """The deployed federation failed; the message names the log to read."""


@dataclass(frozen=True)
class PreparedDeployment:
    """Everything :func:`prepare` wrote under ``out``."""

    out: Path
    bundle: Path
    pub: Path
    nodes: dict[str, NodeConfig]  # site → node config (paths absolute)
    node_files: dict[str, Path]  # site → OUT/nodes/<site>.toml
    certs: CertFiles
    run: RunConfig
    run_config_file: Path

    @property
    def logs(self) -> Path:
        return self.out / "logs"


def simulate_sites(out: Path, bundle: Path, pub: Path, *, sites: int, seed: int, min_patients: int,
                    max_patients: int, site_format: str | None) -> list[SiteData]:
    from shared.bundle import StudyBundle
    from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium, site_data, write_consortium

    knowledge = knowledge_from_bundle(StudyBundle.load(bundle, pub))
    write_consortium(simulate_consortium(knowledge, sites=sites, seed=seed, min_patients=min_patients,
                                         max_patients=max_patients), out / "sites",
                     **({"fmt_cycle": (site_format,)} if site_format else {}))
    written = json.loads((out / "sites" / "simulation.json").read_text())["sites"]
    return [site_data(out / "sites" / s["folder"]) for s in written]


def _absolute(data: SiteData) -> SiteData:
    return data if isinstance(data, CdmDatabase) else Path(data).resolve()


def prepare(out: Path, *, sites: int | None = None, site_data: Sequence[SiteData] | None = None,
            site_format: str | None = None,
            bundle: Path | None = None, pub: Path | None = None, host: str = "127.0.0.1",
            epsilon: float, delta: float = 1e-5, clip_norm: float = DEFAULT_CLIP_NORM, batch_size: int = 32,
            noise_multiplicity: int = 2, rounds: int = 3, local_steps: int = 20, pretrain_steps: int = 200,
            pretrain_patients: int = 3000, min_sites: int | None = None, round_timeout: float = 600.0,
            seed: int = 0, min_patients: int = 30, max_patients: int = 120, overwrite: bool = False,
            step: Step = lambda _: None) -> PreparedDeployment:
    """Write every file the deployment needs under ``out``.

    Parameters
    ----------
    out
        A new folder; an existing one is replaced only with ``overwrite`` and only if an
        earlier :func:`prepare` made it (it holds ``run-config.toml``).
    sites, site_data
        Simulate ``sites`` hospitals, or use these sites' data (one per hospital): a folder
        (OMOP or FHIR; its name is the site id) or a CDM database
        (:class:`~shared.ehr.cdm_connection.CdmDatabase`: its node config gets ``cdm-url``,
        ``cdm-schema``, ``vocabulary-schema`` and ``cdm-password-env`` / ``cdm-password-file``;
        the site id is :func:`deploy.simulation.site_name`).
    site_format
        How simulated sites are written: ``csv``, ``parquet`` or ``duckdb`` (a DuckDB CDM
        file per site, read through SQL); None: odd sites CSV, even sites Parquet.
    bundle, pub
        An existing signed bundle and its coordinator key; None: make both.
    epsilon, delta, clip_norm, batch_size, noise_multiplicity
        Every site's node config (a real hospital sets its own).
    rounds, local_steps, pretrain_steps, pretrain_patients, min_sites, round_timeout, seed
        The run config (``min_sites`` None: every site must reply each round).

    Raises
    ------
    ConfigError
        Neither or both of ``sites`` / ``site_data``; only one of ``bundle`` / ``pub``.
    OutputExistsError
        ``out`` exists and is not empty, and ``overwrite`` is false or it was not made here.
    """
    if (sites is None) == (site_data is None):
        raise ConfigError("give either a number of simulated sites or site data folders, not both")
    if (bundle is None) != (pub is None):
        raise ConfigError("--bundle and --pub go together (the bundle and the key it verifies with)")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
        if not (out / "run-config.toml").is_file():
            raise OutputExistsError(f"{out}: not a folder made by `raregraph deploy local` (no run-config.toml); "
                                    "refusing to delete it, choose another --out")
        shutil.rmtree(out)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if bundle is None:
        made = make_embedded_bundle(out, step=step)
        bundle, pub = made.bundle, made.pub
    bundle, pub = bundle.resolve(), pub.resolve()
    if site_data is None:
        step(f"data: simulating {sites} hospitals")
        site_data = simulate_sites(out, bundle, pub, sites=sites, seed=seed, min_patients=min_patients,
                                    max_patients=max_patients, site_format=site_format)
    step("keys: site ledger keys, CA, SuperLink certificate, SuperNode auth keys")
    nodes = site_nodes([_absolute(d) for d in site_data], state_root=out / "state", pub=pub, epsilon=epsilon,
                       delta=delta, clip_norm=clip_norm, batch_size=batch_size,
                       noise_multiplicity=noise_multiplicity)
    names = [n.site_id for n in nodes]
    certs = make_certs(out / "certs", superlink_host=host, sites=names, loopback=True)
    node_files = {}
    (out / "nodes").mkdir(exist_ok=True)
    for node in nodes:
        node_files[node.site_id] = out / "nodes" / f"{node.site_id}.toml"
        node_files[node.site_id].write_text(
            f"# node config of {node.site_id} (flower-supernode --node-config {node_files[node.site_id].name})\n"
            + flower.toml_table(node.as_mapping()))
    run = RunConfig(run_dir=out / "run", bundle_path=bundle, bundle_pub=pub, rounds=rounds, local_steps=local_steps,
                    pretrain_steps=pretrain_steps, pretrain_patients=pretrain_patients, seed=seed,
                    min_sites=len(nodes) if min_sites is None else min_sites, round_timeout=round_timeout,
                    site_keys=publish_site_keys(nodes, RunFolder(out / "run").site_keys))
    run_config_file = out / "run-config.toml"
    run_config_file.write_text("# flwr run . raregraph --run-config run-config.toml\n"
                               + flower.toml_table(run.as_mapping()))
    return PreparedDeployment(out=out, bundle=bundle, pub=pub, nodes={n.site_id: n for n in nodes}, node_files=node_files,
                  certs=certs, run=run, run_config_file=run_config_file)


class LocalDeployment:
    """A SuperLink and SuperNodes on one host, stopped (by process id) when the ``with`` ends.

    Parameters
    ----------
    layout
        What :func:`prepare` wrote.
    host
        The address the SuperLink listens on and the SuperNodes dial (in its certificate).
    stop_timeout
        Seconds between SIGTERM and SIGKILL when stopping a process.
    database, logs
        The SuperLink's state database and the log folder [default: in ``layout.out``].
    """

    def __init__(self, layout: PreparedDeployment, *, host: str = "127.0.0.1", stop_timeout: float = 10.0,
                 database: Path | None = None, logs: Path | None = None) -> None:
        self.layout = layout
        self.host = host
        self.port = free_port(host)
        self.database = database or layout.out / "superlink.db"
        self.procs = ProcessGroup(logs or layout.logs, stop_timeout=stop_timeout)
        self.home = layout.out / "flwr-home"
        self.cli_env = self.env(self.home / "coordinator")
        self.node_ids: dict[str, int] = {}

    def env(self, home: Path, *, site: str | None = None) -> dict[str, str]:
        """A flwr process's environment (:func:`deploy.flower.flwr_env`) without the database
        password variables of the sites' node configs (``cdm-password-env``), except
        ``site``'s own: a password reaches only the SuperNode (and ClientApps) of its site."""
        env = flower.flwr_env(home)
        own = self.layout.nodes[site].cdm_password_env if site is not None and self.layout.nodes[site].cdm_url else None
        for node in self.layout.nodes.values():
            if node.cdm_url and node.cdm_password_env != own:
                env.pop(node.cdm_password_env, None)
        return env

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc) -> None:
        self.procs.stop_all()

    def start_superlink(self, *, timeout: float = 60.0, server_cert: Path | None = None,
                        server_key: Path | None = None) -> Started:
        """Start the SuperLink and wait until it listens; write the ``flwr`` CLI connection.

        Called again after the SuperLink stopped, it restarts it on the same port and database:
        registered SuperNode keys and node ids survive, running SuperNodes reconnect by
        themselves; a run must be submitted again (a new Flower run id; the ServerApp resumes
        from the run folder's checkpoint). ``server_cert``/``server_key`` replace the layout's
        (tests: a wrong or expired one).
        """
        c = self.layout.certs
        argv = flower.superlink_argv(ca_cert=c.ca_cert, server_cert=server_cert or c.server_cert,
                                     server_key=server_key or c.server_key, database=self.database, host=self.host,
                                     port=self.port)
        proc = self.procs.start("superlink", argv, env=self.env(self.home / "superlink"))
        wait_for_port(self.host, self.port, proc=proc, timeout=timeout)
        flower.write_connection(self.home / "coordinator", address=self.address, root_cert=c.ca_cert)
        return proc

    def register(self, site: str, *, public_key: Path | None = None) -> int:
        """Register a site's SuperNode auth key with the SuperLink; its node id."""
        pub = public_key or self.layout.certs.site_keys[site][1]
        self.node_ids[site] = flower.register_supernode(pub, env=self.cli_env, name=site)
        return self.node_ids[site]

    def start_supernode(self, site: str, *, name: str | None = None, auth_key: Path | None = None,
                        root_cert: Path | None | bool = True, max_wait_time: float | None = None) -> Started:
        """Start ``site``'s SuperNode (its auth key, the CA, its node config file); also to
        restart one that stopped (same key, node id and state folder; its log is appended to).

        ``root_cert`` True: the consortium CA; None: no CA (a misconfigured hospital).
        ``name`` names the process and its log (default: the site).
        """
        ca = self.layout.certs.ca_cert if root_cert is True else root_cert
        argv = flower.supernode_argv(superlink=self.address, root_cert=ca,
                                     auth_key=auth_key or self.layout.certs.site_keys[site][0],
                                     node_config=self.layout.node_files[site], port=free_port(self.host),
                                     max_wait_time=max_wait_time)
        name = name or site
        return self.procs.start(name, argv, env=self.env(self.home / name, site=site))

    def start_all(self, step: Step = lambda _: None) -> None:
        """SuperLink, every site's registration, every SuperNode."""
        step(f"starting the SuperLink on {self.address} (TLS, SuperNode authentication)")
        self.start_superlink()
        for site in self.layout.nodes:
            step(f"registering {site}'s SuperNode key")
            self.register(site)
        for site in self.layout.nodes:
            step(f"starting {site}'s SuperNode")
            self.start_supernode(site)

    def submit(self, *, app: Path | None = None) -> int:
        """``flwr run`` the app with the layout's run config; the run id."""
        return flower.submit_run(app or flower.app_dir(), env=self.cli_env, run_config=self.layout.run_config_file)

    def save_run_log(self, run_id: int) -> Path:
        """Write the ServerApp's log of ``run_id`` to ``logs/serverapp.log``."""
        path = self.procs.logs / "serverapp.log"
        path.write_text(flower.run_log(run_id, env=self.cli_env))
        return path

    def wait_for_round(self, server_round: int, *, timeout: float, poll: float = 0.1) -> int:
        """Return once the run's checkpoint (``RUN/checkpoint/state.json``) records
        ``server_round`` or a later one; the round it records.

        Raises
        ------
        DeploymentError
            The SuperLink exited, or ``timeout`` seconds passed.
        """
        deadline = time.monotonic() + timeout
        while (done := checkpointed_round(self.layout.run.run_dir)) < server_round:
            superlink = self.procs.started["superlink"]
            if not superlink.alive():
                raise DeploymentError(f"the SuperLink exited (code {superlink.popen.returncode}) before round "
                                      f"{server_round} was checkpointed; its log ({superlink.log}) ends:\n"
                                      f"{superlink.log_tail()}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"round {server_round} was not checkpointed within {timeout:.0f} s (round "
                                      f"{done} was); see {self.procs.logs}")
            time.sleep(poll)
        return done

    def wait(self, run_id: int, *, timeout: float, step: Step = lambda _: None, poll: float = 1.0,
             status_every: float = 10.0) -> str:
        """Follow the run until it finishes; its final status (``finished:completed``, ...).

        Raises
        ------
        DeploymentError
            The SuperLink exited, or ``timeout`` seconds passed.
        """
        deadline = time.monotonic() + timeout
        last_status_check, shown, status = 0.0, None, "pending"
        while True:
            superlink = self.procs.started["superlink"]
            if not superlink.alive():
                raise DeploymentError(f"the SuperLink exited (code {superlink.popen.returncode}) during run {run_id}; "
                                      f"its log ({superlink.log}) ends:\n{superlink.log_tail()}")
            now = time.monotonic()
            if now - last_status_check >= status_every or (RunFolder(self.layout.run.run_dir).model / META_FILE).exists():
                status, last_status_check = flower.run_status(run_id, env=self.cli_env), now
                if status.startswith("finished"):
                    return status
            round_done = checkpointed_round(self.layout.run.run_dir)
            message = f"run {run_id}: {status}, round {round_done}/{self.layout.run.rounds} done"
            if message != shown:
                step(message)
                shown = message
            if now > deadline:
                raise DeploymentError(f"run {run_id} did not finish within {timeout:.0f} s (status {status}); "
                                      f"see {self.layout.logs}/superlink.log and the site logs")
            time.sleep(poll)


def checkpointed_round(run_dir: Path) -> int:
    """The last round the run in ``run_dir`` checkpointed (0 before the first, or while unreadable)."""
    try:
        return int(json.loads(RunFolder(run_dir).checkpoint_state.read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


def keep_up(layout: PreparedDeployment, *, step: Step = lambda _: None,
            ready: Callable[[LocalDeployment], None] = lambda _: None, poll: float = 1.0) -> None:
    """Start the deployment and keep it up for runs submitted by hand (``flwr run .
    raregraph`` with ``FLWR_HOME=OUT/flwr-home/coordinator``), until Ctrl-C or SIGTERM
    (KeyboardInterrupt); then stop every process. ``ready`` is called once everything is up.

    Raises
    ------
    DeploymentError
        The SuperLink or a SuperNode exited while the deployment was up (its log is named).
    ProcessError
        A process did not come up.
    """
    with LocalDeployment(layout) as deployment:
        deployment.start_all(step)
        ready(deployment)
        while True:
            for name, proc in deployment.procs.started.items():
                if not proc.alive():
                    raise DeploymentError(f"{name} exited (code {proc.popen.returncode}) while the deployment was up; "
                                          f"its log ({proc.log}) ends:\n{proc.log_tail()}")
            time.sleep(poll)


def run_local(layout: PreparedDeployment, *, timeout: float, step: Step = lambda _: None, app: Path | None = None) -> dict:
    """Start the deployment, run the federation, stop everything; a summary.

    Raises
    ------
    DeploymentError
        The run failed or timed out (the message names the logs).
    ProcessError
        A process did not come up.
    """
    started = time.monotonic()
    with LocalDeployment(layout) as deployment:
        deployment.start_all(step)
        step("submitting the run (flwr run)")
        run_id = deployment.submit(app=app)
        try:
            status = deployment.wait(run_id, timeout=timeout, step=step)
        finally:
            deployment.save_run_log(run_id)
        step("stopping the SuperNodes and the SuperLink")
    run = RunFolder(layout.run.run_dir)
    if status != "finished:completed" or not (run.model / META_FILE).is_file():
        raise DeploymentError(f"run {run_id} ended {status} without a model; read {layout.logs / 'serverapp.log'} "
                              f"(ServerApp), {layout.logs / 'superlink.log'} and {layout.logs}/<site>.log (ClientApps)")
    privacy = json.loads(run.privacy.read_text())
    return {"run_id": run_id, "status": status, "seconds": round(time.monotonic() - started, 1),
            "node_ids": deployment.node_ids, "model": str(run.model), "privacy": privacy}


__all__ = ["DeploymentError", "PreparedDeployment", "LocalDeployment", "ProcessError", "keep_up", "prepare", "run_local"]
