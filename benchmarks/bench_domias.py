"""Is our DOMIAS reading a leak or a small holdout's noise? DOMIAS with a large reference set.

Usage::

    .venv/bin/python benchmarks/bench_domias.py --sites 5 --seeds 0,1,2 --epsilon 4

In the issue-6 table each site runs DOMIAS with half of its 20 % holdout as the attacker's
reference density and scores its training patients against the other half: 3–25 patients, so
a generator that leaks nothing reads anywhere in 0.5 ± 0.06–0.18 per site, and the density
ratio itself rests on a handful of patients. This script fits the same consortium as
``bench_table.py`` (same simulator seeds, sites, split, federation and DP settings) and attacks
each site's share of the sample two ways:

- ``site holdout``: the table's attack;
- ``large reference``: the attacker's reference density is ``--fresh`` new patients of the
  same simulated hospital (:func:`shared.simulation.consortium.fresh_patients`), and the training patients
  are scored against *all* the site's held-out patients (real non-members, never trained on).

The reference generator (fresh patients, ``truth``) cannot leak and is attacked the same way:
what it reads above 0.5 is the harness's own bias. Mean ± sd over seeds of the mean over sites;
the no-leak SD (Hanley–McNeil) is that of one site's attack, mean over sites and seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_quality import bundle_in  # noqa: E402
from benchmarks.bench_table import consortium, fit_diffusion, fit_truth  # noqa: E402
from client.sample_evaluation import match_disease_mix  # noqa: E402
from shared.simulation.consortium import fresh_patients  # noqa: E402
from shared.evaluation.attacks import domias_auroc  # noqa: E402
from shared.evaluation.stats import auroc_null_sd  # noqa: E402
from shared.trajectories.tensorize import tensorize  # noqa: E402

COLUMNS = ("domias_site", "null_sd_site", "domias_reference", "null_sd_reference")
HEADERS = ("DOMIAS, site holdout (the table's)", "no-leak SD", "DOMIAS, large reference", "no-leak SD")


def attack_site(pool, site: dict, fresh, *, seed: int) -> dict[str, float]:
    """Both DOMIAS attacks on one site's share of the sample."""
    synth = match_disease_mix(pool, site["train"].disease, seed=seed)
    small = domias_auroc(synth, site["train"], site["holdout"], seed=seed)
    large = domias_auroc(synth, site["train"], site["holdout"], seed=seed, reference=fresh)
    return {"domias_site": small.auroc, "null_sd_site": auroc_null_sd(small.n_members, small.n_holdout_eval),
            "domias_reference": large.auroc, "null_sd_reference": auroc_null_sd(large.n_members, large.n_holdout_eval)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epsilon", default="4", help="ε per site for our model, or 'nodp'")
    parser.add_argument("--fresh", type=int, default=600, help="fresh patients per site: the attacker's reference")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=40)
    args = parser.parse_args()
    epsilon = None if args.epsilon == "nodp" else float(args.epsilon)
    results: dict[str, list[dict[str, float]]] = {"ours": [], "reference": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            bundle = bundle_in(tmp)
            sites = consortium(tmp, bundle, sites=args.sites, seed=seed)
            fresh = [tensorize(fresh_patients(s["profile"], args.fresh, seed=30_000 + 100 * seed + i), bundle)[0]
                     for i, s in enumerate(sites)]
            pools = {"ours": fit_diffusion("kg", tmp, bundle, sites, epsilon=epsilon, seed=seed, args=args),
                     "reference": fit_truth(bundle, sites, seed=seed)}
            for name, pool in pools.items():
                per_site = [attack_site(pool, s, f, seed=seed) for s, f in zip(sites, fresh, strict=True)]
                results[name].append({k: statistics.mean(p[k] for p in per_site) for k in COLUMNS})
                print(f"seed {seed} {name}: " + ", ".join(f"{k} {results[name][-1][k]:.3f}" for k in COLUMNS),
                      file=sys.stderr, flush=True)
    label = "no DP" if epsilon is None else f"ε = {epsilon:g}"
    print(f"{args.sites} sites, seeds {args.seeds}, ours at {label}; {args.fresh} fresh patients per site as the "
          f"large reference; mean ± sd over seeds of the mean over sites\n")
    print("| generator | " + " | ".join(HEADERS) + " |")
    print("|---|" + "---:|" * len(HEADERS))
    for name, rows in results.items():
        cells = []
        for k in COLUMNS:
            values = [r[k] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells.append(f"{statistics.mean(values):.3f} ± {sd:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
