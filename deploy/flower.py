"""The flwr 1.41 command lines and files a deployment needs, in one place.

The process launcher (:mod:`deploy.local`) runs these; the container files in ``deploy/``
spell out the same flags, and a test compares the two.

- SuperLink: one port serves the Fleet, Control and Runtime APIs (``--host``, ``--port``),
  TLS with the consortium CA, SuperNode authentication on, state in a SQLite database so a
  restart keeps registered nodes, and no ``uv sync`` of the app's dependencies at run time
  (it would pull a multi-GB CUDA torch).
- SuperNode: TLS verified with ``--root-certificates``, its EC authentication key, its
  node config as a TOML file, and its own local Runtime API port.
- ``flwr`` CLI: a connection in ``$FLWR_HOME/config.toml`` (``[superlink.NAME]`` with
  ``address`` and an absolute ``root-certificates``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from shared.errors import ConfigError, RareGraphError

FLWR_VERSION = "1.41.0"  # the pinned flwr; container images use the same tag
SUPERLINK_PORT = 9092  # default port of our SuperLink (Fleet + Control + Runtime APIs)
SUPERNODE_RUNTIME_PORT = 9094  # a SuperNode's local Runtime API (flwr's default)
CONNECTION = "raregraph"  # name of the flwr CLI connection the launcher writes
QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",  # nothing phones home from a hospital
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "PYTHONUNBUFFERED": "1",  # logs reach the log file as they happen
}


class FlwrError(RareGraphError):
    """A flwr command failed; the message quotes its output."""


def executable(name: str) -> str:
    """Path of a flwr executable: beside this Python first (the venv), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FlwrError(f"{name} not found beside {sys.executable} or on PATH; install flwr=={FLWR_VERSION}")
    return found


def flwr_env(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a flwr process: its own FLWR_HOME, telemetry and update checks off."""
    env = dict(os.environ if base is None else base)
    env.update(QUIET_ENV)
    # flower-superlink starts flower-superexec (and that the ServerApp) by name, so the venv's
    # bin folder must be on PATH even when this Python runs without an activated venv
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *(p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir)])
    env["FLWR_HOME"] = str(home)
    env.setdefault("UV_CACHE_DIR", str(home / "uv-cache"))
    return env


def superlink_argv(*, ca_cert: Path, server_cert: Path, server_key: Path, database: Path, host: str,
                   port: int) -> list[str]:
    """``flower-superlink`` with TLS, SuperNode authentication and persistent state."""
    return [executable("flower-superlink"),
            "--ssl-ca-certfile", str(ca_cert), "--ssl-certfile", str(server_cert), "--ssl-keyfile", str(server_key),
            "--enable-supernode-auth", "--database", str(database),
            "--host", host, "--port", str(port),
            "--disable-runtime-dependency-installation"]


def supernode_argv(*, superlink: str, root_cert: Path | None, auth_key: Path, node_config: Path, port: int,
                   max_wait_time: float | None = None) -> list[str]:
    """``flower-supernode`` dialing ``superlink`` (host:port) with TLS and its auth key.

    ``root_cert`` None leaves the CA out (the SuperNode then trusts only the system CAs:
    a test of what happens when hospital IT forgets it).
    """
    argv = [executable("flower-supernode"), "--superlink", superlink]
    if root_cert is not None:
        argv += ["--root-certificates", str(root_cert)]
    argv += ["--auth-supernode-private-key", str(auth_key), "--node-config", str(node_config),
             "--port", str(port)]
    if max_wait_time is not None:
        argv += ["--max-wait-time", str(max_wait_time)]
    return argv


def toml_value(value: object) -> str:
    """One TOML scalar (str, bool, int, float)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{value} has no TOML spelling here")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise ConfigError(f"config values must be str, bool, int or float, got {type(value).__name__}")


def toml_table(values: Mapping[str, object], *, header: str = "") -> str:
    """Flat ``"key" = value`` lines (dotted keys quoted, so they stay one key)."""
    lines = [header] if header else []
    lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_connection(home: Path, *, address: str, root_cert: Path, name: str = CONNECTION) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one TLS connection, the default; its path."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(f"[superlink]\ndefault = {json.dumps(name)}\n\n"
                    + toml_table({"address": address, "root-certificates": str(root_cert.resolve())},
                                 header=f"[superlink.{name}]"))
    return path


