"""Server-side work per round at N simulated sites (Flower simulation engine, DP-SGD).

Usage::

    .venv/bin/python benchmarks/bench_federation.py [--sites 10] [--rounds 3] [--local-steps 5] [--json]

Simulates N small hospitals from the demo study, runs a federation with DP at every site,
and reads each round's ``server_seconds`` (configure, validate every update, aggregate,
checkpoint) and ``round_seconds`` (configure to checkpoint) from the checkpoint state.
Issue 4's goal: server work ≤ 5 % of the round's wall time at 10 sites. No thresholds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_quality import bundle_in  # noqa: E402
from deploy.simulation import run_simulated, site_nodes  # noqa: E402
from server.config import RunConfig  # noqa: E402
from shared.runs import RunFolder  # noqa: E402
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium, write_consortium  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bundle = bundle_in(tmp)
        write_consortium(simulate_consortium(knowledge_from_bundle(bundle), sites=args.sites, seed=3, min_patients=30,
                                             max_patients=60), tmp / "sites")
        sites = [tmp / "sites" / f"site-{i}" for i in range(1, args.sites + 1)]
        pub = next(tmp.glob("*.pub"))
        nodes = site_nodes(sites, state_root=tmp / "state", pub=pub, epsilon=10.0, delta=1e-5, clip_norm=1.0,
                           batch_size=16, noise_multiplicity=1)
        run = RunConfig(run_dir=tmp / "run", bundle_path=tmp / "bundle", bundle_pub=pub, rounds=args.rounds,
                        local_steps=args.local_steps, min_sites=args.sites)
        run_simulated(run, nodes, show_progress=False)
        rounds = json.loads(RunFolder(tmp / "run").checkpoint_state.read_text())["rounds"]
    if args.json:
        print(json.dumps(rounds, indent=2))
        return
    print(f"{args.sites} sites, {args.local_steps} DP-SGD steps per site per round, {args.rounds} rounds.\n")
    print("| round | sites averaged | round wall time (s) | server work (s) | server share |")
    print("|---:|---:|---:|---:|---:|")
    for r in rounds:
        print(f"| {r['round']} | {r['aggregated']} | {r['round_seconds']:.2f} | {r['server_seconds']:.3f} | "
              f"{100 * r['server_seconds'] / r['round_seconds']:.1f} % |")
    share = statistics.median(r["server_seconds"] / r["round_seconds"] for r in rounds)
    print(f"\nMedian server share: {100 * share:.1f} %")


if __name__ == "__main__":
    main()
