"""What is wrong with a ledger: :class:`Problem` (one finding), :class:`LedgerError` and :func:`where`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shared.errors import RareGraphError

ProblemKind = Literal[
    "truncated",           # the last line is cut off
    "wrong-site",          # an entry of another site (replayed)
    "wrong-key",           # key_id is not the site's key
    "signature",           # the signature does not verify: a field was changed
    "seq-gap",             # seq numbers missing: an entry was dropped
    "prev-hash",           # prev_hash does not match the previous entry: the chain is broken
    "reordered",           # entries out of seq order
    "fork",                # two entries with the same seq or the same prev_hash
    "over-budget",         # ε past the budget
    "epsilon-decreased",   # ε went down along the chain: a reset
    # found by the audit (shared.privacy.audit)
    "missing-key", "missing-ledger", "missing-budget", "unknown-accountant", "epsilon-mismatch",
    "mechanism-changed", "fingerprint-changed",
]


class LedgerError(RareGraphError):
    """A ledger does not verify, or an append or merge would break it.

    Attributes
    ----------
    problems
        The :class:`Problem` s found (empty for errors that are not about a chain).
    """

    def __init__(self, message: str, *, problems: Sequence[Problem] = ()) -> None:
        self.problems = tuple(problems)
        super().__init__(message)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a site's ledger; ``message`` is one line naming the site and round."""

    site: str
    seq: int | None
    round: int | None
    kind: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "seq": self.seq, "round": self.round, "kind": self.kind, "message": self.message}

    def __str__(self) -> str:
        return self.message


def where(site: str, seq: int | None = None, server_round: int | None = None) -> str:
    """``site S, round R (seq N)``: the prefix of every problem message."""
    parts = [f"site {site}"]
    if server_round is not None:
        parts.append(f"round {server_round}")
    text = ", ".join(parts)
    return text if seq is None else f"{text} (seq {seq})"
