"""The issue-6 table: every method, every metric, at equal per-site privacy, across seeds.

Usage::

    .venv/bin/python benchmarks/bench_table.py run --sites 3 --epsilons 1,4,10,nodp --seeds 0,1,2
    .venv/bin/python benchmarks/bench_table.py report            # Markdown tables + the PNG plot

``run`` appends one JSON line per (sites, seed, method, ε) to ``--results`` and skips the
lines already there, so a long grid can be run in pieces (and a killed run loses one cell).

Harness, the same for every method:

- a simulated consortium (``--sites`` hospitals, 30–300 patients each, the demo study),
  20 % of every site held out and never trained on;
- each method is fitted on the sites' training patients at the same per-site (ε, δ = 1e-5);
- it then draws ``POOL_PER_DISEASE`` patients of every study disease through the one generator
  interface (:class:`shared.baselines.base.SyntheticGenerator`, same conditions and seed for
  every method), and each site measures
  that pool, cut to its own disease mix (:func:`client.sample_evaluation.match_disease_mix`), against its
  training and held-out patients with the full suite (:func:`shared.evaluation.suite.evaluate`):
  the federated evaluation protocol of the product, run in-process. A cell is the mean
  over sites; the table gives mean ± sd over seeds;
- the consortium view (benchmark only: no party holds these patients in a deployment): the
  same suite once, against all sites' training and held-out patients pooled. With 30–300
  patients a site, a site's own prevalence estimates are noisy enough that even the true
  generator scores a low per-site prevalence R²; the ``truth`` row shows that ceiling.

Methods:

- ``kg``: ours — knowledge-guided diffusion, the coordinator's public-prior pretraining,
  Flower simulation engine, the real ClientApp with DP-SGD at every site;
- ``none``: plain diffusion, same network and federation, γ = 0 and no graph inputs;
- ``learned``: a per-(disease, feature) schedule shift learned from the data, no graph;
- ``dpgan``: a conditional GAN on the same vectors, DP-SGD on the discriminator, FedAvg
  (:mod:`shared.baselines.dpgan`, an in-process federation with the same rounds);
- ``marginals``: independent per-disease marginals, one Gaussian release per site
  (:mod:`shared.baselines.marginals`);
- ``prior``: patients from the graph's priors alone (:mod:`shared.baselines.prior`; no patient
  data, so ε does not apply: one row, drawn flat across ε in the plot);
- ``truth``: the reference, not a method: fresh patients from the same simulated hospitals
  (:func:`shared.simulation.consortium.fresh_patients`, ``TRUTH_SCALE`` × each site's size, pooled),
  what a perfect consortium generator would produce. Every metric's ceiling under this
  harness; no ε.

"no DP" trains the same steps without clipping or noise (benchmark-only switch).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.bench_quality import bundle_in  # noqa: E402
from client.sample_evaluation import match_disease_mix  # noqa: E402
from raregraph.demo import HOLDOUT_SHARE  # noqa: E402
from shared.ehr.cohort import split_patients  # noqa: E402
from deploy.simulation import run_simulated, site_nodes  # noqa: E402
from server.config import RunConfig  # noqa: E402
from shared.evaluation.numbers import flatten  # noqa: E402
from shared.privacy.settings import DEFAULT_CLIP_NORM  # noqa: E402
from shared.ehr.omop_tables import write_omop  # noqa: E402
from shared.simulation.consortium import fresh_patients, knowledge_from_bundle, simulate_consortium  # noqa: E402
from shared.evaluation.suite import evaluate  # noqa: E402
from shared.model.generation import DEFAULT_SAMPLER_STEPS, DiffusionGenerator  # noqa: E402
from shared.model.checkpoint import load_model  # noqa: E402
from raregraph.api.nonprivate_client import nonprivate_client  # noqa: E402
from shared.baselines.base import SyntheticGenerator  # noqa: E402
from shared.baselines.consortium import fit_dpgan, fit_marginals, fit_prior  # noqa: E402
from shared.trajectories.tensorize import tensorize  # noqa: E402
from shared.trajectories.tensors import TrajectoryTensors  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "table.jsonl"
PLOT = ROOT / "benchmarks" / "results" / "fidelity_vs_epsilon.png"
POOL_PER_DISEASE = 150  # more than any simulated site has of one disease
DELTA = 1e-5
TRUTH_SCALE = 20  # fresh patients per real patient of a site, for the ``truth`` reference
#: version of the measuring protocol; rows measured under another one are not mixed in
#: (2: the synthetic side is the largest sample in the site's mix, and the consortium view)
EVALUATION = 2
METHODS = ("kg", "none", "learned", "dpgan", "marginals", "prior", "truth")
NO_EPSILON = ("prior", "truth")  # see no patient data under DP: one row, any ε
LABELS = {"kg": "ours: KG-guided diffusion", "none": "plain diffusion", "learned": "learned schedule (no graph)",
          "dpgan": "DP-GAN", "marginals": "independent marginals", "prior": "graph priors only",
          "truth": "reference: fresh patients of the same hospitals"}
#: (column, dotted key in the suite's dict, format, better)
COLUMNS = (
    ("MMD²_u", "fidelity.mmd2", ".4f", "↓"),
    ("prevalence R²", "fidelity.prevalence_r2_identity", ".2f", "↑"),
    ("co-occurrence R²", "fidelity.cooccurrence_r2_identity", ".2f", "↑"),
    ("transition R²", "fidelity.transition_r2_identity", ".2f", "↑"),
    ("discriminator AUROC", "fidelity.discriminator_auroc", ".2f", "→0.5"),
    ("TSTR/TRTR disease", "utility.disease_auroc_ratio", ".2f", "↑"),
    ("TSTR/TRTR drug→AE", "utility.drug_adverse_event_auroc_ratio", ".2f", "↑"),
    ("DCR MIA AUROC", "privacy.dcr_membership_auroc", ".3f", "→0.5"),
    ("DOMIAS AUROC", "privacy.domias_auroc", ".3f", "→0.5"),
    ("attr. disclosure gap", "privacy.attribute_disclosure_gap", ".3f", "→0"),
    ("exact copies", "privacy.exact_copy_share", ".3f", "0"),
    ("pheno pairs supported", "plausibility.phenotype_pairs_supported", ".3f", "↑"),
)


def consortium(tmp: Path, bundle, *, sites: int, seed: int) -> list[dict]:
    out = []
    for profile, cohort in simulate_consortium(knowledge_from_bundle(bundle), sites=sites, seed=seed):
        name = f"site-{profile.site}"
        train, held = split_patients(cohort, share=HOLDOUT_SHARE, seed=seed + profile.site)
        write_omop(train, tmp / "sites" / name)
        out.append({"name": name, "folder": tmp / "sites" / name, "train": tensorize(train, bundle)[0],
                    "holdout": tensorize(held, bundle)[0], "profile": profile})
    return out


def pool_conditions(bundle) -> np.ndarray:
    return np.repeat(np.arange(len(bundle.diseases)), POOL_PER_DISEASE)


def train_diffusion(guidance: str, tmp: Path, bundle, sites: list[dict], *, epsilon, seed: int,
                    args, aggregate: str = "mean") -> DiffusionGenerator:
    """One federation of ``sites`` (run folder :func:`run_folder`), its model as a generator."""
    label = run_folder(tmp, guidance, epsilon=epsilon, seed=seed, aggregate=aggregate).name
    pub = next(tmp.glob("*.pub"))
    nodes = site_nodes([s["folder"] for s in sites], state_root=tmp / label / "state", pub=pub,
                       epsilon=epsilon or 1.0, delta=DELTA, clip_norm=DEFAULT_CLIP_NORM, batch_size=32,
                       noise_multiplicity=2)
    # each run is a fresh federation with fresh site ledgers, so it keeps its own consortium record
    # (the default, RUN/../consortium.json, is shared by every run in ``tmp`` and would rightly
    # refuse a later run's new ledgers as rolled back)
    run = RunConfig(run_dir=tmp / label, bundle_path=tmp / "bundle", bundle_pub=pub, rounds=args.rounds,
                    local_steps=args.local_steps, guidance=guidance, seed=seed, min_sites=len(sites),
                    eval_per_disease=0, aggregate=aggregate, consortium_record=tmp / label / "consortium.json")
    run_simulated(run, nodes, show_progress=False, client_app=nonprivate_client(nodes) if epsilon is None else None)
    return DiffusionGenerator(load_model(tmp / label / "model", bundle), bundle, steps=DEFAULT_SAMPLER_STEPS,
                              guidance_scale=1.0, eta=0.0)


def run_folder(tmp: Path, guidance: str, *, epsilon, seed: int, aggregate: str = "mean") -> Path:
    """Where :func:`train_diffusion` keeps a run."""
    return tmp / (f"{guidance}-{epsilon}-{seed}" + ("" if aggregate == "mean" else f"-{aggregate}"))


def fit_diffusion(guidance: str, tmp: Path, bundle, sites: list[dict], *, epsilon, seed: int,
                  args) -> TrajectoryTensors:
    """The diffusion model's pool, for the benchmarks that measure it alone (``bench_domias``)."""
    model = train_diffusion(guidance, tmp, bundle, sites, epsilon=epsilon, seed=seed, args=args)
    return model.sample(pool_conditions(bundle), seed=seed)


