"""The published DP synthesizers MST and AIM (Private-PGM), from their own library, as baselines.

Usage::

    bash scripts/baselines-venv.sh        # once: .venv-baselines with smartnoise-synth 1.0.8
    .venv/bin/python benchmarks/external_synth.py --sites 3 --epsilon 4 --seeds 0,1,2

Same harness as ``bench_table.py`` (imported, not copied): the same simulated consortium and
20 % holdout per seed, the same pool (``POOL_PER_DISEASE`` patients of every study disease), the
same measuring (``measure``: each site against its own patients, and the consortium view) and the
same columns. Each site fits smartnoise-synth's ``mst`` / ``aim`` (McKenna et al. 2021, 2022, on
Private-PGM) on its own training patients at the same per-site (ε, δ = 1e-5) and releases
``--release-rows`` synthetic rows; the releases are pooled (post-processing) and the pool's
patients of each disease are the method's sample. smartnoise-synth pins opacus < 0.15 and
mbi < 2, so it runs in its own interpreter (``.venv-baselines``, scripts/baselines-venv.sh)
through ``benchmarks/external_worker.py`` on .npz files. The table goes to
``benchmarks/results/external.md``, beside this harness's rows of ``table.jsonl`` at the same ε.

The flat table (:class:`FlatTable`): one row per patient (the DP unit, as in DP-SGD), every
column categorical with a domain from public facts (the bundle's vocabulary and grid), never
from the data:

- ``disease`` (the study's D diseases), ``sex`` (2), ``age`` (the public 5-year bins of
  :data:`shared.baselines.marginals.AGE_EDGES`);
- per kept binary feature: ``onset`` (0 never, k: first in window k − 1; T + 1 values) and
  ``span`` (0 never, s: windows from the first to the last occurrence; T + 1 values);
- per lab, with ``--lab-columns`` only: ``measured`` (windows with a value, 0 … T) and
  ``level`` of the patient's mean standardized value (below, inside, above the public reference
  range). Without them (the default, for speed: see below) the decoded labs are the graph-prior
  sampler's public defaults (:class:`shared.baselines.prior.PriorSampler`: each lab measured in a
  window with probability 0.3, value N(0, 0.5²)), so MST/AIM learn nothing about labs.

Back on the grid (:meth:`FlatTable.decode`): a feature fills the ``span`` windows from its onset
(clipped at the grid's end); a lab column's lab is measured in ``measured`` windows drawn uniformly without
replacement, each value the level's centre (−1.5, 0, +1.5) plus N(0, 0.5²) (marginals' public
``LAB_SD``); age uniform inside its bin. What the flat table loses: gaps inside a feature's run,
which windows a lab was measured in, per-window lab values, and the timing between different
features beyond what the pairwise onset marginals carry. Kept binary features: the ``--features``
with the highest public graph score (``bundle.combined``, max over the study's diseases); the
others are never generated. MST measures every column's 1-way marginal and a tree of 2-way
ones, AIM picks 2-way marginals adaptively, so both slow down with the column count (both score
every column pair through Private-PGM's model, about 0.1 s a pair on this 2-core machine: MST
once, AIM every round) and their noise per cell grows with it. Measured here: MST on 30 columns
took about 100 s a site, on 83 columns over 8 minutes; AIM at its default 16 rounds per column is
out of reach on 2 cores for any useful table, so ``--aim-rounds`` (smartnoise-synth's own
``rounds`` argument: the budget is split over fewer, less noisy rounds) caps it, and the report
states the value used.

Noise: OpenDP's Gaussian sampler inside smartnoise-synth takes no seed, so a rerun gives other
MST/AIM figures; the consortium, split, pool draw and measuring are seeded as in bench_table.
smartnoise-synth's MST also uses the site's patient count as known (not noised); AIM does not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.bench_quality import bundle_in  # noqa: E402
from benchmarks.bench_table import (COLUMNS, DELTA, EVALUATION, RESULTS, cell, consortium, measure,  # noqa: E402
                                    pool_conditions, pooled_value, site_mean)
from shared.baselines.marginals import AGE_EDGES, LAB_SD  # noqa: E402
from shared.baselines.prior import PriorSampler  # noqa: E402
from shared.trajectories.tensorize import TensorLayout  # noqa: E402
from shared.trajectories.tensors import TrajectoryTensors  # noqa: E402

VENV_PYTHON = ROOT / ".venv-baselines" / "bin" / "python"
WORKER = ROOT / "benchmarks" / "external_worker.py"
REPORT = ROOT / "benchmarks" / "results" / "external.md"
METHODS = ("mst", "aim")
LABELS = {"mst": "MST (smartnoise-synth, Private-PGM)", "aim": "AIM (smartnoise-synth, Private-PGM)"}
LEVEL_EDGES = (-1.0, 1.0)  # the public reference range in standardized units
LEVEL_CENTRES = np.array([-1.5, 0.0, 1.5])  # a decoded lab value's centre per level (below, inside, above)
#: bench_table rows shown beside MST/AIM for comparison
COMPARE = {"kg": "ours: KG-guided diffusion (table.jsonl)", "marginals": "independent marginals (table.jsonl)",
           "dpgan": "DP-GAN (table.jsonl)"}


@dataclass(frozen=True)
class FlatTable:
    """One categorical row per patient (module docstring); columns and domains are public.

    Attributes
    ----------
    layout
        The bundle's tensor layout (grid, binary and lab columns).
    diseases
        D, the study's disease count.
    features
        int [K]: the kept binary columns (indices into ``layout.binary_codes``).
    """

    layout: TensorLayout
    diseases: int
    features: np.ndarray
    lab_columns: bool = False

    @classmethod
    def from_bundle(cls, bundle, *, top: int, lab_columns: bool = False) -> FlatTable:
        """The ``top`` binary features with the highest public graph score (all when ``top`` ≥ B)."""
        layout = TensorLayout.from_bundle(bundle)
        v = bundle.vocabulary
        row = {(d, c): i for i, (d, c) in enumerate(zip(v["domain"], v["code"]))}
        vocab = [row[(d, c)] for d, c in zip(layout.binary_domains, layout.binary_codes)]
        score = np.asarray(bundle.combined, dtype=np.float64)[:, vocab].max(axis=0)
        keep = np.sort(np.argsort(-score, kind="stable")[:max(int(top), 0)])
        return cls(layout=layout, diseases=len(bundle.diseases), features=keep, lab_columns=lab_columns)

    @property
    def cards(self) -> np.ndarray:
        """int64 [C]: each column's public domain size."""
        t = self.layout.windows
        per_feature = [t + 1, t + 1] * len(self.features)
        per_lab = [t + 1, len(LEVEL_CENTRES)] * (len(self.layout.lab_codes) if self.lab_columns else 0)
        return np.array([self.diseases, 2, len(AGE_EDGES) - 1, *per_feature, *per_lab], dtype=np.int64)

    def encode(self, t: TrajectoryTensors) -> np.ndarray:
        """int64 [N, C]: ``t``'s patients as flat rows (column order of :attr:`cards`)."""
        n, t_len = t.n, t.windows
        n_labs = len(t.lab_codes) if self.lab_columns else 0
        age = np.clip(np.searchsorted(AGE_EDGES, t.age, side="right") - 1, 0, len(AGE_EDGES) - 2)
        events = t.events[:, :, self.features] > 0.5  # [N, T, K]
        ever = events.any(axis=1)
        first = np.where(ever, events.argmax(axis=1), -1)
        last = np.where(ever, t_len - 1 - events[:, ::-1].argmax(axis=1), -2)
        mask = t.lab_mask > 0.5
        measured = mask.sum(axis=1)
        mean = np.where(measured > 0, (t.labs * mask).sum(axis=1) / np.maximum(measured, 1), 0.0)
        level = np.searchsorted(LEVEL_EDGES, mean, side="right")
        per_feature = np.stack([first + 1, last - first + 1], axis=2).reshape(n, -1)
        per_lab = np.stack([measured, level], axis=2).reshape(n, -1)[:, :2 * n_labs]
        return np.concatenate([t.disease[:, None], (t.sex > 0.5)[:, None], age[:, None], per_feature, per_lab],
                              axis=1).astype(np.int64)

    def decode(self, codes: np.ndarray, *, seed: int) -> TrajectoryTensors:
        """Rows of :meth:`encode`'s layout back on the grid (module docstring); ``seed`` drives
        the lab windows, lab values and ages inside their bins.

        Raises
        ------
        ValueError
            Rows of the wrong width or with a code outside its column's domain.
        """
        cards = self.cards
        if codes.ndim != 2 or codes.shape[1] != len(cards) or (codes < 0).any() or (codes >= cards).any():
            raise ValueError(f"flat rows must be int [N, {len(cards)}] inside the public domains")
        rng = np.random.default_rng(seed)
        n, t_len, k, n_labs = len(codes), self.layout.windows, len(self.features), len(self.layout.lab_codes)
        feat = codes[:, 3:3 + 2 * k].reshape(n, k, 2)
        lab = codes[:, 3 + 2 * k:].reshape(n, n_labs, 2) if self.lab_columns else self._public_labs(n, rng)
        window = np.arange(t_len)[None, None, :]
        onset, span = feat[:, :, :1] - 1, np.maximum(feat[:, :, 1:], 1)
        present = (onset >= 0) & (window >= onset) & (window < onset + span)  # [N, K, T]
        events = np.zeros((n, t_len, len(self.layout.binary_codes)), np.float32)
        events[:, :, self.features] = present.transpose(0, 2, 1)
        # each lab's windows: the `measured` smallest of T uniform keys, a uniform subset of that size
        rank = rng.random((n, n_labs, t_len)).argsort(axis=2).argsort(axis=2)
        lab_mask = (rank < lab[:, :, :1]).transpose(0, 2, 1).astype(np.float32)
        values = LEVEL_CENTRES[lab[:, :, 1]][:, None, :] + rng.normal(0.0, LAB_SD, lab_mask.shape)
        low, high = AGE_EDGES[codes[:, 2]], AGE_EDGES[codes[:, 2] + 1]
        return TrajectoryTensors.from_arrays(
            {"events": events, "labs": (values * lab_mask).astype(np.float32), "lab_mask": lab_mask,
             "sex": codes[:, 1].astype(np.float32), "age": rng.uniform(low, high).astype(np.float32),
             "disease": codes[:, 0].astype(np.int64)}, like=self.layout)


    def _public_labs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """int [N, L, 2] lab codes (windows measured, level inside the range) from the prior sampler's public rate."""
        t_len, n_labs = self.layout.windows, len(self.layout.lab_codes)
        measured = rng.binomial(t_len, PriorSampler.lab_rate, (n, n_labs))
        return np.stack([measured, np.ones_like(measured)], axis=2)


