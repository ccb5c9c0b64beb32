"""One ledger entry: its format, its fields' validation, its canonical JSON, hash and signed bytes.

File format
-----------
JSON Lines, UTF-8, one entry a line, append-only; each line is the entry's canonical JSON
(``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``). The fields::

    format              "raregraph-ledger/1"
    seq                 0, 1, 2, ... per site (the entry's position in the chain)
    site_id             the site that charged its accountant
    run_id, round       the federated run and server round
    time                UTC ISO 8601 time of the charge
    kind                "train" (DP-SGD steps), "evaluate" (a noisy evaluation release), "histogram"
                        (the site's noisy disease histogram, released once, round 0): charges;
                        "budget" (the site's budget changed), "carry" (a lost ledger's ε carried
                        forward on an auditor's acknowledgement; seq 0 only): events, no charge
    mechanism           {sample_rate, noise_multiplier, clip_norm, steps, noise_multiplicity,
                         neighbouring: "add/remove-one", sampling: "poisson"}; null for events
    previous_budget     "budget" entries only: {epsilon, delta} before the change
    carried             "carry" entries only: {epsilon, delta, acknowledgement} (the auditor-signed
                        acknowledgement, :mod:`shared.privacy.ledger.carry`)
    accountant          the site's accountant ("rdp" or "prv")
    epsilon, delta      ε spent so far (this entry included) at δ
    budget_epsilon      the site's ε budget at the time
    dataset_fingerprint the dataset the privacy state is bound to
    key_id              the site key's id (:func:`shared.signing.keys.key_id`)
    prev_hash           SHA-256 hex of the previous entry's canonical JSON, signature included;
                        64 zeros for seq 0
    signature           Ed25519 (base64) over the canonical JSON of every other field

Each charge mirrors one :class:`shared.privacy.state.RoundRecord`; the file is rewritten
through a temporary file, fsync and rename, so a crash leaves the old or the new file, never
half a line. One ledger covers one privacy state (one dataset, one site key).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from shared.errors import ConfigError
from shared.privacy.ledger.problems import where

FORMAT = "raregraph-ledger/1"
GENESIS = "0" * 64  # prev_hash of seq 0
NEIGHBOURING = "add/remove-one"
SAMPLING = "poisson"
CHARGES = ("train", "evaluate", "histogram")
EVENTS = ("budget", "carry")
KINDS = (*CHARGES, *EVENTS)
SITE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # also a file name
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")

Kind = Literal["train", "evaluate", "histogram", "budget", "carry"]


def canonical_json(obj: Any) -> bytes:
    """The bytes that are hashed and signed: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def check_site_id(site_id: object) -> str:
    """Return ``site_id`` if it is usable as a file name (letters, digits, ``._-``), else raise ConfigError."""
    if not isinstance(site_id, str) or not SITE_ID_PATTERN.match(site_id):
        raise ConfigError(f"site id must be 1–128 letters, digits, '.', '_' or '-' (not starting with '.', '_' or "
                          f"'-'), got {site_id!r}")
    return site_id


def round_key(run_id: str, server_round: int, kind: Kind) -> str:
    """The ``PrivacyState`` round id of a ledger entry: ``RUN:ROUND`` for training, else
    ``RUN:ROUND:KIND`` (``RUN:ROUND:evaluate``, ``RUN:0:histogram``)."""
    return f"{run_id}:{server_round}" if kind == "train" else f"{run_id}:{server_round}:{kind}"