def train_marginals(tmp: Path, bundle, sites: list[dict], *, epsilon, seed: int, args) -> SyntheticGenerator:
    # a seeded DP generator: benchmark only (a deployment draws it from OS entropy)
    return fit_marginals([s["train"] for s in sites], len(bundle.diseases), epsilon=epsilon, delta=DELTA,
                         generator=np.random.default_rng(seed))


def train_dpgan(tmp: Path, bundle, sites: list[dict], *, epsilon, seed: int, args) -> SyntheticGenerator:
    import torch

    # a seeded DP generator: benchmark only (a deployment draws it from OS entropy)
    return fit_dpgan([s["train"] for s in sites], bundle, epsilon=epsilon, delta=DELTA, rounds=args.rounds,
                     local_steps=args.local_steps, seed=seed, generator=torch.Generator().manual_seed(seed))


def train_prior(tmp: Path, bundle, sites: list[dict], *, epsilon, seed: int, args) -> SyntheticGenerator:
    return fit_prior(bundle)  # no patient data: nothing to fit


#: every method but ``truth``, by name: (tmp, bundle, sites, *, epsilon, seed, args) → a generator
TRAINERS = {"kg": functools.partial(train_diffusion, "kg"), "none": functools.partial(train_diffusion, "none"),
            "learned": functools.partial(train_diffusion, "learned"), "dpgan": train_dpgan,
            "marginals": train_marginals, "prior": train_prior}


