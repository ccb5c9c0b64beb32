"""The containerised federation next to `raregraph deploy local`, on this machine.

Prints one table: image sizes (from `docker image inspect`), then for each way of running the
same consortium (3 simulated hospitals, 3 DP rounds, the same settings) the time from start
to the first checkpointed round and the wall time of the whole run (medians; the two ways
alternate run by run). Starts Docker's daemon when none runs (and stops it afterwards) and
builds the images from this checkout first (cached layers make that quick after the container
test), timing the build.

    python benchmarks/bench_containers.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy import flower  # noqa: E402
from deploy.compose import write_compose  # noqa: E402
from deploy.local import LocalDeployment, checkpointed_round, prepare  # noqa: E402
from deploy.processes import free_port  # noqa: E402
from deploy.images import make_images  # noqa: E402
from tests.containers import CACHE, ROOT, Compose, base_image, container_engine, storage_driver  # noqa: E402
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
    with container_engine(CACHE / "dockerd.log") as version:
        started = time.monotonic()
        built = make_images(ROOT, base=base_image())
        print(f"Docker {version}, {storage_driver()} storage; images ready in {time.monotonic() - started:.0f} s\n")
        print("| image | size (GiB) |\n|---|---:|")
        for image in built:
            print(f"| `{image.tag}` | {image.size / 2**30:.2f} |")
        compare(args.runs)


def compare(runs: int) -> None:
    rows = {"containers (docker-compose, 4 containers)": containers, "processes (`deploy local`)": processes}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
    for i in range(runs):  # interleaved, so a busy spell of the machine hits both ways alike
        for name, fn in rows.items():
            with tempfile.TemporaryDirectory() as tmp:
                times[name].append(fn(Path(tmp)))
            print(f"run {i + 1}/{runs}, {name}: round 1 after {times[name][-1][0]:.0f} s, "
                  f"whole run {times[name][-1][1]:.0f} s", file=sys.stderr, flush=True)
    print("\n| 3 sites, 3 DP rounds of 20 steps | start → round 1 (s) | whole run (s) | runs |\n|---|---:|---:|---:|")
    for name, got in times.items():
        print(f"| {name} | {statistics.median(t[0] for t in got):.0f} | {statistics.median(t[1] for t in got):.0f} "
              f"| {runs} |", flush=True)


if __name__ == "__main__":
    main()
