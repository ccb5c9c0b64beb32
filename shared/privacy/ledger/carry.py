"""The auditor's carry-forward acknowledgement: a lost ledger's ε, carried into a new one.

When a site's ledger is lost everywhere — its privacy folder, its backups, and every copy a
run kept — only the coordinator's consortium record still knows its last verified head (seq,
hash, ε). The site must not start again from ε = 0, and it cannot rebuild its accountant. The
way on is an auditor's signed statement of what was spent:

1. the auditor reads the head from the consortium record and signs an acknowledgement
   (``raregraph audit carry-forward``): site, dataset, the lost head, the (ε, δ) spent, a reason;
2. the site starts a new privacy folder from it (``raregraph privacy carry-forward``): its new
   ledger opens with a ``carry`` entry holding the acknowledgement, and the accountant composes
   what it spends next with the carried (ε₀, δ₀) by basic composition: ε = ε₀ + ε_new at
   δ = δ₀ + δ_new, where the new charges are accounted at δ_new = budget δ − δ₀. The carried
   history's own curve is lost, so nothing tighter can be claimed; a site whose budget δ is
   already spent by δ₀ must raise its δ budget on purpose to train again;
3. the coordinator (``fed.auditor-pub``), the site's key-use record and ``raregraph audit``
   accept a chain that starts again only with an acknowledgement that verifies and names exactly
   the head they hold, with an ε no smaller than the one recorded.

Format (JSON object; the signature is Ed25519 over the canonical JSON of every other field)::

    {"format": "raregraph-carry-forward", "version": 1, "site_id", "dataset_fingerprint",
     "epsilon", "delta", "lost_head": {"seq", "hash", "key_id", "run_id"}, "reason", "time",
     "auditor_key_id", "signature"}
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import ConfigError, InputError, SignatureError
from shared.privacy.ledger.entry import SITE_ID_PATTERN, canonical_json
from shared.signing.keys import key_id, sign, verify

FORMAT = "raregraph-carry-forward"
VERSION = 1
FIELDS = frozenset({"format", "version", "site_id", "dataset_fingerprint", "epsilon", "delta", "lost_head", "reason",
                    "time", "auditor_key_id", "signature"})
HEAD_FIELDS = frozenset({"seq", "hash", "key_id", "run_id"})


def make_acknowledgement(*, site_id: str, dataset_fingerprint: str, epsilon: float, delta: float,
                         lost_head: dict[str, Any], reason: str, auditor_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signed acknowledgement (checked before it is returned).

    Raises
    ------
    ConfigError
        A field is out of range (ε < 0, δ outside (0, 1), an empty reason, a bad head).
    """
    body = {"format": FORMAT, "version": VERSION, "site_id": site_id, "dataset_fingerprint": dataset_fingerprint,
            "epsilon": float(epsilon), "delta": float(delta), "lost_head": dict(lost_head), "reason": reason,
            "time": datetime.now(UTC).isoformat(timespec="seconds"), "auditor_key_id": key_id(auditor_key.public_key())}
    ack = {**body, "signature": sign(auditor_key, canonical_json(body))}
    check_acknowledgement(ack)
    return ack


def check_acknowledgement(ack: object) -> dict[str, Any]:
    """The acknowledgement's structure and ranges (not its signature); returns it.

    Raises
    ------
    ConfigError
        Not an acknowledgement of this format, or a field out of range (the message names it).
    """
    if not isinstance(ack, dict) or set(ack) != FIELDS:
        got = sorted(ack) if isinstance(ack, dict) else type(ack).__name__
        raise ConfigError(f"a carry-forward acknowledgement has exactly the fields {sorted(FIELDS)}, got {got}")
    if ack["format"] != FORMAT or ack["version"] != VERSION:
        raise ConfigError(f"not a {FORMAT} version {VERSION} acknowledgement")
    if not isinstance(ack["site_id"], str) or not SITE_ID_PATTERN.match(ack["site_id"]):
        raise ConfigError(f"site_id is not a site id: {ack['site_id']!r}")
    for name in ("dataset_fingerprint", "reason", "time", "auditor_key_id", "signature"):
        if not isinstance(ack[name], str) or not ack[name].strip():
            raise ConfigError(f"{name} must be a non-empty string")
    eps, delta = ack["epsilon"], ack["delta"]
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps < 0:
        raise ConfigError(f"epsilon must be a finite number ≥ 0, got {eps!r}")
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    head = ack["lost_head"]
    if not isinstance(head, dict) or set(head) != HEAD_FIELDS:
        raise ConfigError(f"lost_head must have exactly the fields {sorted(HEAD_FIELDS)}, got {head!r}")
    if isinstance(head["seq"], bool) or not isinstance(head["seq"], int) or head["seq"] < 0:
        raise ConfigError(f"lost_head.seq must be an integer ≥ 0, got {head['seq']!r}")
    if not all(isinstance(head[k], str) and head[k] for k in ("hash", "key_id", "run_id")):
        raise ConfigError("lost_head.hash, key_id and run_id must be non-empty strings")
    return ack


def verify_acknowledgement(ack: object, auditor_pub: Ed25519PublicKey) -> dict[str, Any]:
    """Check the acknowledgement and its signature by the auditor's key; returns it.

    Raises
    ------
    ConfigError
        Malformed (see :func:`check_acknowledgement`).
    SignatureError
        Signed by another key, or changed after it was signed.
    """
    check_acknowledgement(ack)
    assert isinstance(ack, dict)
    expected = key_id(auditor_pub)
    if ack["auditor_key_id"] != expected:
        raise SignatureError(f"the carry-forward acknowledgement was signed by key {ack['auditor_key_id']}, not by the "
                             f"auditor's key {expected}")
    body = canonical_json({k: v for k, v in ack.items() if k != "signature"})
    verify(auditor_pub, body, ack["signature"], what="carry-forward acknowledgement")
    return ack


def acknowledgement_hash(ack: dict[str, Any]) -> str:
    """SHA-256 hex of the acknowledgement's canonical JSON (signature included)."""
    return hashlib.sha256(canonical_json(ack)).hexdigest()


def read_acknowledgement(path: str | Path) -> dict[str, Any]:
    """Read and check (not verify) an acknowledgement file.

    Raises
    ------
    InputError
        Unreadable, not JSON, or not an acknowledgement (the message names the file and field).
    """
    path = Path(path)
    try:
        ack = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no such acknowledgement file", file=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a readable acknowledgement ({exc})", file=path) from None
    try:
        return check_acknowledgement(ack)
    except ConfigError as exc:
        raise InputError(str(exc), file=path) from None


def acknowledges(ack: dict[str, Any], head: dict[str, Any]) -> bool:
    """True when ``ack`` names exactly ``head`` (a recorded head: seq, hash, ε) and carries at least its ε."""
    lost = ack["lost_head"]
    return lost["seq"] == head["seq"] and lost["hash"] == head["hash"] and ack["epsilon"] >= head["epsilon"]
