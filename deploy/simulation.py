"""Flower's simulation engine as a way to run the federation: one virtual SuperNode per site
(its folder or its CDM database), in one process tree (``raregraph federate``, the demo, the
tests and benchmarks).

The apps are the same ``client.app`` and ``server.app`` that ``flwr run .`` and the
deployment use; here their configuration is bound in (the simulation engine gives nodes
only a partition id).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from client.app import make_app as make_client_app
from client.config import NodeConfig
from server.app import make_app as make_server_app
from server.config import RunConfig
from shared import protocol as P
from shared.atomic import write_bytes_atomic
from server.site_evaluation import SITE_NAME
from shared.console import err_console, step_progress
from shared.ehr.cdm_connection import CdmDatabase
from shared.errors import InputError, RareGraphError
from shared.model import META_FILE
from shared.runs import RunFolder
from shared.signing.keys import new_keypair


SiteData = Path | CdmDatabase  # a site's data: its folder (OMOP or FHIR), or its CDM database
#: What a site id may be: it names the site's state folder, key and ledger files and SuperNode
SITE_ID_RULE = "1–64 letters, digits, '.', '_' or '-', starting with a letter or digit"
#: flwr 1.41 logs this at WARNING each time `run_simulation` is called (see :func:`run_simulated`)
RUN_SIMULATION_DEPRECATED = "The `run_simulation` function is deprecated"


def site_name(data: SiteData) -> str:
    """The site id of ``data``: a folder's name; a DuckDB CDM file's name without ``.duckdb``;
    another database's name (the URL's database, e.g. ``site-2`` of ``postgresql+psycopg://u@h/site-2``).

    Raises
    ------
    InputError
        A database URL that names no database.
    """
    if not isinstance(data, CdmDatabase):
        return Path(data).name
    name = sa.make_url(data.url).database or ""
    name = Path(name).stem if data.dialect == "duckdb" else name
    if not name or name == ":memory:":
        raise InputError("a site's CDM URL must name its database (the site id is taken from it)", file=str(data))
    return name


def site_id_problem(site_id: str) -> str | None:
    """Why ``site_id`` cannot be a site id (see :data:`SITE_ID_RULE`), or None when it can."""
    if SITE_NAME.match(site_id):
        return None
    return f"site id {site_id!r} is not a safe folder name: it must be {SITE_ID_RULE}"


def _node_data(data: SiteData) -> dict:
    """The node config fields that say where a site's data is (paths absolute)."""
    if not isinstance(data, CdmDatabase):
        if not Path(data).is_dir():
            raise InputError("site folder not found", file=data)
        return {"data_path": Path(data).resolve()}
    url = sa.make_url(data.url)
    if data.dialect == "duckdb":
        file = Path(url.database or "")
        if not file.is_file():
            raise InputError("DuckDB CDM file not found", file=file)
        url = url.set(database=str(file.resolve()))
    return {"cdm_url": url.render_as_string(hide_password=False), "cdm_schema": data.schema or "",
            "vocabulary_schema": data.vocabulary_schema or "", "cdm_password_env": data.password_env,
            "cdm_password_file": Path(data.password_file).resolve() if data.password_file is not None else None}


def site_nodes(sites: Sequence[SiteData], *, state_root: Path, pub: Path, epsilon: float, delta: float,
               clip_norm: float, batch_size: int, noise_multiplicity: int, eval_noise_multiplier: float = 0.0,
               holdouts: list[Path] | None = None, site_ids: Sequence[str] | None = None,
               histogram_noise_multiplier: float = 0.0, survey_noise_multiplier: float = 0.0) -> list[NodeConfig]:
    """One node config per site; state folders under ``state_root``; ``holdouts``, when
    given, one held-out folder per site (its ``holdout-path``), in the same order;
    ``histogram_noise_multiplier``, every site's σ of its one disease-mix release (0: the
    sites decline it; :mod:`client.disease_mix`); ``survey_noise_multiplier``, every site's σ of its one
    vocabulary-survey release (0: declined; :mod:`client.vocabulary_survey`).

    A site is a folder (node config ``data-path``) or a CDM database (``cdm-url``,
    ``cdm-schema``, ``vocabulary-schema`` and where its password comes from:
    ``cdm-password-env`` / ``cdm-password-file``; the password itself is never in a node
    config). Its site id is ``site_ids[i]`` when given (``site1/train`` and ``site2/train``
    need them), else :func:`site_name`; every id must be distinct and :data:`SITE_ID_RULE`.

    Each simulated site gets its own Ed25519 identity key in its state folder
    (``STATE/<site>/identity/site.key``), made on first use and kept: the key signs the
    site's ledger across every run over the same state. Keys are made only once every
    site's settings (budget, clip norm, folders) have been checked, so a refused setting
    leaves nothing behind.

    Raises
    ------
    InputError
        Two sites with one id, an id that is not a safe folder name, a site folder or DuckDB
        file that is not there, a database URL without a database name, or a held-out folder
        or site id list of another length.
    ConfigError
        A setting a node config refuses (ε ≤ 0, δ outside (0, 1), a URL holding a password, ...).
    """
    if site_ids is not None and len(site_ids) != len(sites):
        raise InputError(f"{len(site_ids)} site ids for {len(sites)} sites: give one per site, in order, or none")
    names = list(site_ids) if site_ids is not None else [site_name(s) for s in sites]
    for name, data in zip(names, sites):
        if problem := site_id_problem(name):
            raise InputError(problem, file=str(data))
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise InputError(f"sites must have distinct ids (they name the state folders); {', '.join(map(repr, repeated))} "
                         "is given more than once")
    if holdouts and len(holdouts) != len(sites):
        raise InputError(f"{len(holdouts)} held-out folders for {len(sites)} sites: give one per site, in order, or none")
    data = [_node_data(s) for s in sites]
    nodes = []
    for i, name in enumerate(names):
        state = (state_root / name).resolve()
        nodes.append(NodeConfig(site_id=name, state_path=state, coordinator_pub=pub.resolve(),
                                site_key=state / "identity" / "site.key", epsilon=epsilon, delta=delta,
                                clip_norm=clip_norm, batch_size=batch_size, noise_multiplicity=noise_multiplicity,
                                threads=1, eval_noise_multiplier=eval_noise_multiplier,
                                histogram_noise_multiplier=histogram_noise_multiplier,
                                survey_noise_multiplier=survey_noise_multiplier,
                                holdout_path=holdouts[i].resolve() if holdouts else None, **data[i]))
    for node in nodes:  # all validated: now the keys
        if not node.site_key.exists():
            new_keypair(node.site_key.with_suffix(""))
    return nodes