@dataclass(frozen=True, kw_only=True)
class MechanismRecord:
    """The DP mechanism of one charge, as recorded in the ledger.

    Parameters
    ----------
    sample_rate
        q, Poisson sampling probability per record and step, in (0, 1] (1.0 for an evaluation or
        histogram release).
    noise_multiplier
        σ = noise standard deviation / clip norm, > 0.
    clip_norm
        Per-sample clipping norm C, > 0.
    steps
        Steps charged, ≥ 1.
    noise_multiplicity
        Noise draws averaged per record before clipping, ≥ 1 (does not change ε).
    neighbouring, sampling
        Must be ``"add/remove-one"`` and ``"poisson"``: the only assumptions the accountants cover.
    """

    sample_rate: float
    noise_multiplier: float
    clip_norm: float
    steps: int
    noise_multiplicity: int
    neighbouring: str = NEIGHBOURING
    sampling: str = SAMPLING

    def __post_init__(self) -> None:
        _check_number("mechanism.sample_rate", self.sample_rate, low=0.0, high=1.0)
        _check_number("mechanism.noise_multiplier", self.noise_multiplier, low=0.0)
        _check_number("mechanism.clip_norm", self.clip_norm, low=0.0)
        check_integer("mechanism.steps", self.steps, low=1)
        check_integer("mechanism.noise_multiplicity", self.noise_multiplicity, low=1)
        if self.neighbouring != NEIGHBOURING or self.sampling != SAMPLING:
            raise ConfigError(f"mechanism.neighbouring must be {NEIGHBOURING!r} and mechanism.sampling {SAMPLING!r} "
                              f"(the accountants' assumptions), got {self.neighbouring!r} and {self.sampling!r}")

    def to_json(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "noise_multiplier": self.noise_multiplier,
                "clip_norm": self.clip_norm, "steps": self.steps, "noise_multiplicity": self.noise_multiplicity,
                "neighbouring": self.neighbouring, "sampling": self.sampling}


