"""The privacy state file's format: its name, version and lock, one charged round, and the
check a loaded document must pass (:class:`shared.privacy.state.PrivacyState` reads and writes it).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.errors import ConfigError
from shared.privacy.accountant import merge_history
from shared.privacy.budget import MechanismPlan, PrivacyBudget
from shared.privacy.registry import make_accountant
from shared.privacy.validation import check_int

STATE_FILE = "privacy_state.json"
LOCK_FILE = ".privacy_state.lock"
FORMAT = "raregraph-privacy-state"
VERSION = 1


@dataclass(frozen=True)
class RoundRecord:
    """One charged round: its mechanism and the cumulative ε after it (at ``delta``)."""

    round_id: str
    steps: int
    noise_multiplier: float
    sample_rate: float
    clip_norm: float
    noise_multiplicity: int
    epsilon: float
    delta: float
    accountant: str
    recorded_at: str


def timestamp() -> str:
    """UTC time stamp, seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Exclusive advisory lock on the state folder, so two processes cannot both charge."""
    with open(folder / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_doc(doc: Any) -> None:
    """Structure and consistency of a loaded document (raises ConfigError/KeyError/TypeError)."""
    keys = {"format", "version", "fingerprint", "accountant", "budget", "plan", "rounds", "changes", "revision",
            "created_at", "updated_at"}
    if not isinstance(doc, dict) or set(doc) - {"carried"} != keys:  # "carried": a lost ledger's ε carried forward
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError(f"expected the keys {sorted(keys)} (and optionally carried), got {got}")
    if "carried" in doc:
        carried = doc["carried"]
        if not isinstance(carried, dict) or set(carried) != {"epsilon", "delta", "acknowledgement"}:
            raise ConfigError(f"carried must have exactly the keys acknowledgement, delta, epsilon, got {carried!r}")
        if not all(isinstance(carried[k], float | int) and not isinstance(carried[k], bool) and carried[k] >= 0
                   for k in ("epsilon", "delta")) or not 0 < carried["delta"] < 1:
            raise ConfigError(f"carried epsilon must be ≥ 0 and delta in (0, 1), got {carried!r}")
    if doc["format"] != FORMAT or doc["version"] != VERSION:
        raise ConfigError(f"format {doc['format']!r} version {doc['version']!r}; this code reads {FORMAT!r} version {VERSION}")
    if not isinstance(doc["fingerprint"], str) or not doc["fingerprint"]:
        raise ConfigError("fingerprint must be a non-empty string")
    PrivacyBudget(**doc["budget"])
    if doc["plan"] is not None:
        MechanismPlan(**doc["plan"])
    check_int("revision", doc["revision"], low=0)
    if not isinstance(doc["rounds"], list) or not isinstance(doc["changes"], list):
        raise ConfigError("rounds and changes must be lists")
    rounds = [RoundRecord(**r) for r in doc["rounds"]]
    acc = make_accountant(doc["accountant"]["mechanism"])
    acc.load_state_dict(doc["accountant"])  # validates every history entry
    expected = merge_history([(float(r.noise_multiplier), float(r.sample_rate), r.steps) for r in rounds])
    if acc.history != expected:
        raise ConfigError(f"the accountant history {acc.history} does not match the recorded rounds {expected}")
