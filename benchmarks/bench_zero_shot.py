"""Zero-shot: a study disease with no patients at any site, generated through the trained model.

Usage::

    .venv/bin/python benchmarks/bench_zero_shot.py [--disease ORPHA:x] [--epsilon 4] [--seeds 0,1,2]

Every patient of the chosen disease is removed from every site before training; those
patients, pooled over the sites, are the test cohort. The federated model is trained on the
other diseases (per-site ε, the real ClientApp), then asked for the unseen disease. Compared
against the same test cohort (MMD²_u, prevalence R², co-occurrence R², phenotype pairs the
graph supports):

- ours (KG-guided diffusion): the disease's graph prior reaches the network through the
  prior vector, the schedule shift and the per-channel prior head, all public;
- plain diffusion trained the same way: the disease is only an untrained embedding to it;
- the graph-priors-only sampler (no training data at all).

Also given, for scale: the same metrics for the model on a disease it *was* trained on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.bench_quality import bundle_in  # noqa: E402
from benchmarks.bench_table import pool_conditions, train_diffusion  # noqa: E402
from shared.ehr.cohort import partition  # noqa: E402
from shared.evaluation.numbers import flatten  # noqa: E402
from shared.ehr.omop_tables import write_omop  # noqa: E402
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium  # noqa: E402
from shared.evaluation.suite import evaluate  # noqa: E402
from shared.baselines.prior import PriorSampler  # noqa: E402
from shared.trajectories.tensorize import tensorize  # noqa: E402
from shared.trajectories.tensors import TrajectoryTensors  # noqa: E402

KEYS = (("MMD²_u ↓", "fidelity.mmd2", ".4f"), ("prevalence R² ↑", "fidelity.prevalence_r2_identity", ".2f"),
        ("co-occurrence R² ↑", "fidelity.cooccurrence_r2_identity", ".2f"),
        ("pheno pairs supported ↑", "plausibility.phenotype_pairs_supported", ".3f"))


def only(pool: TrajectoryTensors, d: int) -> TrajectoryTensors:
    return pool.subset(np.flatnonzero(pool.disease == d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--disease", default=None, help="the unseen disease [default: the study's most common]")
    parser.add_argument("--epsilon", default="4", help="per-site ε, or nodp")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=40)
    args = parser.parse_args()
    epsilon = None if args.epsilon == "nodp" else float(args.epsilon)
    results: dict[str, list[dict]] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            bundle = bundle_in(tmp)
            ids = list(bundle.diseases["id"])
            cohorts = list(simulate_consortium(knowledge_from_bundle(bundle), sites=args.sites, seed=seed))
            all_tensors = [tensorize(c, bundle)[0] for _, c in cohorts]
            counts = np.bincount(np.concatenate([t.disease for t in all_tensors]), minlength=len(ids))
            unseen = ids.index(args.disease) if args.disease else int(np.argmax(counts))
            seen = int(np.argsort(-counts)[1])  # the next most common: a trained-on disease for scale
            sites, tests, seen_real = [], [], []
            for (profile, cohort), t in zip(cohorts, all_tensors):
                held = set(t.person_id[t.disease == unseen].tolist())
                train, test = partition(cohort, held)
                folder = tmp / "sites" / f"site-{profile.site}"
                write_omop(train, folder)
                sites.append({"name": folder.name, "folder": folder})
                tests.append(t.subset(np.flatnonzero(t.disease == unseen)))
                seen_real.append(t.subset(np.flatnonzero(t.disease == seen)))
            test, seen_test = TrajectoryTensors.concat(tests), TrajectoryTensors.concat(seen_real)
            print(f"seed {seed}: unseen {ids[unseen]} ({test.n} patients held out of training everywhere); "
                  f"seen {ids[seen]} ({seen_test.n})", file=sys.stderr, flush=True)
            generators = {name: train_diffusion(guidance, tmp, bundle, sites, epsilon=epsilon, seed=seed, args=args)
                          for name, guidance in (("ours (KG-guided)", "kg"), ("plain diffusion", "none"))}
            generators["graph priors only"] = PriorSampler(bundle)
            # every generator through the one interface, with the same conditions and seed
            pools = {name: g.sample(pool_conditions(bundle), seed=seed) for name, g in generators.items()}
            for name, pool in pools.items():
                m = flatten(evaluate(test, only(pool, unseen), seed=seed, bundle=bundle))
                results.setdefault(f"{name}: unseen disease", []).append(m)
            m = flatten(evaluate(seen_test, only(pools["ours (KG-guided)"], seen), seed=seed, bundle=bundle))
            results.setdefault("ours (KG-guided): a trained-on disease", []).append(m)
    eps = "no DP" if epsilon is None else f"ε = {epsilon:g} per site"
    print(f"{args.sites} sites, {eps}, {args.rounds} rounds × {args.local_steps} local steps; mean ± sd over seeds "
          f"{args.seeds}\n")
    print("| generator | " + " | ".join(k for k, _, _ in KEYS) + " |")
    print("|---|" + "---:|" * len(KEYS))
    for name, rows in results.items():
        cells = []
        for _, key, fmt in KEYS:
            vals = [r[key] for r in rows if r.get(key) is not None]
            cells.append("—" if not vals else f"{statistics.mean(vals):{fmt}}" + (
                f" ± {statistics.stdev(vals):{fmt}}" if len(vals) > 1 else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
