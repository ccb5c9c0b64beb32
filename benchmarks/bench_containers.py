"""The containerised federation next to `raregraph deploy local`, on this machine.

Prints one table: image sizes (from `docker image inspect`), then for each way of running the
same consortium (3 simulated hospitals, 3 DP rounds, the same settings) the time from start
to the first checkpointed round and the wall time of the whole run. Needs a running Docker
engine and built images (`raregraph deploy images`, or the container test).

    python benchmarks/bench_containers.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy import flower  # noqa: E402
from deploy.compose import write_compose  # noqa: E402
from deploy.images import TARGETS, image_tag  # noqa: E402
from deploy.local import LocalDeployment, checkpointed_round, prepare  # noqa: E402
from deploy.processes import free_port  # noqa: E402
from tests.containers import Compose  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

SETTINGS = dict(epsilon=8.0, rounds=3, local_steps=20, pretrain_steps=0, pretrain_patients=64, batch_size=16,
                noise_multiplicity=2, min_patients=30, max_patients=120, seed=5, round_timeout=600.0)


def containers(tmp: Path) -> tuple[float, float]:
    layout = write_compose(tmp / "consortium", sites=3, port=free_port(), first_port=free_port() + 100, **SETTINGS)
    c = Compose(layout.compose_file, project=f"rgbench{os.getpid()}")
    flwr = c.exec_argv("superlink", "flwr")
    env = dict(os.environ)
    try:
        started = time.monotonic()
        c("up", "-d", "--no-build", "superlink")
        wait_until(lambda: c.exec("superlink", "python", "-m", "deploy.health", check=False).returncode == 0,
                   timeout=300, what="coordinator health")
        for site in layout.sites:
            flower.register_supernode(Path(f"/certs/supernode-auth/{site}.pub"), env=env, name=site, flwr=flwr)
        c("up", "-d", "--no-build")
        run_id = flower.submit_run(Path("/app"), env=env, run_config=Path("/config/run-config.toml"), flwr=flwr)
        wait_until(lambda: checkpointed_round(layout.run_dir) >= 1, timeout=900, what="round 1", poll=0.2)
        first = time.monotonic() - started
        wait_until(lambda: flower.run_status(run_id, env=env, flwr=flwr).startswith("finished"), timeout=1200,
                   what="the run", poll=1.0)
        return first, time.monotonic() - started
    finally:
        c.down()


def processes(tmp: Path) -> tuple[float, float]:
    layout = prepare(tmp / "local", sites=3, **SETTINGS)
    with LocalDeployment(layout) as d:
        started = time.monotonic()
        d.start_all()
        run_id = d.submit()
        d.wait_for_round(1, timeout=900, poll=0.2)
        first = time.monotonic() - started
        d.wait(run_id, timeout=1200)
        return first, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| image | size (GiB) |\n|---|---:|")
    for target in TARGETS:
        size = int(subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image_tag(target)],
                                  capture_output=True, text=True, check=True).stdout)
        print(f"| `{image_tag(target)}` | {size / 2**30:.2f} |")
    rows = {"containers (docker-compose, 4 containers)": containers, "processes (`deploy local`)": processes}
    print("\n| 3 sites, 3 DP rounds of 20 steps | start → round 1 (s) | whole run (s) | runs |\n|---|---:|---:|---:|")
    for name, fn in rows.items():
        times = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                times.append(fn(Path(tmp)))
        print(f"| {name} | {statistics.median(t[0] for t in times):.0f} | {statistics.median(t[1] for t in times):.0f} "
              f"| {args.runs} |", flush=True)


if __name__ == "__main__":
    main()
