"""Quality of the federated model against privacy: ε ∈ {1, 4, 10, no DP}, KG-guided vs plain.

Usage::

    .venv/bin/python benchmarks/bench_dp_quality.py [--rounds 5] [--local-steps 60] [--json]

Three simulated hospitals (20 % of each held out), Flower's simulation engine, the real
ClientApp with DP-SGD at every site under the given ε (δ = 1e-5). "no DP" runs the same
rounds and steps with a ClientApp that trains without clipping or noise (benchmark only: the
product has no such switch). KG-guided runs include the coordinator's public-prior
pretraining; plain runs (γ = 0, no graph inputs) have none, since it uses the graph. Each
site then evaluates the final model on its own patients: MMD²_u (synthetic vs training),
prevalence R², DCR membership AUROC (training vs held-out); the table gives the mean over
sites (and the range). No thresholds are asserted.
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

from benchmarks.bench_quality import bundle_in  # noqa: E402
from raregraph.api.nonprivate_client import nonprivate_client  # noqa: E402
from raregraph.demo import HOLDOUT_SHARE  # noqa: E402
from shared.ehr.cohort import split_patients  # noqa: E402
from deploy.simulation import run_simulated, site_nodes  # noqa: E402
from server.config import RunConfig  # noqa: E402
from shared.privacy.settings import DEFAULT_CLIP_NORM  # noqa: E402
from shared.ehr.omop_tables import write_omop  # noqa: E402
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium  # noqa: E402
from shared.evaluation.suite import evaluate  # noqa: E402
from shared.model.generation import generate_tensors  # noqa: E402
from shared.model.checkpoint import load_model  # noqa: E402
from shared.trajectories.tensorize import tensorize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=RunConfig.lr)
    parser.add_argument("--clip-norm", type=float, default=DEFAULT_CLIP_NORM, help="per-patient clip norm C")
    parser.add_argument("--epsilons", default="1,4,10,nodp", help="comma-separated; nodp: no DP")
    parser.add_argument("--guidance", default="kg,none")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    epsilons = [None if e == "nodp" else float(e) for e in args.epsilons.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bundle = bundle_in(tmp)
        pub = next(tmp.glob("*.pub"))
        sites = []
        for profile, cohort in simulate_consortium(knowledge_from_bundle(bundle), sites=3, seed=args.seed):
            name = f"site-{profile.site}"
            train_part, held_part = split_patients(cohort, share=HOLDOUT_SHARE, seed=args.seed + profile.site)
            write_omop(train_part, tmp / "sites" / name)
            sites.append({"name": name, "train": tensorize(train_part, bundle)[0],
                          "holdout": tensorize(held_part, bundle)[0]})
        for guidance in args.guidance.split(","):
            for epsilon in epsilons:
                label = f"{guidance}-{'nodp' if epsilon is None else epsilon}"
                nodes = site_nodes([tmp / "sites" / s["name"] for s in sites], state_root=tmp / label / "state",
                                   pub=pub, epsilon=epsilon or 1.0, delta=1e-5, clip_norm=args.clip_norm, batch_size=32,
                                   noise_multiplicity=2)
                run = RunConfig(run_dir=tmp / label, bundle_path=tmp / "bundle", bundle_pub=pub, rounds=args.rounds,
                                local_steps=args.local_steps, guidance=guidance, seed=args.seed, min_sites=3,
                                lr=args.lr)
                started = time.perf_counter()
                run_simulated(run, nodes, show_progress=False,
                              client_app=nonprivate_client(nodes) if epsilon is None else None)
                seconds = time.perf_counter() - started
                model = load_model(tmp / label / "model", bundle)
                per_site = []
                for s in sites:
                    synth = generate_tensors(model, bundle, n=s["train"].n, disease=None, seed=args.seed, steps=50,
                                             guidance_scale=1.0, eta=0.0, conditions=s["train"].disease)
                    m = evaluate(s["train"], synth, holdout=s["holdout"], seed=args.seed, bundle=bundle)
                    per_site.append({"mmd2": m["fidelity"]["mmd2"], "prevalence_r2": m["fidelity"]["prevalence_r2_identity"],
                                     "dcr_auroc": m["privacy"]["dcr_membership_auroc"]})
                rows.append({"guidance": guidance, "epsilon": epsilon, "seconds": round(seconds, 1),
                             "sites": per_site})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    n = [len(s["train"].disease) for s in sites]
    print(f"3 sites ({', '.join(map(str, n))} training patients), {args.rounds} rounds × {args.local_steps} local "
          f"steps, lr {args.lr:g}, clip norm {args.clip_norm:g}, batch 32, noise multiplicity 2, δ = 1e-5; mean over sites (min–max).\n")
    print("| guidance | ε per site | MMD²_u ↓ | prevalence R² ↑ | DCR membership AUROC (→ 0.5) | run (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = []
        for key, fmt in (("mmd2", ".4f"), ("prevalence_r2", ".3f"), ("dcr_auroc", ".3f")):
            vals = [s[key] for s in r["sites"]]
            cells.append(f"{statistics.mean(vals):{fmt}} ({min(vals):{fmt}}–{max(vals):{fmt}})")
        eps = "no DP" if r["epsilon"] is None else f"{r['epsilon']:g}"
        print(f"| {'KG-guided' if r['guidance'] == 'kg' else 'plain'} | {eps} | {' | '.join(cells)} | {r['seconds']} |")


if __name__ == "__main__":
    main()
