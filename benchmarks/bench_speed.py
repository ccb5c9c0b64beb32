"""Speed of the generative core on this machine: training on one site and sampling.

Usage::

    .venv/bin/python benchmarks/bench_speed.py [--runs 3] [--patients 300] [--generate 100000] [--json]

1. Training: simulate one site of ``--patients`` patients (demo study), train the default
   model for the default number of steps (``TrainConfig``), ``--runs`` times; report the
   median wall time and the final loss.
2. Generation: sample ``--generate`` patients at 25 and 50 DDIM steps, bfloat16 and
   float32, guidance scale 1 (one network evaluation per step) and 1.5 (two); report
   patients per minute (median of ``--runs``), sampling only and sampling plus mapping to
   OMOP events (``to_cohort``).

Threads: torch uses all cores (2 here). No thresholds are asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.bench_quality import bundle_in  # noqa: E402
from shared.ehr.simulate import knowledge_from_bundle, simulate_consortium  # noqa: E402
from shared.generation import generate_tensors  # noqa: E402
from shared.local_training import train_local  # noqa: E402
from shared.tensorize import tensorize, to_cohort  # noqa: E402
from shared.training import TrainConfig  # noqa: E402


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}–{max(xs):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--generate", type=int, default=100_000)
    parser.add_argument("--train-runs", type=int, default=None, help="training runs (default: --runs)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5], help="guidance scales")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    train_runs = args.runs if args.train_runs is None else args.train_runs
    results: dict = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                 "python": platform.python_version(), "torch": torch.__version__}}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = bundle_in(Path(tmp))
        (_, cohort), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=0,
                                           min_patients=args.patients, max_patients=args.patients)
        site, _ = tensorize(cohort, bundle)
        train_times, losses, model = [], [], None
        for run in range(max(train_runs, 1)):
            started = time.perf_counter()
            model, loss = train_local(site, bundle, guidance="kg", config=TrainConfig(seed=run))
            train_times.append(time.perf_counter() - started)
            losses.append(float(sum(loss[-100:]) / 100))
            print(f"train run {run}: {train_times[-1]:.1f} s", file=sys.stderr)
        results["training"] = {"patients": site.n, "steps": TrainConfig().steps, "seconds": train_times,
                               "final_loss": losses}
        rows = []
        for steps in (25, 50):
            for precision in ("bf16", "fp32"):
                for scale in args.scales:
                    sample_s, total_s = [], []
                    for run in range(args.runs):
                        started = time.perf_counter()
                        t = generate_tensors(model, bundle, n=args.generate, disease=None, seed=run, steps=steps,
                                             guidance_scale=scale, eta=0.0, precision=precision)
                        sampled = time.perf_counter()
                        to_cohort(t, bundle, seed=run)
                        done = time.perf_counter()
                        sample_s.append(sampled - started)
                        total_s.append(done - started)
                    row = {"steps": steps, "precision": precision, "guidance_scale": scale,
                           "sample_per_min": [args.generate * 60 / s for s in sample_s],
                           "with_omop_per_min": [args.generate * 60 / s for s in total_s]}
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items()}), file=sys.stderr)
        results["generation"] = rows
    if args.json:
        print(json.dumps(results, indent=2))
        return
    m = results["machine"]
    print(f"{m['cpus']} CPUs, torch {m['torch']} with {m['torch_threads']} threads; medians (min–max) of {args.runs} runs.\n")
    tr = results["training"]
    print(f"Training, {tr['patients']} patients, {tr['steps']} steps (default model): "
          f"{med(tr['seconds'])} s; final loss {statistics.median(tr['final_loss']):.3f}\n")
    print(f"Generation of {args.generate:,} patients (patients per minute, thousands):\n")
    print("| DDIM steps | precision | guidance scale | sampling only | sampling + OMOP events |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['steps']} | {r['precision']} | {r['guidance_scale']} | "
              f"{med([x / 1000 for x in r['sample_per_min']])} | {med([x / 1000 for x in r['with_omop_per_min']])} |")


if __name__ == "__main__":
    main()
