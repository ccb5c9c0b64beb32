"""Server-side work per round at N simulated sites (Flower simulation engine, DP-SGD).

Usage::

    .venv/bin/python benchmarks/bench_federation.py [--sites 10] [--rounds 3] [--local-steps 5] [--json]
    .venv/bin/python benchmarks/bench_federation.py --sites 100 --min-patients 30 --max-patients 300 \
        --local-steps 2 --view        # issue 22's scale check

Simulates N small hospitals from the demo study, runs a federation with DP at every site,
and reads each round's ``server_seconds`` (configure, validate every update, aggregate,
checkpoint) and ``round_seconds`` (configure to checkpoint) from the checkpoint state.
Issue 4's goal: server work ≤ 5 % of the round's wall time at 10 sites. No thresholds.

``--view`` also serves the live view beside the run (as ``federate --serve-port``) and loads
its page and ``/api/status`` every 2 s while the run goes (issue 22: page load ≤ 1 s). The
peak memory of this process and every process under it (Ray's workers) is sampled from /proc.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_quality import bundle_in  # noqa: E402
from deploy.processes import free_port  # noqa: E402
from deploy.simulation import run_simulated, site_nodes  # noqa: E402
from server.config import RunConfig  # noqa: E402
from shared.runs import RunFolder  # noqa: E402
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium, write_consortium  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--min-patients", type=int, default=30)
    parser.add_argument("--max-patients", type=int, default=60)
    parser.add_argument("--view", action="store_true", help="serve the live view beside the run and time its page")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    memory = PeakMemory()
    with tempfile.TemporaryDirectory() as tmp_name, memory:
        tmp = Path(tmp_name)
        bundle = bundle_in(tmp)
        write_consortium(simulate_consortium(knowledge_from_bundle(bundle), sites=args.sites, seed=3,
                                             min_patients=args.min_patients, max_patients=args.max_patients),
                         tmp / "sites")
        sites = [tmp / "sites" / f"site-{i}" for i in range(1, args.sites + 1)]
        pub = next(tmp.glob("*.pub"))
        nodes = site_nodes(sites, state_root=tmp / "state", pub=pub, epsilon=10.0, delta=1e-5, clip_norm=1.0,
                           batch_size=16, noise_multiplicity=1)
        run = RunConfig(run_dir=tmp / "run", bundle_path=tmp / "bundle", bundle_pub=pub, rounds=args.rounds,
                        local_steps=args.local_steps, min_sites=args.sites, pretrain_steps=0, eval_per_disease=0)
        loads: dict[str, list[float]] = {"/": [], "/api/status": []}
        if args.view:
            from server.dashboard.beside import serve_beside
        port = free_port() if args.view else 0
        with serve_beside(run.run_dir, port=port) if args.view else nullcontext():
            stop = threading.Event()
            watcher = threading.Thread(target=_time_pages, args=(port, loads, stop), daemon=True)
            if args.view:
                watcher.start()
            started = time.perf_counter()
            run_simulated(run, nodes, show_progress=False)
            wall = time.perf_counter() - started
            stop.set()
            if args.view:
                watcher.join()
        rounds = json.loads(RunFolder(tmp / "run").checkpoint_state.read_text())["rounds"]
    if args.json:
        print(json.dumps({"rounds": rounds, "page_seconds": loads, "peak_rss_bytes": memory.peak, "wall": wall},
                         indent=2))
        return
    print(f"whole run {wall:.0f} s; peak memory of this process and its children {memory.peak / 2**30:.2f} GiB")
    for path, times in loads.items():
        if times:
            print(f"live view {path}: {len(times)} loads during the run, median {statistics.median(times):.3f} s, "
                  f"max {max(times):.3f} s")
    print(f"{args.sites} sites of {args.min_patients}-{args.max_patients} patients, {args.local_steps} DP-SGD steps "
          f"per site per round, {args.rounds} rounds.\n")
    print("| round | sites averaged | round wall time (s) | server work (s) | server share |")
    print("|---:|---:|---:|---:|---:|")
    for r in rounds:
        print(f"| {r['round']} | {r['aggregated']} | {r['round_seconds']:.2f} | {r['server_seconds']:.3f} | "
              f"{100 * r['server_seconds'] / r['round_seconds']:.1f} % |")
    share = statistics.median(r["server_seconds"] / r["round_seconds"] for r in rounds)
    print(f"\nMedian server share: {100 * share:.1f} %")




def _time_pages(port: int, loads: dict[str, list[float]], stop: threading.Event) -> None:
    """Load each page every 2 s until ``stop``; append each full load's seconds."""
    while not stop.is_set():
        for path, times in loads.items():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
                    answer.read()
            except OSError:
                continue
            times.append(time.perf_counter() - started)
        stop.wait(2.0)


class PeakMemory:
    """Samples, every 0.5 s, the summed resident memory of this process and all its descendants
    (/proc; Ray's workers included) and keeps the peak in ``peak`` (bytes)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import os
        me = os.getpid()
        while not self._stop.is_set():
            parents, rss = {}, {}
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry.name)] = int(fields[1])
                    rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
                except (OSError, IndexError, ValueError):
                    continue
            tree, frontier = {me}, [me]
            while frontier:
                parent = frontier.pop()
                children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
                tree.update(children)
                frontier.extend(children)
            self.peak = max(self.peak, sum(rss.get(pid, 0) for pid in tree))
            self._stop.wait(0.5)


if __name__ == "__main__":
    main()
