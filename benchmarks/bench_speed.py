"""Speed of the generative core on this machine: training on one site and sampling.

Usage::

    .venv/bin/python benchmarks/bench_speed.py [--runs 3] [--patients 300] [--generate 20000]
        [--steps 10 25] [--scales 1 1.5] [--json]

1. Training: simulate one site of 2 × ``--patients`` patients (demo study), split it in
   halves at random, train the default model for the default number of steps
   (``TrainConfig``) on the training half, ``--train-runs`` times; median wall time, loss.
2. Speed-ups at the default sampler (``DEFAULT_SAMPLER_STEPS`` DDIM steps, bfloat16,
   guidance scale 1), ``--generate`` patients in the trained disease mix, sampling only:

   - *plain loop*, the sampler before the fast path: ``model(...)`` then
     ``schedule.step`` at every step, batches of 16,384 under bfloat16 autocast;
   - the plain loop with batches of 1,024 (smaller working set);
   - the fast path (:func:`shared.model.sampling.sample`) with ``workers=1``: chunks of one
     disease on the calling thread, torch splitting every operation between the cores;
   - the fast path as shipped: chunks side by side on one thread per core.

   The variants run interleaved (A B C D, then D C B A, …) so drifting load hits them alike;
   each row gives the median rate and the median of the per-round speed-ups over the plain
   loop.
3. Generation with the fast path at ``--steps`` × bfloat16/float32 × ``--scales``:
   patients per minute, sampling only and with the mapping to OMOP events (``to_cohort``).
4. Quality parity at the default sampler: synthetic patients with the held-out half's disease
   mix scored against the held-out half (MMD²_u, prevalence R² around y = x; mean of 3
   sampling seeds) for the plain loop in bfloat16 and the fast path in bfloat16 and float32,
   and the share of event bits equal to the fast float32 path's (same seeds).

Threads: torch uses all cores (2 here). No thresholds are asserted. The machine may be
shared: the speed-ups (paired) are steadier than the absolute rates.
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_quality import bundle_in  # noqa: E402
from shared.ehr.cohort import split_patients  # noqa: E402
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium  # noqa: E402
from shared.evaluation.fidelity import mmd2_unbiased, prevalence_r2  # noqa: E402
from shared.model.generation import DEFAULT_SAMPLER_STEPS, draw_conditions, generate_tensors  # noqa: E402
from shared.model.fit import train_local  # noqa: E402
from shared.model.checkpoint import TrainedModel  # noqa: E402
from shared.model.sampling import sample, sample_plain  # noqa: E402
from shared.trajectories.tensorize import TensorLayout, tensorize, to_cohort  # noqa: E402
from shared.model.settings import TrainConfig  # noqa: E402


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}–{max(xs):.1f})"


def plain_loop(trained: TrainedModel, disease: np.ndarray, *, steps: int, seed: int, batch_size: int = 16384,
               precision: str = "bf16") -> torch.Tensor:
    """The sampler before the fast path (guidance scale 1, bf16 autocast): :func:`sample_plain`."""
    return sample_plain(trained.model, trained.schedule, trained.tables, disease=disease, steps=steps,
                        guidance_scale=1.0, seed=seed, batch_size=batch_size, precision=precision)


def speedups(trained: TrainedModel, conditions: np.ndarray, *, runs: int, steps: int) -> list[dict]:
    """Patients per minute of each path, interleaved runs; speed-up over the first, paired."""
    fast = {"steps": steps, "guidance_scale": 1.0, "precision": "bf16"}
    paths: list[tuple[str, Callable[[int], object]]] = [
        ("plain loop (before): model(...) + schedule.step, batches of 16,384, bf16 autocast",
         lambda seed: plain_loop(trained, conditions, steps=steps, seed=seed)),
        ("plain loop, batches of 1,024",
         lambda seed: plain_loop(trained, conditions, steps=steps, seed=seed, batch_size=1024)),
        ("fast path, chunks on the calling thread (workers=1, torch threads split each op)",
         lambda seed: sample(trained.model, trained.schedule, trained.tables, disease=conditions, seed=seed,
                             workers=1, **fast)),
        (f"fast path as shipped: chunks on {torch.get_num_threads()} threads, one torch thread each",
         lambda seed: sample(trained.model, trained.schedule, trained.tables, disease=conditions, seed=seed,
                             **fast)),
    ]
    seconds: list[list[float]] = [[] for _ in paths]
    for run in range(runs):
        for k in range(len(paths)) if run % 2 == 0 else reversed(range(len(paths))):
            started = time.perf_counter()
            paths[k][1](run)
            seconds[k].append(time.perf_counter() - started)
            print(f"run {run}: {paths[k][0][:40]}… {seconds[k][-1]:.1f} s", file=sys.stderr)
    n = len(conditions)
    return [{"path": name, "per_min": [n * 60 / s for s in secs],
             "speedup": [b / s for b, s in zip(seconds[0], secs)]} for (name, _), secs in zip(paths, seconds)]


def quality(trained: TrainedModel, bundle, held, *, steps: int, seeds: int = 3) -> list[dict]:
    """MMD²_u and prevalence R² against the held-out patients; event bits equal to fast fp32."""
    cond = np.asarray(held.disease)
    like = TensorLayout.from_bundle(bundle)

    def as_tensors(x: torch.Tensor):
        return trained.layout.from_vectors(x, disease=cond, person_id=np.arange(held.n),
                                           index_date=np.full(held.n, np.datetime64("2020-01-01")), like=like)

    draws = {
        "plain loop, bf16 autocast": lambda s: plain_loop(trained, cond, steps=steps, seed=s),
        "fast path, bf16": lambda s: sample(trained.model, trained.schedule, trained.tables, disease=cond,
                                            steps=steps, guidance_scale=1.0, seed=s, precision="bf16"),
        "fast path, fp32": lambda s: sample(trained.model, trained.schedule, trained.tables, disease=cond,
                                            steps=steps, guidance_scale=1.0, seed=s, precision="fp32"),
    }
    synth = {name: [as_tensors(draw(s)) for s in range(seeds)] for name, draw in draws.items()}
    reference = synth["fast path, fp32"]
    return [{"path": name,
             "mmd2": float(np.mean([mmd2_unbiased(held, t, permutations=1).mmd2 for t in tensors])),
             "prevalence_r2": float(np.mean([prevalence_r2(held, t).r2_identity for t in tensors])),
             "events_equal": float(np.mean([(t.events == r.events).mean() for t, r in zip(tensors, reference)]))}
            for name, tensors in synth.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--patients", type=int, default=300, help="training patients (as many are held out)")
    parser.add_argument("--generate", type=int, default=20_000)
    parser.add_argument("--train-runs", type=int, default=None, help="training runs (default: --runs)")
    parser.add_argument("--steps", type=int, nargs="+", default=[DEFAULT_SAMPLER_STEPS, 25],
                        help="DDIM steps of the generation table")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5], help="guidance scales")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    train_runs = args.runs if args.train_runs is None else args.train_runs
    results: dict = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                 "python": platform.python_version(), "torch": torch.__version__}}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = bundle_in(Path(tmp))
        (_, cohort), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=0,
                                           min_patients=2 * args.patients, max_patients=2 * args.patients)
        train_part, held_part = split_patients(cohort, share=0.5, seed=1)
        site, held = tensorize(train_part, bundle)[0], tensorize(held_part, bundle)[0]
        train_times, losses, model = [], [], None
        for run in range(max(train_runs, 1)):
            started = time.perf_counter()
            model, loss = train_local(site, bundle, guidance="kg", config=TrainConfig(seed=run))
            train_times.append(time.perf_counter() - started)
            losses.append(float(sum(loss[-100:]) / 100))
            print(f"train run {run}: {train_times[-1]:.1f} s", file=sys.stderr)
        results["training"] = {"patients": site.n, "steps": TrainConfig().steps, "seconds": train_times,
                               "final_loss": losses}
        conditions = draw_conditions(model, bundle, n=args.generate, disease=None, rng=np.random.default_rng(0))
        results["speedups"] = speedups(model, conditions, runs=args.runs, steps=DEFAULT_SAMPLER_STEPS)
        rows = []
        for steps in args.steps:
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
                    print(json.dumps(row), file=sys.stderr)
        results["generation"] = rows
        results["quality"] = quality(model, bundle, held, steps=DEFAULT_SAMPLER_STEPS)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    m = results["machine"]
    print(f"{m['cpus']} CPUs, torch {m['torch']} with {m['torch_threads']} threads; "
          f"medians (min–max) of {args.runs} runs.\n")
    tr = results["training"]
    print(f"Training, {tr['patients']} patients, {tr['steps']} steps (default model): "
          f"{med(tr['seconds'])} s; final loss {statistics.median(tr['final_loss']):.3f}\n")
    print(f"Sampling {args.generate:,} patients at the default {DEFAULT_SAMPLER_STEPS} DDIM steps, bfloat16, "
          "guidance scale 1 (patients per minute, thousands; speed-up over the plain loop, paired by round):\n")
    print("| path | patients / min (k) | speed-up |")
    print("|---|---:|---:|")
    for r in results["speedups"]:
        print(f"| {r['path']} | {med([x / 1000 for x in r['per_min']])} | {statistics.median(r['speedup']):.2f}× |")
    print(f"\nGeneration of {args.generate:,} patients with the fast path (patients per minute, thousands):\n")
    print("| DDIM steps | precision | guidance scale | sampling only | sampling + OMOP events |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['steps']} | {r['precision']} | {r['guidance_scale']} | "
              f"{med([x / 1000 for x in r['sample_per_min']])} | {med([x / 1000 for x in r['with_omop_per_min']])} |")
    print(f"\nQuality at {DEFAULT_SAMPLER_STEPS} DDIM steps against the {held.n} held-out patients "
          "(mean of 3 sampling seeds):\n")
    print("| path | MMD²_u ↓ | prevalence R² ↑ | event bits equal to fast fp32 |")
    print("|---|---:|---:|---:|")
    for q in results["quality"]:
        print(f"| {q['path']} | {q['mmd2']:.4f} | {q['prevalence_r2']:.3f} | {q['events_equal']:.5f} |")


if __name__ == "__main__":
    main()