def _check_number(name: str, value: object, *, low: float, high: float = math.inf) -> None:
    """Finite real in (low, high], not a bool; values keep their JSON type (the signature covers it)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low < value <= high:
        bounds = f"({low:g}, {high:g}]" if math.isfinite(high) else f"({low:g}, ∞)"
        raise ConfigError(f"{name} must be a finite number in {bounds}, got {value!r}")


def check_integer(name: str, value: object, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer ≥ {low}, got {value!r}")


def _check_budget_pair(name: str, value: object) -> None:
    """``{"epsilon": > 0, "delta": in (0, 1)}``."""
    if not isinstance(value, dict) or set(value) != {"epsilon", "delta"}:
        raise ConfigError(f"{name} must be an object with exactly the fields epsilon, delta, got {value!r}")
    _check_number(f"{name}.epsilon", value["epsilon"], low=0.0)
    _check_number(f"{name}.delta", value["delta"], low=0.0, high=1.0)


def _check_carried(value: object) -> None:
    """``{"epsilon": ≥ 0, "delta": in (0, 1), "acknowledgement": {...}}`` (the acknowledgement's own
    fields are checked where it is verified, :mod:`shared.privacy.ledger.carry`)."""
    if not isinstance(value, dict) or set(value) != {"epsilon", "delta", "acknowledgement"}:
        raise ConfigError(f"carried must be an object with exactly the fields acknowledgement, delta, epsilon, "
                          f"got {value!r}")
    _check_number("carried.epsilon", value["epsilon"], low=0.0)
    _check_number("carried.delta", value["delta"], low=0.0, high=1.0)
    if not isinstance(value["acknowledgement"], dict):
        raise ConfigError(f"carried.acknowledgement must be an object, got {value['acknowledgement']!r}")


def _check_text(name: str, value: object, pattern: re.Pattern[str] | None = None) -> None:
    if not isinstance(value, str) or not value.strip() or (pattern is not None and not pattern.match(value)):
        raise ConfigError(f"{name} must be a non-empty string{' of the right form' if pattern else ''}, got {value!r}")


ENTRY_FIELDS = frozenset({"format", "seq", "site_id", "run_id", "round", "time", "kind", "mechanism", "accountant",
                          "epsilon", "delta", "budget_epsilon", "dataset_fingerprint", "key_id", "prev_hash",
                          "signature"})
MECHANISM_FIELDS = frozenset({"sample_rate", "noise_multiplier", "clip_norm", "steps", "noise_multiplicity",
                              "neighbouring", "sampling"})
EVENT_FIELDS = {"budget": "previous_budget", "carry": "carried"}  # the field an event entry adds


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """One signed ledger entry. Build it with :meth:`Ledger.append` or :meth:`from_json`.

    ``raw`` is the JSON object exactly as written or read; the hash and the signature are over it.
    """

    format: str
    seq: int
    site_id: str
    run_id: str
    round: int
    time: str
    kind: Kind
    mechanism: MechanismRecord | None  # None for an event entry
    accountant: str
    epsilon: float
    delta: float
    budget_epsilon: float
    dataset_fingerprint: str
    key_id: str
    prev_hash: str
    signature: str
    previous_budget: dict[str, float] | None = None  # "budget" entries
    carried: dict[str, Any] | None = None  # "carry" entries
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_charge(self) -> bool:
        """True for a charge to the accountant (train, evaluate, histogram); False for an event (budget, carry)."""
        return self.kind in CHARGES

    @classmethod
    def from_json(cls, obj: object) -> LedgerEntry:
        """Validate one parsed JSON entry.

        Raises
        ------
        ConfigError
            Not an object with exactly the ledger fields, a field of the wrong type or out of range,
            or another format (the message names the field).
        """
        if not isinstance(obj, dict):
            raise ConfigError(f"a ledger entry must be a JSON object, got {type(obj).__name__}")
        kind = obj.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        wanted = ENTRY_FIELDS | ({EVENT_FIELDS[kind]} if kind in EVENT_FIELDS else set())
        missing, unknown = wanted - set(obj), set(obj) - wanted
        if missing or unknown:
            raise ConfigError(f"ledger entry fields ({kind}): missing {sorted(missing)}, unknown {sorted(unknown)}")
        if obj["format"] != FORMAT:
            raise ConfigError(f"format must be {FORMAT!r}, got {obj['format']!r}")
        mech = obj["mechanism"]
        if kind in EVENTS:
            if mech is not None:
                raise ConfigError(f"mechanism must be null in a {kind} entry (it charges nothing), got {mech!r}")
        elif not isinstance(mech, dict) or set(mech) != MECHANISM_FIELDS:
            raise ConfigError(f"mechanism must be an object with exactly the fields {sorted(MECHANISM_FIELDS)}, "
                              f"got {mech!r}")
        if kind == "budget":
            _check_budget_pair("previous_budget", obj["previous_budget"])
        if kind == "carry":
            _check_carried(obj["carried"])
        check_integer("seq", obj["seq"], low=0)
        check_integer("round", obj["round"], low=0)
        for name in ("run_id", "accountant", "dataset_fingerprint", "signature"):
            _check_text(name, obj[name])
        _check_text("site_id", obj["site_id"], SITE_ID_PATTERN)
        _check_text("key_id", obj["key_id"], _HEX16)
        _check_text("prev_hash", obj["prev_hash"], _HEX64)
        _check_text("time", obj["time"])
        try:
            stamp = datetime.fromisoformat(obj["time"])
        except ValueError:
            raise ConfigError(f"time must be an ISO 8601 time, got {obj['time']!r}") from None
        if stamp.utcoffset() is None:
            raise ConfigError(f"time must carry its UTC offset, got {obj['time']!r}")
        if isinstance(obj["epsilon"], bool) or not isinstance(obj["epsilon"], int | float) \
                or not math.isfinite(obj["epsilon"]) or obj["epsilon"] < 0:
            raise ConfigError(f"epsilon must be a finite number ≥ 0, got {obj['epsilon']!r}")
        _check_number("delta", obj["delta"], low=0.0, high=1.0)
        if obj["delta"] >= 1:
            raise ConfigError(f"delta must be below 1, got {obj['delta']!r}")
        _check_number("budget_epsilon", obj["budget_epsilon"], low=0.0)
        mechanism = None if mech is None else MechanismRecord(**mech)
        copy = json.loads(json.dumps(obj))
        return cls(**{name: obj[name] for name in ENTRY_FIELDS if name != "mechanism"}, mechanism=mechanism,
                   previous_budget=copy.get("previous_budget"), carried=copy.get("carried"), raw=copy)

    def to_json(self) -> dict[str, Any]:
        """A copy of the entry as JSON (exactly what is hashed)."""
        return json.loads(json.dumps(self.raw))

    @property
    def line(self) -> str:
        """The entry's line in a ledger file, without the newline."""
        return canonical_json(self.raw).decode("utf-8")

    @cached_property
    def entry_hash(self) -> str:
        """SHA-256 hex of the canonical JSON, signature included (the next entry's ``prev_hash``)."""
        return hashlib.sha256(canonical_json(self.raw)).hexdigest()

    @property
    def signed_bytes(self) -> bytes:
        """The canonical JSON of every field but ``signature``: what the signature covers."""
        return canonical_json({k: v for k, v in self.raw.items() if k != "signature"})

    @property
    def where(self) -> str:
        """``site S, round R (seq N)``."""
        return where(self.site_id, self.seq, self.round)
