"""Sampler steps: quality and speed of DDIM at 50 down to 2 steps, to choose the default.

One simulated site (``--patients``, half for training, half held out), the KG-guided model
trained non-privately for ``--train-steps``; synthetic patients with the held-out disease
mix are scored against the held-out half (MMD²_u, prevalence R² around y = x; mean of
``--seeds`` sampling seeds), and the sampling rate is measured on ``--generate`` patients
(bfloat16, guidance scale 1, median of ``--runs``).

    .venv/bin/python benchmarks/bench_sampler_steps.py [--steps 50 25 10 6 4 3 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.bench_quality import bundle_in  # noqa: E402
from shared.ehr.cohort import split_patients  # noqa: E402
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium  # noqa: E402
from shared.evaluation.fidelity import mmd2_unbiased, prevalence_r2  # noqa: E402
from shared.model.generation import generate_tensors  # noqa: E402
from shared.model.fit import train_local  # noqa: E402
from shared.trajectories.tensorize import tensorize  # noqa: E402
from shared.model.settings import TrainConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 25, 10, 6, 4, 3, 2])
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--generate", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = bundle_in(Path(tmp))
        (_, cohort), = simulate_consortium(knowledge_from_bundle(bundle), sites=1, seed=5,
                                           min_patients=args.patients, max_patients=args.patients)
        train_part, held_part = split_patients(cohort, share=0.5, seed=1)
        train, held = tensorize(train_part, bundle)[0], tensorize(held_part, bundle)[0]
        trained, _ = train_local(train, bundle, guidance="kg", config=TrainConfig(steps=args.train_steps, seed=0))
        print(f"One site: {train.n} training and {held.n} held-out patients; KG-guided model, {args.train_steps} "
              f"non-private steps; DDIM (η = 0), guidance scale 1, bfloat16. Quality: mean of {args.seeds} sampling "
              f"seeds against the held-out patients; speed: {args.generate:,} patients, median of {args.runs}.\n")
        print("| DDIM steps | MMD²_u ↓ | prevalence R² ↑ | patients / min |")
        print("|---:|---:|---:|---:|")
        for steps in args.steps:
            quality = []
            for seed in range(args.seeds):
                synth = generate_tensors(trained, bundle, n=held.n, disease=None, seed=seed, steps=steps,
                                         guidance_scale=1.0, eta=0.0, conditions=np.asarray(held.disease))
                quality.append((mmd2_unbiased(held, synth, permutations=1).mmd2,
                                prevalence_r2(held, synth).r2_identity))
            rates = []
            for run in range(args.runs):
                started = time.perf_counter()
                generate_tensors(trained, bundle, n=args.generate, disease=None, seed=100 + run, steps=steps,
                                 guidance_scale=1.0, eta=0.0)
                rates.append(args.generate / (time.perf_counter() - started) * 60)
            print(f"| {steps} | {np.mean([q[0] for q in quality]):.4f} | {np.mean([q[1] for q in quality]):.3f} | "
                  f"{statistics.median(rates):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
