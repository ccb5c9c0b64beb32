"""Knowledge-guided vs plain diffusion on one simulated site, same data, same budget.

Usage::

    .venv/bin/python benchmarks/bench_quality.py [--per-disease 30 100] [--seeds 0 1 2] [--steps 4000] [--json]

For each size (average patients per study disease) and seed:

1. simulate one site of 2 × size × diseases patients from the demo study (the simulator's
   hidden truth deviates from the graph) and split it at random into training and
   holdout halves;
2. train ``--guidance kg`` and ``--guidance none`` (γ = 0, no graph inputs; same network,
   same steps, same seed) on the training half; with ``--validation-share`` each model holds
   back that share of the training half and keeps its own best checkpoint (early stopping on
   the denoising loss, :class:`shared.model.settings.TrainConfig`);
3. sample as many synthetic patients as the holdout has (default DDIM steps) and score them
   against the **holdout** (generalisation; the headline) and against the training half.

Prints one Markdown table per metric with the mean over seeds and each seed's value, and
the ratio kg / none for MMD². No thresholds are asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kg.assembly.pipeline import Sources, build_graph  # noqa: E402
from kg.bundle import make_bundle  # noqa: E402
from kg.study import load_study  # noqa: E402
from kg.embedded import default_study  # noqa: E402
from shared.bundle import StudyBundle  # noqa: E402
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium  # noqa: E402
from shared.evaluation.fidelity import mmd2_unbiased, prevalence_r2  # noqa: E402
from shared.evaluation.fidelity import cooccurrence_r2, lab_wasserstein  # noqa: E402
from shared.model.generation import DEFAULT_SAMPLER_STEPS, generate_tensors  # noqa: E402
from shared.model.fit import train_local  # noqa: E402
from shared.signing.keys import load_private_key, new_keypair  # noqa: E402
from shared.trajectories.tensorize import tensorize  # noqa: E402
from shared.model.settings import TrainConfig  # noqa: E402


def bundle_in(folder: Path, *, keep_graph: bool = False) -> StudyBundle:
    """The demo bundle in ``folder/bundle``, signed by a new key ``folder/k.key`` (``k.pub``); with
    ``keep_graph`` the graph it was cut from is saved in ``folder/kg`` (for ``bundle grow``)."""
    key, pub = new_keypair(folder / "k")
    graph = build_graph(Sources.default())
    if keep_graph:
        graph.save(folder / "kg")
    make_bundle(graph, load_study(default_study()), sign_key=load_private_key(key), out=folder / "bundle")
    return StudyBundle.load(folder / "bundle", pub)


def metrics(synth, real) -> dict[str, float]:
    return {
        "mmd2": mmd2_unbiased(real, synth, permutations=1).mmd2,
        "prevalence_r2": prevalence_r2(real, synth).r2_identity,
        "cooccurrence_r2": cooccurrence_r2(real, synth).r2_identity,
        "lab_w1": lab_wasserstein(real, synth).mean,
    }


def run(per_disease: list[int], seeds: list[int], steps: int, sampler_steps: int = DEFAULT_SAMPLER_STEPS,
        validation_share: float = 0.0) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = bundle_in(Path(tmp))
        knowledge = knowledge_from_bundle(bundle)
        n_dis = len(bundle.diseases)
        for size in per_disease:
            for seed in seeds:
                total = 2 * size * n_dis
                (_, cohort), = simulate_consortium(knowledge, sites=1, seed=1000 + seed, min_patients=total,
                                                   max_patients=total)
                tensors, _ = tensorize(cohort, bundle)
                order = np.random.default_rng(seed).permutation(tensors.n)
                train, holdout = tensors.subset(order[: tensors.n // 2]), tensors.subset(order[tensors.n // 2:])
                for guidance in ("kg", "none"):
                    started = time.perf_counter()
                    trained, _ = train_local(train, bundle, guidance=guidance,
                                             config=TrainConfig(steps=steps, seed=seed,
                                                               validation_share=validation_share))
                    seconds = time.perf_counter() - started
                    synth = generate_tensors(trained, bundle, n=holdout.n, disease=None, seed=seed, steps=sampler_steps,
                                             guidance_scale=1.0, eta=0.0)
                    row = {"per_disease": size, "seed": seed, "guidance": guidance, "train_patients": train.n,
                           "train_seconds": round(seconds, 1),
                           "best_step": (trained.meta["training"]["validation"] or {}).get("best_step", steps),
                           "steps_run": trained.meta["training"]["steps"]}
                    row |= {f"holdout_{k}": v for k, v in metrics(synth, holdout).items()}
                    row |= {f"train_{k}": v for k, v in metrics(synth, train).items()}
                    row["real_vs_holdout_mmd2"] = mmd2_unbiased(train, holdout, permutations=1).mmd2
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
    return rows


def table(rows: list[dict], key: str, title: str, lower_is_better: bool) -> str:
    sizes = sorted({r["per_disease"] for r in rows})
    out = [f"#### {title} ({'lower' if lower_is_better else 'higher'} is better)", "",
           "| patients per disease | KG-guided | plain (γ = 0, no graph) | kg / plain |", "|---|---:|---:|---:|"]
    for size in sizes:
        vals = {g: [r[key] for r in rows if r["per_disease"] == size and r["guidance"] == g] for g in ("kg", "none")}
        kg, none = statistics.mean(vals["kg"]), statistics.mean(vals["none"])
        fmt = lambda xs: f"{statistics.mean(xs):.4f} ({', '.join(f'{x:.4f}' for x in xs)})"  # noqa: E731
        ratio = f"{kg / none:.2f}" if none else "—"
        out.append(f"| {size} | {fmt(vals['kg'])} | {fmt(vals['none'])} | {ratio} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-disease", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=TrainConfig().steps)
    parser.add_argument("--sampler-steps", type=int, default=DEFAULT_SAMPLER_STEPS, help="DDIM steps")
    parser.add_argument("--validation-share", type=float, default=0.0,
                        help="early stopping on this share of the training half, for both models (0: off)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.per_disease, args.seeds, args.steps, args.sampler_steps, args.validation_share)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    stop = (f"; early stopping on {args.validation_share:.0%} of the training half (steps kept / run: "
            + ", ".join(f"{r['guidance']} {r['best_step']}/{r['steps_run']}" for r in rows) + ")") if args.validation_share else ""
    print(f"Seeds {args.seeds}; {args.steps} training steps{stop}; {args.sampler_steps} DDIM steps; mean (per seed).\n")
    print(table(rows, "holdout_mmd2", "MMD²_u vs held-out patients", True), "\n")
    print(table(rows, "train_mmd2", "MMD²_u vs training patients", True), "\n")
    print(table(rows, "holdout_prevalence_r2", "Prevalence R² around y = x, vs holdout", False), "\n")
    print(table(rows, "holdout_cooccurrence_r2", "Co-occurrence R² around y = x, vs holdout", False), "\n")
    print(table(rows, "holdout_lab_w1", "Lab W1 (mean), vs holdout", True), "\n")
    base = {s: statistics.mean(r["real_vs_holdout_mmd2"] for r in rows if r["per_disease"] == s)
            for s in sorted({r["per_disease"] for r in rows})}
    print("Real training half vs holdout MMD²_u (the noise floor): "
          + ", ".join(f"{s}/disease: {v:.4f}" for s, v in base.items()))


if __name__ == "__main__":
    main()