@dataclass(frozen=True)
class PooledRelease:
    """The sites' pooled synthetic rows as a :class:`~shared.baselines.base.SyntheticGenerator`."""

    name: str
    table: FlatTable
    codes: np.ndarray  # int64 [M, C]: every site's release, one after the other

    def sample(self, conditions: np.ndarray, *, seed: int) -> TrajectoryTensors:
        """Per requested disease, released rows of that disease drawn without replacement (with
        replacement once the pool has fewer than asked), in the order of ``conditions``.

        Raises
        ------
        ValueError
            No conditions, one outside [0, D), or a disease the pooled release never produced.
        """
        want = np.array(conditions, dtype=np.int64)
        if len(want) < 1 or want.min() < 0 or want.max() >= self.table.diseases:
            raise ValueError(f"conditions must be one or more disease indices in [0, {self.table.diseases})")
        rng = np.random.default_rng(seed)
        rows = np.empty(len(want), dtype=np.int64)
        for d in np.unique(want):
            slots, have = np.flatnonzero(want == d), np.flatnonzero(self.codes[:, 0] == d)
            if not len(have):
                raise ValueError(f"the pooled {self.name} release has no patient of disease {d}; raise --release-rows")
            rows[slots] = rng.choice(have, len(slots), replace=len(have) < len(slots))
        return self.table.decode(self.codes[rows], seed=seed)


