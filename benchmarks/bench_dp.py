"""Cost of one DP-SGD step vs one non-private step, same model, same batch.

Usage::

    .venv/bin/python benchmarks/bench_dp.py [--runs 20] [--batch 32] [--json]

For the default denoiser and a smaller one, with noise multiplicity 1 and 4: the median
wall time of a training step (forward, backward, optimizer) without DP and with DP-SGD
through Opacus (per-sample gradients by hooks, clipping, Gaussian noise, Poisson batches of
expected size ``--batch``), with per-patient clipping by Opacus' hooks (every per-patient
gradient materialised) and by book-keeping (``shared.privacy.clipping``, one backward pass; the
default). Issue 4's goal is a ratio ≤ 1.5. No thresholds are asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.bench_quality import bundle_in  # noqa: E402
from shared.privacy.dp_sgd import Mechanism, make_private  # noqa: E402
from shared.privacy.dp_sgd import backward as private_backward  # noqa: E402
from shared.model.checkpoint import build  # noqa: E402
from shared.model.training import shuffled_batches, train_steps  # noqa: E402

ARCHS = {"default (hidden 128, 2 blocks)": {}, "small (hidden 64, 1 block)": {"hidden": 64, "mix_hidden": 128, "blocks": 1}}


MODES = ("hooks", "bookkeeping")


def step_times(model, optimizer, batches, schedule, tables, *, runs: int, multiplicity: int,
               backward=None) -> list[float]:
    gen = torch.Generator().manual_seed(1)
    train_steps(model, optimizer, batches, schedule=schedule, tables=tables, steps=3, cond_drop=0.1, generator=gen,
                multiplicity=multiplicity, backward=backward)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        train_steps(model, optimizer, batches, schedule=schedule, tables=tables, steps=1, cond_drop=0.1,
                    generator=gen, multiplicity=multiplicity, backward=backward)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = bundle_in(Path(tmp))
        for label, arch in ARCHS.items():
            for k in (1, 4):
                model, schedule, tables, layout = build(bundle, guidance="kg", denoiser=arch)
                x0 = torch.sign(torch.randn(args.patients, layout.dim))
                disease = torch.randint(0, layout.n_diseases, (args.patients,))
                gen = torch.Generator().manual_seed(0)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
                plain = step_times(model, opt, shuffled_batches(x0, disease, batch_size=args.batch, generator=gen),
                                   schedule, tables, runs=args.runs, multiplicity=k)
                row = {"model": label, "parameters": sum(p.numel() for p in model.parameters()),
                       "multiplicity": k, "plain_ms": 1000 * statistics.median(plain)}
                for mode in MODES:
                    model, schedule, tables, layout = build(bundle, guidance="kg", denoiser=arch)
                    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
                    mech = Mechanism(noise_multiplier=1.0, clip_norm=1.0, sample_rate=args.batch / args.patients,
                                     noise_multiplicity=k, grad_sample_mode=mode)
                    pm, po, batches = make_private(model, opt, x0, disease, mechanism=mech, generator=gen)
                    private = step_times(pm, po, batches, schedule, tables, runs=args.runs, multiplicity=k,
                                         backward=private_backward)
                    row[f"{mode}_ms"] = 1000 * statistics.median(private)
                rows.append(row)
                print(json.dumps(rows[-1]), file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"Batch {args.batch} (expected Poisson batch for DP), {torch.get_num_threads()} threads, median of "
          f"{args.runs} steps.\n")
    print("| model | parameters | noise multiplicity | non-DP step (ms) | DP, Opacus hooks (ms) | ratio "
          "| DP, book-keeping (ms) | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['parameters']:,} | {r['multiplicity']} | {r['plain_ms']:.1f} | "
              f"{r['hooks_ms']:.1f} | {r['hooks_ms'] / r['plain_ms']:.2f}× | {r['bookkeeping_ms']:.1f} | "
              f"{r['bookkeeping_ms'] / r['plain_ms']:.2f}× |")


if __name__ == "__main__":
    main()
