"""The vocabulary table of a bundle (``vocabulary.parquet``): one row per feature column."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from shared.bundle import DOMAINS


def vocabulary_table(rows: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
    """(code, domain, name) rows → the vocabulary table: ``index`` added, domains in :data:`DOMAINS`
    order and codes sorted inside each."""
    order = {d: i for i, d in enumerate(DOMAINS)}
    vocab = pd.DataFrame(sorted(set(rows), key=lambda r: (order[r[1]], r[0])), columns=["code", "domain", "name"])
    vocab.insert(0, "index", np.arange(len(vocab), dtype=np.int64))
    return vocab


__all__ = ["vocabulary_table"]