def release(codes: np.ndarray, cards: np.ndarray, *, method: str, epsilon: float, rows: int, seed: int,
            rounds: int = 0, python: Path = VENV_PYTHON) -> tuple[np.ndarray, float]:
    """One site's DP release through the worker: (int64 [rows, C] synthetic rows, seconds it took).
    ``rounds``: AIM's rounds (0: smartnoise-synth's default, 16 per column); MST has none.

    Raises
    ------
    FileNotFoundError
        ``python`` (the baselines venv) is missing: run scripts/baselines-venv.sh.
    RuntimeError
        The worker failed; the message carries its last output line.
    """
    if not Path(python).is_file():
        raise FileNotFoundError(f"{python} is missing: run `bash scripts/baselines-venv.sh` first")
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(spec, codes=codes, cards=cards, method=method, epsilon=epsilon, delta=DELTA, rows=rows, seed=seed,
                 rounds=rounds)
        done = subprocess.run([str(python), str(WORKER), str(spec), str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{method} worker failed (exit {done.returncode}): {tail}")
        result = np.load(out)
        return result["codes"].astype(np.int64), float(result["seconds"])


def fit(method: str, table: FlatTable, sites: list[dict], *, epsilon: float, seed: int, release_rows: int,
        rounds: int = 0) -> tuple[PooledRelease, list[float]]:
    """Every site's release of ``method`` at (ε, δ), pooled; and each site's seconds.

    Raises
    ------
    ValueError
        AIM with ``rounds`` not above the column count: smartnoise-synth's AIM spends one round's
        budget on each column's 1-way marginal first, so it would overspend ρ (its noise turns NaN).
    """
    if method == "aim" and 0 < rounds <= len(table.cards):
        raise ValueError(f"AIM needs more rounds than columns ({len(table.cards)}), got {rounds}")
    parts, seconds = [], []
    for i, site in enumerate(sites):
        codes, took = release(table.encode(site["train"]), table.cards, method=method, epsilon=epsilon,
                              rows=release_rows, seed=1000 * seed + i, rounds=rounds)
        parts.append(codes)
        seconds.append(round(took, 1))
    return PooledRelease(name=method, table=table, codes=np.concatenate(parts)), seconds


def run(args) -> list[dict]:
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            bundle = bundle_in(tmp)
            sites = consortium(tmp, bundle, sites=args.sites, seed=seed)
            table = FlatTable.from_bundle(bundle, top=args.features, lab_columns=args.lab_columns)
            for method in args.methods.split(","):
                if method not in METHODS:
                    raise SystemExit(f"unknown method {method!r}; known: {', '.join(METHODS)}")
                started = time.perf_counter()
                generator, site_seconds = fit(method, table, sites, epsilon=args.epsilon, seed=seed,
                                              release_rows=args.release_rows,
                                              rounds=args.aim_rounds if method == "aim" else 0)
                pool = generator.sample(pool_conditions(bundle), seed=seed)
                per_site, pooled = measure(pool, bundle, sites, seed=seed)
                rows.append({"sites": args.sites, "seed": seed, "method": method, "epsilon": args.epsilon,
                             "features": len(table.features), "columns": len(table.cards),
                             "site_seconds": site_seconds, "seconds": round(time.perf_counter() - started, 1),
                             "per_site": per_site, "pooled": pooled})
                print(f"seed {seed}, {method}: {len(table.cards)} columns, per-site fit {site_seconds} s, "
                      f"pooled MMD² {pooled['fidelity.mmd2']:.4f}", file=sys.stderr, flush=True)
    return rows


def table_lines(groups: list[tuple[str, list[dict]]], value) -> list[str]:
    """A Markdown table: one row per (label, rows), mean ± sd over the rows of ``value(row, key)``."""
    lines = ["| method | seeds | " + " | ".join(f"{c} {b}" for c, _, _, b in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for label, mine in groups:
        cells = [cell([v for r in mine if (v := value(r, key)) is not None], fmt) for _, key, fmt, _ in COLUMNS]
        lines.append(f"| {label} | {len(mine)} | " + " | ".join(cells) + " |")
    return lines


def report(rows: list[dict], args) -> str:
    """The Markdown report: MST/AIM beside bench_table's rows at the same sites and ε."""
    seeds = sorted({r["seed"] for r in rows})
    ours = [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.is_file() else []
    ours = [r for r in ours if r.get("evaluation", 1) == EVALUATION and r["sites"] == args.sites
            and r["epsilon"] == args.epsilon and r["seed"] in seeds]
    groups = [(LABELS[m], [r for r in rows if r["method"] == m]) for m in METHODS]
    groups = [g for g in groups if g[1]] + [(COMPARE[m], [r for r in ours if r["method"] == m]) for m in COMPARE]
    groups = [g for g in groups if g[1]]
    head = (f"{args.sites} sites, ε = {args.epsilon:g} and δ = 1e-5 per site, seeds {', '.join(map(str, seeds))}; "
            f"flat table of {rows[0]['columns']} columns ({rows[0]['features']} binary features by public graph "
            f"score{', lab columns' if args.lab_columns else ', no lab columns'}), {args.release_rows} rows released per site"
            + (f"; AIM rounds {args.aim_rounds or 'default (16 per column)'}" if "aim" in args.methods else ""))
    out = ["# MST and AIM (smartnoise-synth 1.0.8, Private-PGM mbi 1.1.0) in the bench_table harness", "",
           "Command: `.venv/bin/python benchmarks/external_synth.py " + " ".join(sys.argv[1:]) + "`", "",
           f"**Each site's view** ({head}; mean over sites, then mean ± sd over seeds)", "",
           *table_lines(groups, site_mean), "", f"**Consortium view** ({head}; all sites' patients pooled)", "",
           *table_lines(groups, pooled_value), "", "**Time** (fit + sample of one site's release, seconds)", ""]
    for r in rows:
        out.append(f"- seed {r['seed']}, {r['method']}: per site {r['site_seconds']}; whole row {r['seconds']} s")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--features", type=int, default=10, help="binary features kept, by public graph score")
    parser.add_argument("--lab-columns", action="store_true", help="two columns per lab (slow: 2·L more columns)")
    parser.add_argument("--aim-rounds", type=int, default=0, help="AIM's rounds (0: its default, 16 per column)")
    parser.add_argument("--release-rows", type=int, default=3000, help="synthetic rows each site releases")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args()
    text = report(run(args), args)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