def publish_site_keys(nodes: list[NodeConfig], folder: Path) -> Path:
    """Copy each site's public key to ``folder/<site-id>.pub`` (what the coordinator and the
    auditor hold); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for node in nodes:
        write_bytes_atomic(folder / f"{node.site_id}.pub", node.site_key.with_suffix(".pub").read_bytes())
    return folder


def run_simulated(run: RunConfig, nodes: list[NodeConfig], *, show_progress: bool, client_app=None,
                  after_round=None) -> dict:
    """Run the federation on the simulation engine; return privacy.json's content.

    ``client_app`` replaces the standard ClientApp (tests use it to play a faulty site);
    ``after_round(row)`` runs after each round's checkpoint (tests use it to stop the
    coordinator mid-run).
    """
    from flwr.simulation import run_simulation

    for key, value in (("FLWR_TELEMETRY_ENABLED", "0"), ("FLWR_DISABLE_UPDATE_CHECK", "1"),
                       ("RAY_DEDUP_LOGS", "0")):
        os.environ.setdefault(key, value)

    def on_round(row: dict, privacy: dict[str, list[dict]]) -> None:
        if after_round is not None:
            after_round(row)
        if not show_progress:
            return
        loss = row["metrics"].get(P.LOSS)
        rows_now = {site: [r for r in rows if r["kind"] == "train"] for site, rows in privacy.items()}
        eps = ", ".join(f"{site} ε={rows[-1]['epsilon']:.2f}{' (sat out)' if rows[-1]['refused'] else ''}"
                        for site, rows in sorted(rows_now.items()) if rows and rows[-1]["round"] == row["round"])
        err_console.print(f"round {row['round']}/{run.rounds}: {row['aggregated']}/{row['replies']} sites averaged"
                          f"{f', loss {loss:.3f}' if loss is not None else ''}; {eps}", highlight=False)

    client = client_app or make_client_app(lambda context: nodes[int(context.node_config["partition-id"])])
    server = make_server_app(run, on_round=on_round,
                             pretrain_progress=lambda total: step_progress("coordinator pretraining", total,
                                                                           quiet=not show_progress))
    run.run_dir.mkdir(parents=True, exist_ok=True)
    flwr_log = logging.getLogger("flwr")
    flwr_log.setLevel(logging.WARNING)
    # `run_simulation` is still flwr 1.41's only in-process simulation entry point (the notice
    # says to use `flwr run`, which packages the app for a SuperLink and cannot carry the
    # node configs, RunConfig and callbacks bound here). It logs the notice (a log record, not
    # a Python warning) in flwr/simulation/run_simulation.py, `run_simulation`, line 150:
    # `warn_deprecated_feature("The `run_simulation` function is deprecated ...")`. Drop that
    # one record for the length of this call; every other Flower message still shows.
    notice = _DropRecord(RUN_SIMULATION_DEPRECATED)
    flwr_log.addFilter(notice)
    # flwr's Ray backend sets this process's PYTHONPATH to its own sys.path for Ray's workers
    # (flwr/server/superlink/fleet/vce/backend/raybackend.py, `init_ray`) and leaves it set: every
    # later child process, another Python included (Debian's docker-compose), would then import
    # this venv's packages and this interpreter's standard library. Put it back once Ray is done.
    pythonpath = os.environ.get("PYTHONPATH")
    try:
        run_simulation(server_app=server, client_app=client, num_supernodes=len(nodes),
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
                       verbose_logging=False)
    finally:
        flwr_log.removeFilter(notice)
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath
    folder = RunFolder(run.run_dir)
    if run.survey and not folder.survey.is_file():
        raise RareGraphError(f"{run.run_dir}: the survey ended without survey.json (see the log above)")
    if not run.survey and not (folder.model / META_FILE).is_file():
        raise RareGraphError(f"{run.run_dir}: the federation ended without a model (see the log above)")
    return json.loads(folder.privacy.read_text())


class _DropRecord(logging.Filter):
    """Drops log records whose message, once formatted, holds ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()