def fit_truth(bundle, sites: list[dict], *, seed: int):
    fresh = [tensorize(fresh_patients(s["profile"], TRUTH_SCALE * (s["train"].n + s["holdout"].n),
                                      seed=10_000 + 100 * seed + i), bundle)[0] for i, s in enumerate(sites)]
    pool = TrajectoryTensors.concat(fresh)
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(pool.disease == d))[:POOL_PER_DISEASE] for d in range(len(bundle.diseases))]
    return pool.subset(np.sort(np.concatenate(rows)))


def measure_one(pool, bundle, train, holdout, *, seed: int) -> dict:
    synth = match_disease_mix(pool, train.disease, seed=seed)
    flat = flatten(evaluate(train, synth, holdout=holdout, seed=seed, bundle=bundle))
    return {"patients": train.n, "synthetic": synth.n, **{key: flat.get(key) for _, key, _, _ in COLUMNS}}


def measure(pool, bundle, sites: list[dict], *, seed: int) -> tuple[list[dict], dict]:
    """(each site's numbers, the consortium view's)."""
    per_site = [{"site": s["name"], **measure_one(pool, bundle, s["train"], s["holdout"], seed=seed)} for s in sites]
    pooled = measure_one(pool, bundle, TrajectoryTensors.concat([s["train"] for s in sites]),
                         TrajectoryTensors.concat([s["holdout"] for s in sites]), seed=seed)
    return per_site, pooled


def run_grid(args) -> None:
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.results.is_file():
        for line in args.results.read_text().splitlines():
            r = json.loads(line)
            if r.get("evaluation", 1) == EVALUATION:
                done.add((r["sites"], r["seed"], r["method"], r["epsilon"], r["rounds"], r["local_steps"]))
    epsilons = [None if e == "nodp" else float(e) for e in args.epsilons.split(",")]
    for seed in [int(s) for s in args.seeds.split(",")]:
        todo = [(m, e) for m in args.methods.split(",") for e in epsilons
                if (args.sites, seed, m, e, args.rounds, args.local_steps) not in done
                and (m not in NO_EPSILON or e is None)]
        if not todo:
            continue
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            bundle = bundle_in(tmp)
            sites = consortium(tmp, bundle, sites=args.sites, seed=seed)
            for method, epsilon in todo:
                started = time.perf_counter()
                if method in TRAINERS:
                    generator = TRAINERS[method](tmp, bundle, sites, epsilon=epsilon, seed=seed, args=args)
                    pool = generator.sample(pool_conditions(bundle), seed=seed)
                elif method == "truth":  # the reference draws the hospitals' own patients: no generator
                    pool = fit_truth(bundle, sites, seed=seed)
                else:
                    raise SystemExit(f"unknown method {method!r}; known: {', '.join(METHODS)}")
                fit_seconds = time.perf_counter() - started
                per_site, pooled = measure(pool, bundle, sites, seed=seed)
                row = {"sites": args.sites, "seed": seed, "method": method, "epsilon": epsilon,
                       "rounds": args.rounds, "local_steps": args.local_steps, "evaluation": EVALUATION,
                       "fit_seconds": round(fit_seconds, 1), "patients": [s["patients"] for s in per_site],
                       "per_site": per_site, "pooled": pooled}
                with args.results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{args.sites} sites, seed {seed}, {method}, ε={epsilon}: "
                      f"MMD² {np.mean([s['fidelity.mmd2'] for s in per_site]):.4f}, {fit_seconds:.0f} s",
                      file=sys.stderr, flush=True)


def site_mean(row: dict, key: str) -> float | None:
    values = [s[key] for s in row["per_site"] if s.get(key) is not None]
    return statistics.mean(values) if values else None


def pooled_value(row: dict, key: str) -> float | None:
    return row["pooled"].get(key)


def cell(values: list[float], fmt: str) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt.lstrip('+')}}"  # a sign on the mean only


def print_table(mine: list[dict], columns, value) -> None:
    """One Markdown table: a row per (method, ε), a cell per column, mean ± sd over seeds of
    ``value(row, key)``; a row measured on fewer seeds than the table's says how many."""
    n_seeds = len({r["seed"] for r in mine})
    print("| method | ε | " + " | ".join(f"{c} {b}" for c, _, _, b in columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    eps_order = sorted({r["epsilon"] for r in mine}, key=lambda e: float("inf") if e is None else e)
    for method in METHODS:
        for eps in ([None] if method in NO_EPSILON else eps_order):
            cell_rows = [r for r in mine if r["method"] == method and r["epsilon"] == eps]
            if not cell_rows:
                continue
            cells = [cell([v for r in cell_rows if (v := value(r, key)) is not None], fmt) for _, key, fmt, _ in columns]
            label = "any (no DP)" if method in NO_EPSILON else "no DP" if eps is None else f"{eps:g}"
            if len(cell_rows) < n_seeds:
                label += f" ({len(cell_rows)} seed{'s' if len(cell_rows) > 1 else ''})"
            print(f"| {LABELS[method]} | {label} | " + " | ".join(cells) + f" |  <!-- n={len(cell_rows)} -->")


def report(args) -> None:
    rows = [r for line in args.results.read_text().splitlines()
            if (r := json.loads(line)).get("evaluation", 1) == EVALUATION]
    for n_sites in sorted({r["sites"] for r in rows}):
        mine = [r for r in rows if r["sites"] == n_sites]
        seeds = sorted({r["seed"] for r in mine})
        settings = sorted({(r["rounds"], r["local_steps"]) for r in mine})
        head = (f"seeds {', '.join(map(str, seeds))}; {', '.join(f'{a} rounds × {b} local steps' for a, b in settings)}; "
                "δ = 1e-5 per site")
        print(f"\n**{n_sites} sites, each site's view** ({head}; mean over sites, then mean ± sd over seeds)\n")
        print_table(mine, COLUMNS, site_mean)
        print(f"\n**{n_sites} sites, consortium view** ({head}; all sites' patients pooled, benchmark only; "
              "mean ± sd over seeds)\n")
        print_table(mine, COLUMNS, pooled_value)
    plot(rows, args.plot)
    print(f"\nplot: {args.plot.relative_to(ROOT) if args.plot.is_relative_to(ROOT) else args.plot}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    site_counts = sorted({r["sites"] for r in rows})
    prevalence = "fidelity.prevalence_r2_identity"
    panels = (("fidelity.mmd2", "MMD²_u, each site (lower is better)", True, site_mean),
              (prevalence, "prevalence R², each site (higher is better)", False, site_mean),
              (prevalence, "prevalence R², consortium (higher is better)", False, pooled_value))
    fig, axes = plt.subplots(len(site_counts), len(panels), figsize=(15, 3.8 * len(site_counts)), squeeze=False)
    ticks = [1.0, 4.0, 10.0, 30.0]
    for i, n_sites in enumerate(site_counts):
        for j, (key, title, log, value) in enumerate(panels):
            ax = axes[i][j]
            for method in METHODS:
                xs, ys, es = [], [], []
                for eps, x in zip((1.0, 4.0, 10.0, None), ticks):
                    want = None if method in NO_EPSILON else eps  # one row, drawn at every ε
                    vals = [v for r in rows if r["sites"] == n_sites and r["method"] == method
                            and r["epsilon"] == want and (v := value(r, key)) is not None]
                    if vals:
                        xs.append(x)
                        ys.append(statistics.mean(vals))
                        es.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
                if xs:
                    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=LABELS[method])
            ax.set_xscale("log")
            ax.set_xticks(ticks, ["1", "4", "10", "no DP"])
            ax.minorticks_off()
            if log:
                ax.set_yscale("log")
            else:
                ax.set_ylim(-1.0, 1.0)
            ax.set_xlabel("ε per site")
            ax.set_title(f"{n_sites} sites: {title}", fontsize=10)
            ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="fit, sample and measure; append to --results")
    r.add_argument("--sites", type=int, default=3)
    r.add_argument("--epsilons", default="1,4,10,nodp")
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--methods", default=",".join(METHODS))
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--local-steps", type=int, default=40)
    r.add_argument("--results", type=Path, default=RESULTS)
    p = sub.add_parser("report", help="print the Markdown tables and write the plot")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()
    (run_grid if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()
