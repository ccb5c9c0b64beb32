"""Runs inside .venv-baselines (scripts/baselines-venv.sh): one site's MST or AIM release.

Usage::

    .venv-baselines/bin/python benchmarks/external_worker.py IN.npz OUT.npz

``IN.npz``: ``codes`` int [N, C] (one patient a row, every column an integer category),
``cards`` int [C] (each column's public domain size: codes lie in [0, cards[c])), ``method``
(``"mst"`` or ``"aim"``), ``epsilon``, ``delta``, ``rows`` (synthetic rows to release),
``seed`` and ``rounds`` (AIM's rounds; 0 keeps its default). ``OUT.npz``: ``codes`` int [rows, C], ``seconds`` (fit + sample).

The synthesizer is smartnoise-synth's own (``Synthesizer.create(method, epsilon=, delta=)``, its
defaults otherwise). Its column transformer is fitted on a public frame that holds every code
of every column, never on the patients, so the domain is the public one and a category the site
lacks stays a category (fitting it on the data, snsynth's default, would release which
categories occur). The synthesizers' Gaussian noise comes from OpenDP's sampler, which takes no
seed: ``seed`` seeds numpy's global generator (MST/AIM's exponential mechanism and Private-PGM's
sampling), so a rerun differs in the noise. Imports nothing from the project: this interpreter
does not have it.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd


def public_transformer(cards: np.ndarray, columns: list[str]):
    """A snsynth TableTransformer whose label encoders know exactly the codes 0 … card − 1."""
    from snsynth.transform import LabelTransformer, TableTransformer

    longest = int(cards.max())
    frame = pd.DataFrame({c: np.arange(longest) % int(k) for c, k in zip(columns, cards)})
    transformer = TableTransformer([LabelTransformer(nullable=False) for _ in columns])
    transformer.fit(frame, epsilon=0.0)
    return transformer


def release(codes: np.ndarray, cards: np.ndarray, *, method: str, epsilon: float, delta: float, rows: int,
            seed: int, rounds: int = 0) -> np.ndarray:
    """int64 [rows, C]: ``method``'s synthetic rows after fitting on ``codes`` at (ε, δ)."""
    from snsynth import Synthesizer

    if codes.ndim != 2 or codes.shape[1] != len(cards):
        raise ValueError(f"codes have shape {codes.shape}, expected [N, {len(cards)}]")
    if (codes < 0).any() or (codes >= cards[None, :]).any():
        raise ValueError("a code lies outside its column's public domain")
    np.random.seed(seed)
    columns = [f"c{i}" for i in range(len(cards))]
    options = {"rounds": int(rounds)} if method == "aim" and rounds > 0 else {}
    synth = Synthesizer.create(method, epsilon=float(epsilon), delta=float(delta), **options)
    synth.fit(pd.DataFrame(codes, columns=columns), transformer=public_transformer(cards, columns))
    out = synth.sample(int(rows))
    return np.asarray(pd.DataFrame(out, columns=columns).to_numpy(), dtype=np.int64)


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: external_worker.py IN.npz OUT.npz")
    spec = np.load(sys.argv[1])
    started = time.perf_counter()
    codes = release(spec["codes"].astype(np.int64), spec["cards"].astype(np.int64), method=str(spec["method"]),
                    epsilon=float(spec["epsilon"]), delta=float(spec["delta"]), rows=int(spec["rows"]),
                    seed=int(spec["seed"]), rounds=int(spec["rounds"]) if "rounds" in spec else 0)
    np.savez(sys.argv[2], codes=codes, seconds=time.perf_counter() - started)


if __name__ == "__main__":
    main()