def _run(argv: list[str], *, env: Mapping[str, str], cwd: Path | None = None,
         timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, capture_output=True, text=True, timeout=timeout)``, except that a child
    killed on the way out is also waited for. On Ctrl-C, ``subprocess.run`` kills the child but
    returns without waiting for it, so under load a ``flwr`` CLI call could outlive the command
    that reported every process it started stopped (``deploy local``)."""
    with subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:  # a timeout, Ctrl-C or SIGTERM unwinding: the child goes first
            process.kill()
            process.wait()
            raise
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def flwr_cli(args: list[str], *, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 120.0,
             flwr: Sequence[str] | None = None) -> dict:
    """Run ``flwr ARGS --format json`` and return the parsed JSON.

    ``flwr`` is the command that runs the flwr CLI [default: the venv's ``flwr``]; e.g.
    ``docker-compose exec -T superlink flwr`` for the CLI inside the coordinator container.

    Raises
    ------
    FlwrError
        Non-zero exit, a timeout, or output that is not JSON with ``success`` true.
    """
    argv = [*(flwr or [executable("flwr")]), *args, "--format", "json"]
    try:
        done = _run(argv, env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlwrError(f"`flwr {' '.join(args)}` did not answer within {timeout:.0f} s") from None
    text = done.stdout.strip()
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        data = None
    if done.returncode != 0 or not isinstance(data, dict) or not data.get("success", False):
        detail = (data or {}).get("error-message") if isinstance(data, dict) else None
        detail = detail or (done.stderr.strip() or text)[-800:]
        raise FlwrError(f"`flwr {' '.join(args)}` failed (exit {done.returncode}): {detail}")
    return data


def register_supernode(public_key: Path, *, env: Mapping[str, str], name: str,
                       connection: str = CONNECTION, flwr: Sequence[str] | None = None) -> int:
    """``flwr supernode register``: the SuperLink accepts this site's key; the node id."""
    data = flwr_cli(["supernode", "register", str(public_key), connection, "--name", name], env=env, flwr=flwr)
    return int(data["node-id"])


def submit_run(app: Path, *, env: Mapping[str, str], run_config: Path, connection: str = CONNECTION,
               flwr: Sequence[str] | None = None) -> int:
    """``flwr run APP CONNECTION --run-config FILE``; returns the run id (does not wait)."""
    data = flwr_cli(["run", str(app), connection, "--run-config", str(run_config)], env=env,
                    cwd=None if flwr else app, timeout=300.0, flwr=flwr)
    return int(data["run-id"])


def run_status(run_id: int, *, env: Mapping[str, str], connection: str = CONNECTION,
               flwr: Sequence[str] | None = None) -> str:
    """The run's status as ``flwr ls`` reports it (``running``, ``finished:completed``, ...)."""
    data = flwr_cli(["ls", connection, "--run-id", str(run_id)], env=env, timeout=60.0, flwr=flwr)
    runs = data.get("runs", [])
    if not runs:
        raise FlwrError(f"flwr ls knows no run {run_id}")
    return str(runs[0]["status"])


def app_dir() -> Path:
    """The Flower app folder: this checkout's root (its pyproject.toml has ``[tool.flwr.app]``).

    Raises
    ------
    FlwrError
        The package is not run from a checkout (``flwr run`` needs the app's source folder).
    """
    root = Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app]" not in pyproject.read_text():
        raise FlwrError(f"{root} is not the RareGraph-Synth source folder (no pyproject.toml with [tool.flwr.app]); "
                        "run from a checkout or pass --app")
    return root


def run_log(run_id: int, *, env: Mapping[str, str], connection: str = CONNECTION, timeout: float = 60.0,
            flwr: Sequence[str] | None = None) -> str:
    """The ServerApp's log of a run (``flwr log RUN_ID --show``); empty when it cannot be had."""
    try:
        done = _run([*(flwr or [executable("flwr")]), "log", str(run_id), connection, "--show"], env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout
