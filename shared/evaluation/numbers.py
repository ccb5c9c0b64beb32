"""The evaluation suite's dict as numbers: what a site may send (no text), the check the
coordinator applies to what it receives, and dotted-path flattening for tables and pooling."""

from __future__ import annotations

import math
from typing import Any


def drop_text(value: Any) -> Any:
    """``value`` without its text leaves (e.g. the list of phenotype codes the onset task picked:
    the task keys already name them); dict keys stay."""
    if isinstance(value, dict):
        return {k: drop_text(v) for k, v in value.items() if not isinstance(v, str)}
    if isinstance(value, list):
        return [drop_text(v) for v in value if not isinstance(v, str)]
    return value


def numbers_only(value: Any, path: str = "") -> str | None:
    """The first path in ``value`` whose leaf is not a number, boolean or null, or None."""
    if isinstance(value, dict):
        for k, v in value.items():
            if (bad := numbers_only(v, f"{path}.{k}" if path else str(k))) is not None:
                return bad
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            if (bad := numbers_only(v, f"{path}[{i}]")) is not None:
                return bad
        return None
    return None if value is None or isinstance(value, (bool, int, float)) else path or "(top)"


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Dotted path → number for every finite numeric leaf (lists and booleans skipped)."""
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return {prefix: float(value)}
    return {}
