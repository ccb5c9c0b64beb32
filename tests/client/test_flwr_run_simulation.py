"""`flwr run .` as a local simulation: simulated sites derive their node configs from the
partition id and the run config (client/simulated_site.py); the real thing runs end to end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.app import node_from_context
from client.config import NodeConfig
from client.simulated_site import is_simulated, simulated_node
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory) -> tuple[Path, Path]:
    from kg.embedded import make_embedded_bundle

    made = make_embedded_bundle(tmp_path_factory.mktemp("coordinator"))
    return made.bundle.resolve(), made.pub.resolve()


def run_config(run_dir: Path, bundle: Path, pub: Path, **more) -> dict:
    return {"run-dir": str(run_dir), "bundle.path": str(bundle), "bundle.pub": str(pub), "train.seed": 0,
            "simulation.min-patients": 20, "simulation.max-patients": 30, **more}


def test_a_real_node_config_wins_and_missing_settings_fail_in_one_line() -> None:
    assert not is_simulated({"site-id": "h1", "partition-id": 0}) and is_simulated({"partition-id": 0})
    with pytest.raises(ConfigError, match="missing 'site-id'"):  # a deployment's node config: unchanged
        NodeConfig.from_mapping({"data-path": "/data"})
    with pytest.raises(ConfigError) as err:
        simulated_node({"run-dir": "", "bundle.path": "relative/bundle"}, {"partition-id": 0, "num-partitions": 2})
    assert "\n" not in str(err.value) and "run-dir, bundle.path, bundle.pub" in str(err.value)
    with pytest.raises(ConfigError, match="unknown run config key 'simulation.epsilom'"):
        simulated_node({"run-dir": "/r", "bundle.path": "/b", "bundle.pub": "/k.pub", "simulation.epsilom": 1.0},
                       {"partition-id": 0})


def test_sites_are_simulated_once_per_partition(tmp_path: Path, coordinator) -> None:
    bundle, pub = coordinator
    config = run_config(tmp_path / "run", bundle, pub, **{"simulation.epsilon": 3.0})
    nodes = [simulated_node(config, {"partition-id": k, "num-partitions": 2}) for k in (0, 1)]
    assert [n.site_id for n in nodes] == ["site-1", "site-2"]
    for node in nodes:
        assert node.state_path == (tmp_path / "run" / "state" / node.site_id).resolve()
        assert node.data_path is not None and node.data_path.is_dir() and node.coordinator_pub == pub
        assert node.epsilon == 3.0 and node.site_key.is_file()
        assert (tmp_path / "run" / "site-keys" / f"{node.site_id}.pub").read_bytes() == \
            node.site_key.with_suffix(".pub").read_bytes()
    # the same partition again (a later round, a new ClientApp process): the same site, data and key
    assert simulated_node(config, {"partition-id": 1, "num-partitions": 2}) == nodes[1]
    # a folder of sites instead: partition k trains on the k-th, and there must be enough
    sites = tmp_path / "run" / "state"
    node = simulated_node({**config, "simulation.sites-dir": str(sites), "run-dir": str(tmp_path / "run2")},
                          {"partition-id": 1, "num-partitions": 2})
    assert node.site_id == "site-2" and node.data_path == sites.resolve() / "site-2"
    with pytest.raises(ConfigError, match="holds 2 sites for 3 simulated SuperNodes"):
        simulated_node({**config, "simulation.sites-dir": str(sites)}, {"partition-id": 0, "num-partitions": 3})


def test_node_from_context_routes_a_virtual_supernode(tmp_path: Path, coordinator) -> None:
    from flwr.app import Context, RecordDict

    bundle, pub = coordinator
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 2}, state=RecordDict(),
                      run_config=run_config(tmp_path / "run", bundle, pub))
    assert node_from_context(context).site_id == "site-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_local_superlink(home: Path) -> None:
    """Stop the managed SuperLink `flwr run` started for this FLWR_HOME (found by its database path)."""
    database = str(home / "local-superlink" / "state.db")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"flower-superlink") for a in argv[:2]) and database.encode() in argv:
            os.kill(int(proc.name), signal.SIGTERM)


@pytest.mark.slow
def test_flwr_run_dot_is_a_local_simulation(tmp_path: Path, coordinator) -> None:
    from shared.model import META_FILE
    from shared.privacy.audit.audit import audit_run
    from shared.runs import RunFolder

    bundle, pub = coordinator
    home, run_dir = tmp_path / "flwr-home", tmp_path / "run"
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_DEDUP_LOGS": "0",
           "UV_CACHE_DIR": str(tmp_path / "uv"), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           # the managed SuperLink's ports (default 39091/39093): our own, so a SuperLink another
           # FLWR_HOME left running is not mistaken for this one
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
           "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port())}
    overrides = (f'run-dir="{run_dir}" bundle.path="{bundle}" bundle.pub="{pub}" num-server-rounds=1 '
                 "train.local-steps=2 model.pretrain-steps=0 eval.per-disease=0 "
                 "simulation.min-patients=20 simulation.max-patients=30 simulation.batch-size=8")
    flwr = str(BIN / "flwr")
    started = time.monotonic()
    try:
        # no connection named: the default `local` one of a fresh Flower config (2 simulated SuperNodes)
        done = subprocess.run([flwr, "run", ".", "--stream", "--run-config", overrides], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=480)
        listed = subprocess.run([flwr, "ls", "--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
    finally:
        _stop_local_superlink(home)
    log = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, log
    runs = json.loads(listed.stdout[listed.stdout.find("{"):])["runs"]
    assert [r["status"] for r in runs] == ["finished:completed"], log
    assert (RunFolder(run_dir).model / META_FILE).is_file(), log
    audit = audit_run(run_dir)
    assert audit.ok, audit
    assert sorted(p.stem for p in RunFolder(run_dir).ledger.glob("*.jsonl")) == ["site-1", "site-2"]
    assert time.monotonic() - started < 480
