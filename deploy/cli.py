"""``raregraph deploy``: certificates and keys for a real federation, and the loopback launcher.

Each command imports the code it drives when it runs: ``deploy certs`` loads the X.509 code
only, and ``deploy local`` loads Flower, torch and Opacus (issue 23).
"""

from __future__ import annotations

import signal
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from shared.cli_config import CLI_ONLY, data_path_value, resolved_config, with_config_file
from shared.console import Quiet, QuietAccepted, cli_errors, console, err_console, print_json, steps
from shared.ehr.settings import DEFAULT_PASSWORD_ENV
from shared.errors import ConfigError
from shared.privacy.audit.cli import print_audit_summary

if TYPE_CHECKING:
    from deploy.simulation import SiteData

deploy_app = typer.Typer(help="Deploy a real federation: certificates and keys, a launcher on one host.",
                         no_args_is_help=True)


@deploy_app.command("certs")
def certs(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.crt, superlink.crt/.key, supernode-auth/<site>.key/.pub.")],
    superlink_host: Annotated[str | None, typer.Option("--superlink-host", help="IP address or DNS name the SuperNodes dial; goes into the SuperLink certificate. Leave out to make site keys only.")] = None,
    sites: Annotated[int | None, typer.Option("--sites", min=1, max=256, help="Make auth keys for site-1 … site-N.")] = None,
    site: Annotated[list[str] | None, typer.Option("--site", help="Make an auth key for this site (repeat the option).")] = None,
    loopback: Annotated[bool, typer.Option("--loopback", help="Also put localhost, 127.0.0.1 and ::1 in the SuperLink certificate.")] = False,
    server_days: Annotated[int, typer.Option("--days", min=1, help="Validity of the SuperLink certificate in days.")] = 825,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing SuperLink certificate or site key (an existing CA is always reused).")] = False,
    quiet: QuietAccepted = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
) -> None:
    """Make the consortium CA, the SuperLink's TLS certificate and each site's SuperNode
    authentication key pair (EC P-384, OpenSSH). Private keys are written 0600; nothing is
    replaced without --overwrite.

    Example: raregraph deploy certs --out certs --superlink-host coordinator.example.org --sites 3
    """
    from deploy.certs import make_certs

    with cli_errors():
        if sites is not None and site:
            raise ConfigError("give --sites N or --site NAME (repeated), not both")
        names = [f"site-{k}" for k in range(1, sites + 1)] if sites is not None else list(site or [])
        files = make_certs(out, superlink_host=superlink_host, sites=names, loopback=loopback, overwrite=overwrite,
                           server_days=server_days)
    written = {"ca": str(files.ca_cert) if files.ca_cert else None, "ca_reused": files.ca_reused,
               "superlink_cert": str(files.server_cert) if files.server_cert else None,
               "superlink_key": str(files.server_key) if files.server_key else None,
               "sites": {s: {"private_key": str(k), "public_key": str(p)} for s, (k, p) in files.site_keys.items()}}
    if json_out:
        print_json(written)
        return
    if files.server_cert:
        console.print(f"CA          {files.ca_cert} ({'reused' if files.ca_reused else 'new'}; its key {files.ca_key} "
                      "stays with the coordinator, offline)")
        console.print(f"SuperLink   {files.server_cert} + {files.server_key} (0600), for {superlink_host}")
    for s, (key, pub) in files.site_keys.items():
        console.print(f"{s:<11} {key} (0600, stays at the site) + {pub} (register: "
                      f"flwr supernode register {pub})")


@deploy_app.command("local")
@with_config_file("deploy", "local", cli_only=(*CLI_ONLY, "overwrite", "no-submit"), path_values={"site": data_path_value})
def local(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for everything: bundle, sites, state, certs, logs, run.")],
    sites: Annotated[int | None, typer.Option("--sites", min=1, max=16, help="Simulated hospitals, one SuperNode each \\[default: 3, unless --site is given].")] = None,
    site_format: Annotated[str | None, typer.Option("--site-format", help="How the simulated hospitals keep their OMOP CDM: csv or parquet (a folder of tables) or duckdb (OUT/sites/site-N.duckdb, read through SQL: cdm-url + cdm-schema) \\[default: odd sites CSV, even sites Parquet].")] = None,
    site: Annotated[list[str] | None, typer.Option("--site", help="A hospital's own data instead of simulated ones (repeat the option): an OMOP/FHIR folder, a DuckDB CDM file (NAME.duckdb), or a CDM database URL without password (postgresql+psycopg://reader@db:5432/NAME); the folder, file or database name is the site id.")] = None,
    cdm_schema: Annotated[str | None, typer.Option("--cdm-schema", help="Schema of the clinical tables of every --site database (`data simulate --format duckdb` writes cdm) \\[default: the connection's].")] = None,
    vocabulary_schema: Annotated[str | None, typer.Option("--vocabulary-schema", help="Schema of the vocabulary tables of every --site database \\[default: --cdm-schema].")] = None,
    cdm_password_env: Annotated[str, typer.Option("--cdm-password-env", help="Environment variable holding the --site databases' password: set it before this command; it reaches those sites' SuperNodes only, never a command line, node config or log.")] = DEFAULT_PASSWORD_ENV,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Federated rounds.")] = 3,
    local_steps: Annotated[int, typer.Option("--local-steps", min=1, help="DP-SGD steps per site per round.")] = 20,
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="Each site's privacy budget ε.")] = 8.0,
    delta: Annotated[float, typer.Option("--delta", help="Each site's δ.")] = 1e-5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Expected Poisson batch per site.")] = 16,
    pretrain_steps: Annotated[int, typer.Option("--pretrain-steps", min=0, help="Coordinator pretraining steps on public-prior patients.")] = 200,
    min_sites: Annotated[int | None, typer.Option("--min-sites", min=1, help="Replies a round needs [default: every site].")] = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="An existing signed study bundle [default: the demo study, built now].")] = None,
    pub: Annotated[Path | None, typer.Option("--pub", help="Coordinator public key of --bundle.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the simulated hospitals and training.")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", min=10.0, help="Seconds the run may take before everything is stopped.")] = 1800.0,
    serve_port: Annotated[int | None, typer.Option("--serve-port", min=1, max=65535, help="Also serve the live view of the run (as `raregraph serve`) on 127.0.0.1:PORT while it runs \\[default: not served].")] = None,
    no_submit: Annotated[bool, typer.Option("--no-submit", help="Start the SuperLink and the SuperNodes and keep them up for runs you submit yourself with `flwr run . raregraph` (the command is printed) until Ctrl-C, instead of submitting one run and stopping.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an --out that an earlier `deploy local` made.")] = False,
    quiet: Quiet = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Run a real deployment on this machine: a SuperLink with TLS and SuperNode
    authentication, one SuperNode per simulated hospital, the federation submitted with
    `flwr run`. Every process started is stopped on exit, error or Ctrl-C; logs are in
    OUT/logs.

    Example: raregraph deploy local --sites 3 --rounds 3 --out out/deploy --site-format duckdb

    Or keep it up and submit the runs yourself: raregraph deploy local --out out/deploy --no-submit

    Or with the settings under [deploy.local] in a file, one of them overridden: raregraph deploy local --config run.toml --rounds 5
    """
    from deploy.local import keep_up, prepare, run_local
    from server.dashboard.beside import serve_beside
    from shared.privacy.audit.audit import audit_run
    from shared.runs import RunFolder
    from shared.simulation.consortium import SITE_FORMATS

    previous = signal.signal(signal.SIGTERM, _terminate)  # a SIGTERM unwinds like Ctrl-C: processes are stopped
    try:
        with cli_errors(), steps("deploy local", quiet=quiet or json_out) as step:
            if site and (sites is not None or site_format is not None):
                raise ConfigError("give --sites N (simulated, with --site-format) or --site DATA (repeated), not both")
            settings = resolved_config(ctx)
            if site_format is not None and site_format not in SITE_FORMATS:
                raise ConfigError(f"{settings.label('site-format')} must be one of {', '.join(SITE_FORMATS)}, got {site_format!r}")
            site_data = [_site_data(s, schema=cdm_schema, vocabulary_schema=vocabulary_schema,
                                    password_env=cdm_password_env) for s in site] if site else None
            layout = prepare(out, sites=None if site_data else sites or 3, site_data=site_data,
                             site_format=site_format, bundle=bundle, pub=pub, epsilon=epsilon, delta=delta,
                             batch_size=batch_size, rounds=rounds, local_steps=local_steps,
                             pretrain_steps=pretrain_steps, min_sites=min_sites, seed=seed, overwrite=overwrite,
                             step=step)
            settings.write(RunFolder(layout.run.run_dir).resolved_config)
            with serve_beside(layout.run.run_dir, port=serve_port) if serve_port else nullcontext() as url:
                if url:
                    step(f"live view: {url} (while the run goes; `raregraph serve {layout.run.run_dir}` afterwards)")
                if no_submit:
                    keep_up(layout, step=step, ready=lambda deployment: _print_ready(deployment, step, json_out))
                summary = run_local(layout, timeout=timeout, step=step)
            audit = audit_run(layout.run.run_dir)
    except KeyboardInterrupt:
        if no_submit:  # the way to end a deployment kept up
            console.print(f"stopped every process this command started (logs in {out / 'logs'}; runs in {out / 'run'})",
                          highlight=False)
            raise typer.Exit(0) from None
        err_console.print(f"interrupted: every process this command started was stopped (logs in {out / 'logs'})",
                          highlight=False)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if json_out:
        print_json({**summary, "audit": audit.to_json()})
        raise typer.Exit(0 if audit.ok else 1)
    table = Table(title=f"run {summary['run_id']}: {summary['status']} in {summary['seconds']:.0f} s", show_edge=False)
    for col in ("site", "SuperNode id", "rounds trained", "ε spent", "budget"):
        table.add_column(col, justify="left" if col == "site" else "right")
    for site, rows in sorted(summary["privacy"]["sites"].items()):
        train = [r for r in rows if r["kind"] == "train"]
        table.add_row(site, str(summary["node_ids"].get(site, "?")), str(sum(not r["refused"] for r in train)),
                      f"{max(r['epsilon'] for r in rows):.3f}", f"{train[-1]['budget-epsilon']:.3f}" if train else "–")
    console.print(table)
    console.print(f"model: {summary['model']}; logs: {layout.logs}")
    print_audit_summary(audit, layout.run.run_dir)
    if not audit.ok:
        raise typer.Exit(1)


def _print_ready(deployment, step, json_out: bool) -> None:
    """How to submit runs to a deployment kept up (``--no-submit``), once it is."""
    from deploy.flower import app_dir, executable

    layout = deployment.layout
    home = deployment.home / "coordinator"
    command = f"FLWR_HOME={home} {executable('flwr')} run {app_dir()} raregraph --run-config {layout.run_config_file} --stream"
    if json_out:
        print_json({"superlink": deployment.address, "flwr_home": str(home), "run_config": str(layout.run_config_file),
                    "node_ids": deployment.node_ids, "submit": command})
    else:
        console.print(f"the deployment is up: SuperLink {deployment.address} (TLS, SuperNode authentication), "
                      f"{len(layout.nodes)} SuperNodes ({', '.join(layout.nodes)}). Submit a run with:", highlight=False)
        console.print(f"  {command}", highlight=False, soft_wrap=True)
        console.print(f"the run writes to {layout.run.run_dir} (one run per run folder: for another, copy "
                      f"{layout.run_config_file.name} and change run-dir); Ctrl-C stops every process", highlight=False)
    sys.stdout.flush()  # a pipe is block-buffered: whoever reads it needs the command now
    step("up: waiting for runs submitted with flwr run (Ctrl-C stops)")


def _site_data(value: str, *, schema: str | None, vocabulary_schema: str | None,
               password_env: str) -> SiteData:
    """One ``--site``: a database URL or a ``.duckdb`` file as a CDM database, else a folder."""
    from shared.ehr.cdm_connection import CdmDatabase

    if "://" in value or value.endswith(".duckdb"):
        url = value if "://" in value else f"duckdb:///{Path(value).resolve()}"
        return CdmDatabase(url, schema=schema, vocabulary_schema=vocabulary_schema, password_env=password_env)
    return Path(value)


def _terminate(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@deploy_app.command("wheelhouse")
def wheelhouse(
    out: Annotated[Path, typer.Option("--out", help="Folder for the wheels and requirements.txt.")] = Path("build/wheelhouse"),
    quiet: Quiet = False,
) -> None:
    """Collect every dependency as wheels, for the images and air-gapped installs.

    Every dependency as a wheel (with the pinned CPU torch) and a requirements.txt
    of exact versions: what the images install from, and how an air-gapped hospital installs
    (`pip install --no-index --find-links DIR -r DIR/requirements.txt`). The only step that
    needs a package index; a complete folder is reused.

    Example: raregraph deploy wheelhouse --out build/wheelhouse
    """
    from deploy.images import collect_wheelhouse

    with cli_errors(), steps("deploy wheelhouse", quiet=quiet) as step:
        collect_wheelhouse(out, step=step)


@deploy_app.command("images")
def images(
    base: Annotated[str, typer.Option("--base", help="Base image: Debian bookworm with Python 3.11 as python3.")] = "python:3.11-slim-bookworm",
    source: Annotated[Path | None, typer.Option("--source", help="The checkout to build from \\[default: this one].")] = None,
    quiet: Quiet = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the images as JSON.")] = False,
) -> None:
    """Build the hospital and coordinator container images.

    Both come from deploy/Dockerfile, the wheelhouse (collected first when missing) and this checkout, labelled with its version and git
    commit. Needs a running Docker engine; the build log is build/images.log.

    Example: raregraph deploy images --base python:3.11-slim-bookworm
    """
    from deploy.images import make_images

    with cli_errors(), steps("deploy images", quiet=quiet or json_out) as step:
        built = make_images(source, base=base, step=step)
    if json_out:
        print_json([{"target": i.target, "tag": i.tag, "id": i.id, "bytes": i.size, "seconds": i.seconds}
                    for i in built])
        return
    for i in built:
        console.print(f"{i.tag:<34} {i.size / 2**30:.2f} GiB  built in {i.seconds:.0f} s  ({i.id[:19]})")


@deploy_app.command("compose")
def compose(
    out: Annotated[Path, typer.Option("--out", help="New folder for compose.yaml, certificates, keys, node configs, data and state.")],
    sites: Annotated[int, typer.Option("--sites", min=1, max=64, help="Simulated hospitals, one container each.")] = 3,
    superlink_host: Annotated[str, typer.Option("--superlink-host", help="Address the hospitals dial (in the SuperLink certificate).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The SuperLink's port.")] = 9092,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Federated rounds.")] = 3,
    local_steps: Annotated[int, typer.Option("--local-steps", min=1, help="DP-SGD steps per site per round.")] = 20,
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="Each site's privacy budget ε.")] = 8.0,
    pretrain_steps: Annotated[int, typer.Option("--pretrain-steps", min=0, help="Coordinator pretraining steps on public-prior patients.")] = 200,
    min_sites: Annotated[int | None, typer.Option("--min-sites", min=1, help="Replies a round needs [default: every site].")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the simulated hospitals and training.")] = 0,
    quiet: Quiet = False,
) -> None:
    """Write a consortium folder that runs the container images with docker-compose.

    A compose file with the coordinator and one container per simulated hospital (host network, TLS and SuperNode
    authentication on, read-only root filesystems, UID 10001), the certificates, keys, each
    hospital's commented node config, data and state folders, and the run config. The
    compose file's header lists the commands that run it.

    Example: raregraph deploy compose --out consortium --sites 3 && cd consortium && docker-compose up -d superlink
    """
    from deploy.compose import write_compose

    with cli_errors(), steps("deploy compose", quiet=quiet) as step:
        layout = write_compose(out, sites=sites, superlink_host=superlink_host, port=port, epsilon=epsilon,
                               rounds=rounds, local_steps=local_steps, pretrain_steps=pretrain_steps,
                               min_sites=min_sites, seed=seed, step=step)
    console.print(f"compose file: {layout.compose_file} (its header lists the commands); sites: {', '.join(layout.sites)}")
