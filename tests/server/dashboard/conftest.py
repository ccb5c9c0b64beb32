"""Run folders for the live view's tests, made by the real `raregraph federate` (Flower's
simulation engine, real Opacus): two simulated sites, few rounds, tiny steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.bundle import StudyBundle
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium, write_consortium

ROOT = Path(__file__).resolve().parents[3]
RAREGRAPH = [sys.executable, "-m", "raregraph"] if (ROOT / "raregraph" / "__main__.py").is_file() else \
    [str(Path(sys.executable).with_name("raregraph"))]
EPSILON = 5.0  # each site's budget


@pytest.fixture(scope="session")
def dashboard_sites(tmp_path_factory, demo_bundle, coordinator_key) -> list[Path]:
    """Two simulated hospitals (30–45 patients each)."""
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    out = tmp_path_factory.mktemp("dashboard") / "sites"
    write_consortium(simulate_consortium(knowledge_from_bundle(bundle), sites=2, seed=5, min_patients=30,
                                         max_patients=45), out)
    return [out / "site-1", out / "site-2"]


def federate_command(run_dir: Path, sites: list[Path], bundle: Path, pub: Path, *, rounds: int,
                     local_steps: int = 2) -> list[str]:
    """`raregraph federate` with the cheapest settings that still train, charge and evaluate."""
    args = [*RAREGRAPH, "federate", "--bundle", bundle, "--pub", pub, "--rounds", rounds, "--epsilon", EPSILON,
            "--local-steps", local_steps, "--batch-size", 8, "--pretrain-steps", 5, "--eval-per-disease", 2,
            "--out", run_dir, "-q"]
    for site in sites:
        args += ["--sites", site]
    return [str(a) for a in args]


def federate_env() -> dict[str, str]:
    return {**os.environ, "RAY_DEDUP_LOGS": "0", "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, dashboard_sites, demo_bundle, coordinator_key) -> Path:
    """A finished 2-site, 2-round run folder (model, ledgers, site keys, evaluation)."""
    run_dir = tmp_path_factory.mktemp("dashboard") / "run"
    proc = subprocess.run(federate_command(run_dir, dashboard_sites, demo_bundle, coordinator_key[1], rounds=2),
                          cwd=ROOT, env=federate_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir
