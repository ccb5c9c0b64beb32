"""What the robust aggregation rule costs in accuracy: ``fed.aggregate = mean`` against ``median`` (issue 18).

Usage::

    .venv/bin/python benchmarks/bench_aggregate.py [--sites 3 [5]] [--epsilons 4,nodp] [--seeds 0,1,2]

The issue-6 table's harness (:mod:`benchmarks.bench_table`: the same simulated consortium,
20 % of each site held out, the real ClientApp with DP-SGD at every site or its non-private
train handler for "no DP", 150 synthetic patients per disease, the full evaluation suite at
each site and on all sites pooled), at the demo's default size (5 rounds × 40 local steps,
KG guidance with the coordinator's pretraining). Per seed, the two rules train from the same
consortium, the same seeded pretraining and the same seeds; both use the default automatic
update clipping (``fed.max-update-norm = 0``). Runs alternate mean, median, so a change in the
machine's load falls on both. With DP the sites draw their noise from OS entropy, so a pair at
ε = 4 differs by its DP noise as well as by the rule; without DP only the rule differs.

Each table: one setting (sites, ε); a row per metric, median (min–max) over seeds for each
rule; "ratio" is the median rule's median over the mean rule's ("—" where the mean rule's
value is ≤ 0, as an R² can be); "paired Δ" is median − mean within each seed, median
(min–max) over seeds. Wall time is one run: federation, sampling and evaluation.

Size: the 25-minute target is not met. On the 2-core development machine, shared with other
jobs (load average 3–9), one run took 79–289 s (pretraining, federation, sampling and
evaluation); the default grid, 3 sites × {ε 4, no DP} × 3 seeds × 2 rules (12 runs), took 36
minutes, and the committed results (``--sites 3 5``, 24 runs) 62 minutes.

Writes ``benchmarks/results/aggregate.md`` (rewritten after every run, labelled partial until
the grid is done), ending with every run's resolved config and per-round log as JSON.
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
from benchmarks.bench_table import (COLUMNS, DELTA, consortium, measure, pool_conditions, pooled_value,  # noqa: E402
                                    run_folder, site_mean, train_diffusion)
from server.aggregation import RULES  # noqa: E402
from shared.model.generation import DiffusionGenerator  # noqa: E402
from shared.runs import RunFolder  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "aggregate.md"
#: accuracy columns of the issue-6 table (fidelity and utility; its privacy columns are not what a rule trades)
METRICS = COLUMNS[:7]
VIEWS = (("each site's view: mean over sites", site_mean),
         ("consortium view: all sites' patients pooled", pooled_value))


def train_with_rule(rule: str, tmp: Path, bundle, sites: list[dict], *, epsilon: float | None, seed: int,
                    args) -> tuple[DiffusionGenerator, dict, dict]:
    """``bench_table.train_diffusion`` ("kg") with ``fed.aggregate = rule``; (model, run settings, round log)."""
    model = train_diffusion("kg", tmp, bundle, sites, epsilon=epsilon, seed=seed, args=args, aggregate=rule)
    folder = run_folder(tmp, "kg", epsilon=epsilon, seed=seed, aggregate=rule)
    settings = json.loads(RunFolder(folder).settings.read_text())  # {"run_id", **RunConfig.as_mapping()}
    state = json.loads(RunFolder(folder).checkpoint_state.read_text())
    if state["rejected"]:  # a comparison of rules needs every site in every round
        raise SystemExit(f"{folder.name}: the coordinator rejected site updates: {state['rejected'][:3]}")
    return model, settings, state


def run_grid(args, rows: list[dict], total: int) -> None:
    epsilons = [None if e == "nodp" else float(e) for e in args.epsilons.split(",")]
    for n_sites in args.sites:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp_name:
                tmp = Path(tmp_name)
                bundle = bundle_in(tmp)
                sites = consortium(tmp, bundle, sites=n_sites, seed=seed)
                for epsilon in epsilons:
                    for rule in RULES:  # mean, then median: back to back on the same consortium
                        started = time.perf_counter()
                        model, settings, state = train_with_rule(rule, tmp, bundle, sites, epsilon=epsilon, seed=seed,
                                                            args=args)
                        pool = model.sample(pool_conditions(bundle), seed=seed)
                        fit_seconds = time.perf_counter() - started
                        per_site, pooled = measure(pool, bundle, sites, seed=seed)
                        factors = [u["clip_factor"] for r in state["rounds"] for u in r["updates"].values()]
                        rows.append({"sites": n_sites, "seed": seed, "epsilon": epsilon, "rule": rule,
                                     "fit_seconds": round(fit_seconds, 1),
                                     "run_seconds": round(time.perf_counter() - started, 1),
                                     "updates": len(factors), "clipped": sum(f < 1.0 for f in factors),
                                     "rejected": len(state["rejected"]), "per_site": per_site, "pooled": pooled,
                                     "config": {k: v for k, v in settings.items()
                                                if k not in ("run_id", "run-dir", "bundle.path", "bundle.pub")},
                                     "round_log": state["rounds"]})
                        print(f"[{len(rows)}/{total}] {n_sites} sites, seed {seed}, ε={epsilon}, {rule}: MMD² "
                              f"{site_mean(rows[-1], 'fidelity.mmd2'):.4f}, {rows[-1]['run_seconds']:.0f} s",
                              file=sys.stderr, flush=True)
                        write_results(args.results, rows, total, args)


def spread(values: list[float], fmt: str) -> str:
    """median (min–max)."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


def setting_table(rows: list[dict], value) -> list[str]:
    """Markdown lines: a row per metric, the two rules side by side, ratio and paired Δ."""
    by_rule = {rule: sorted((r for r in rows if r["rule"] == rule), key=lambda r: r["seed"]) for rule in RULES}
    paired = [(m, d) for m in by_rule["mean"] for d in by_rule["median"] if m["seed"] == d["seed"]]
    lines = ["| metric | mean (FedAvg) | median | ratio median/mean | paired Δ (median − mean) |",
             "|---|---:|---:|---:|---:|"]
    measures = [(f"{name} {better}", (lambda r, k=key: value(r, k)), fmt) for name, key, fmt, better in METRICS]
    measures.append(("wall time per run (s)", lambda r: r["run_seconds"], ".0f"))
    for name, get, fmt in measures:
        values = {rule: [v for r in by_rule[rule] if (v := get(r)) is not None] for rule in RULES}
        cells = [spread(values[rule], fmt) for rule in RULES]
        base = statistics.median(values["mean"]) if values["mean"] else None
        ratio = ("—" if not values["median"] or base is None or base <= 0
                 else f"{statistics.median(values['median']) / base:.2f}")
        deltas = [b - a for m, d in paired if (a := get(m)) is not None and (b := get(d)) is not None]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {ratio} | {spread(deltas, '+' + fmt)} |")
    clipped = {rule: f"{sum(r['clipped'] for r in by_rule[rule])} of {sum(r['updates'] for r in by_rule[rule])}"
               for rule in RULES}
    rejected = {rule: sum(r["rejected"] for r in by_rule[rule]) for rule in RULES}
    lines.append(f"| site updates clipped by the automatic bound | {clipped['mean']} | {clipped['median']} | | |")
    lines.append(f"| site updates rejected | {rejected['mean']} | {rejected['median']} | | |")
    return lines


def report(rows: list[dict], total: int, args) -> str:
    done = len(rows) == total
    out = ["# `fed.aggregate`: mean (FedAvg) against median (coordinate-wise), issue 18", "",
           f"`.venv/bin/python benchmarks/bench_aggregate.py --sites {' '.join(map(str, args.sites))} "
           f"--epsilons {args.epsilons} --rounds {args.rounds} --local-steps {args.local_steps} "
           f"--seeds {','.join(map(str, args.seeds))}`"
           + ("" if done else f" — **partial: {len(rows)} of {total} runs done**"), "",
           f"{args.rounds} rounds × {args.local_steps} local steps, KG guidance with pretraining, "
           f"δ = {DELTA:g} per site, "
           "default automatic update clipping (`fed.max-update-norm = 0`); 150 synthetic patients per disease, "
           "the issue-6 harness (`benchmarks/bench_table.py`). Cells: median (min–max) over seeds.", ""]
    settings = sorted({(r["sites"], r["epsilon"]) for r in rows},
                      key=lambda s: (s[0], float("inf") if s[1] is None else s[1]))
    for n_sites, epsilon in settings:
        mine = [r for r in rows if r["sites"] == n_sites and r["epsilon"] == epsilon]
        seeds = sorted({r["seed"] for r in mine})
        eps = "no DP" if epsilon is None else f"ε = {epsilon:g}"
        for view, value in VIEWS:
            out += [f"**{n_sites} sites, {eps}, {view}** (seeds {', '.join(map(str, seeds))})", ""]
            out += setting_table(mine, value) + [""]
    if rows:
        out += [f"Total wall time of the runs: {sum(r['run_seconds'] for r in rows) / 60:.1f} min.", ""]
    out += ["<details><summary>every run: resolved config, clipping, per-round log (JSON)</summary>", "", "```json"]
    out += [json.dumps({k: r[k] for k in ("sites", "seed", "epsilon", "rule", "fit_seconds", "run_seconds", "updates",
                                          "clipped", "rejected", "config", "round_log")}) for r in rows]
    out += ["```", "", "</details>", ""]
    return "\n".join(out)


def write_results(path: Path, rows: list[dict], total: int, args) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report(rows, total, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[3])
    parser.add_argument("--epsilons", default="4,nodp")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5)  # the demo's default (raregraph.demo)
    parser.add_argument("--local-steps", type=int, default=40)  # the demo's default
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    total = len(args.sites) * len(args.seeds) * len(args.epsilons.split(",")) * len(RULES)
    rows: list[dict] = []
    started = time.perf_counter()
    run_grid(args, rows, total)
    text = report(rows, total, args)
    print(text.split("<details>")[0])
    print(f"Script wall time: {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
