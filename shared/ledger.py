"""A site's signed, hash-chained privacy ledger: one JSON line per charge to its accountant.

File format
-----------
JSON Lines, UTF-8, one entry a line, append-only; each line is the entry's canonical JSON
(``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``). The fields::

    format              "raregraph-ledger/1"
    seq                 0, 1, 2, ... per site (the entry's position in the chain)
    site_id             the site that charged its accountant
    run_id, round       the federated run and server round
    time                UTC ISO 8601 time of the charge
    kind                "train" (DP-SGD steps) or "evaluate" (a noisy evaluation release)
    mechanism           {sample_rate, noise_multiplier, clip_norm, steps, noise_multiplicity,
                         neighbouring: "add/remove-one", sampling: "poisson"}
    accountant          the site's accountant ("rdp" or "prv")
    epsilon, delta      ε spent so far (this entry included) at δ
    budget_epsilon      the site's ε budget at the time
    dataset_fingerprint the dataset the privacy state is bound to
    key_id              the site key's id (:func:`shared.signing.key_id`)
    prev_hash           SHA-256 hex of the previous entry's canonical JSON, signature included;
                        64 zeros for seq 0
    signature           Ed25519 (base64) over the canonical JSON of every other field

Each entry mirrors one :class:`shared.privacy.state.RoundRecord`; the file is rewritten
through a temporary file, fsync and rename, so a crash leaves the old or the new file, never
half a line. One ledger covers one privacy state (one dataset, one site key).

Protocol for a client, per round (after ``PrivacyState.record_round``, before the reply)::

    ledger = Ledger(state_folder / "ledger.jsonl", site_id, private_key)   # verifies the chain
    ledger.reconcile(state)                      # once at start-up: catch up charges a crash left out
    entry = ledger.append_round(state, run_id=run_id, server_round=r, kind="train")
    reply[...] = export_entries(ledger.entries)  # the server merges with merge_site_entries

What one copy cannot show: a file cut back to an earlier entry is itself a valid chain. The
server's copy (``RUN/ledger/<site_id>.jsonl``, which :func:`merge_site_entries` refuses to roll
back) and :meth:`Ledger.reconcile` (the ledger against the privacy state) are the witnesses.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.atomic import write_bytes_atomic
from shared.errors import ConfigError, InputError, RareGraphError, SignatureError
from shared.privacy.state import PrivacyState, RoundRecord
from shared.signing import key_id, sign, verify

FORMAT = "raregraph-ledger/1"
GENESIS = "0" * 64  # prev_hash of seq 0
NEIGHBOURING = "add/remove-one"
SAMPLING = "poisson"
KINDS = ("train", "evaluate")
LEDGER_DIR = "ledger"  # the server keeps RUN/ledger/<site_id>.jsonl
SUFFIX = ".jsonl"
SITE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # also a file name
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_ROUND_ID = re.compile(r"^(?P<run>.+):(?P<round>\d+)(?::(?P<kind>evaluate))?$")

Kind = Literal["train", "evaluate"]
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
    # found by the audit (shared.audit)
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
    """The ``PrivacyState`` round id of a ledger entry: ``RUN:ROUND`` or ``RUN:ROUND:evaluate``."""
    return f"{run_id}:{server_round}" if kind == "train" else f"{run_id}:{server_round}:evaluate"


# entries

@dataclass(frozen=True, kw_only=True)
class MechanismRecord:
    """The DP mechanism of one charge, as recorded in the ledger.

    Parameters
    ----------
    sample_rate
        q, Poisson sampling probability per record and step, in (0, 1] (1.0 for an evaluation release).
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
        _check_integer("mechanism.steps", self.steps, low=1)
        _check_integer("mechanism.noise_multiplicity", self.noise_multiplicity, low=1)
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


def _check_integer(name: str, value: object, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer ≥ {low}, got {value!r}")


def _check_text(name: str, value: object, pattern: re.Pattern[str] | None = None) -> None:
    if not isinstance(value, str) or not value.strip() or (pattern is not None and not pattern.match(value)):
        raise ConfigError(f"{name} must be a non-empty string{' of the right form' if pattern else ''}, got {value!r}")


ENTRY_FIELDS = frozenset({"format", "seq", "site_id", "run_id", "round", "time", "kind", "mechanism", "accountant",
                          "epsilon", "delta", "budget_epsilon", "dataset_fingerprint", "key_id", "prev_hash",
                          "signature"})
MECHANISM_FIELDS = frozenset({"sample_rate", "noise_multiplier", "clip_norm", "steps", "noise_multiplicity",
                              "neighbouring", "sampling"})


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
    mechanism: MechanismRecord
    accountant: str
    epsilon: float
    delta: float
    budget_epsilon: float
    dataset_fingerprint: str
    key_id: str
    prev_hash: str
    signature: str
    raw: dict[str, Any] = field(repr=False, compare=False)

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
        missing, unknown = ENTRY_FIELDS - set(obj), set(obj) - ENTRY_FIELDS
        if missing or unknown:
            raise ConfigError(f"ledger entry fields: missing {sorted(missing)}, unknown {sorted(unknown)}")
        if obj["format"] != FORMAT:
            raise ConfigError(f"format must be {FORMAT!r}, got {obj['format']!r}")
        mech = obj["mechanism"]
        if not isinstance(mech, dict) or set(mech) != MECHANISM_FIELDS:
            raise ConfigError(f"mechanism must be an object with exactly the fields {sorted(MECHANISM_FIELDS)}, "
                              f"got {mech!r}")
        _check_integer("seq", obj["seq"], low=0)
        _check_integer("round", obj["round"], low=0)
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
        if obj["kind"] not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {obj['kind']!r}")
        if isinstance(obj["epsilon"], bool) or not isinstance(obj["epsilon"], int | float) \
                or not math.isfinite(obj["epsilon"]) or obj["epsilon"] < 0:
            raise ConfigError(f"epsilon must be a finite number ≥ 0, got {obj['epsilon']!r}")
        _check_number("delta", obj["delta"], low=0.0, high=1.0)
        if obj["delta"] >= 1:
            raise ConfigError(f"delta must be below 1, got {obj['delta']!r}")
        _check_number("budget_epsilon", obj["budget_epsilon"], low=0.0)
        mechanism = MechanismRecord(**mech)
        return cls(**{name: obj[name] for name in ENTRY_FIELDS if name != "mechanism"}, mechanism=mechanism,
                   raw=json.loads(json.dumps(obj)))

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


def _make_entry(private_key: Ed25519PrivateKey, body: dict[str, Any]) -> LedgerEntry:
    """Sign ``body`` (every field but the signature) and validate the result."""
    raw = {**body, "signature": sign(private_key, canonical_json(body))}
    return LedgerEntry.from_json(raw)


# reading and writing files

def _parse_lines(text: str, *, source: str, site: str | None, fallback: str) -> tuple[list[LedgerEntry], list[Problem]]:
    """Entries of a JSON Lines text; a cut-off last line is a problem, any other bad line an InputError.

    The problem names ``site``, else the site of the entries read, else ``fallback``.
    """
    entries: list[LedgerEntry] = []
    problems: list[Problem] = []
    lines = text.split("\n")
    complete = text.endswith("\n") or not text
    if complete:
        lines = lines[:-1]
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        try:
            obj = json.loads(line, object_pairs_hook=_no_duplicates)
        except (json.JSONDecodeError, ValueError) as exc:
            if last and not complete:
                site = site or (entries[0].site_id if entries else fallback)
                after = f"after seq {entries[-1].seq}, round {entries[-1].round}" if entries else "at the start"
                problems.append(Problem(site, None, None, "truncated",
                                        f"{where(site)}: {source}:{number}: the last line is cut off {after} "
                                        "(the write was interrupted or the file was truncated); restore the file "
                                        "from the site's or the server's copy"))
                break
            raise InputError(f"not a JSON ledger entry ({exc})", file=source, line=number) from None
        try:
            entries.append(LedgerEntry.from_json(obj))
        except ConfigError as exc:
            raise InputError(f"invalid ledger entry: {exc}", file=source, line=number) from None
    return entries, problems


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: a key given twice would let two readers see two different entries."""
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def scan_ledger(path: str | Path, *, site_id: str | None = None) -> tuple[list[LedgerEntry], list[Problem]]:
    """Read a ledger file, reporting a cut-off last line as a problem instead of failing.

    Parameters
    ----------
    path
        The JSON Lines file.
    site_id
        The site the file belongs to (for messages); default the entries' site, else the file name
        without ``.jsonl``.

    Returns
    -------
    entries, problems
        The complete entries in file order, and ``[Problem(kind="truncated")]`` or ``[]``.

    Raises
    ------
    InputError
        The file is missing or unreadable, or a line other than a cut-off last one is not a valid
        entry (the message names the file and line).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError("ledger file not found", file=path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read the ledger: {exc.strerror}", file=path) from None
    return _parse_lines(text, source=str(path), site=site_id, fallback=path.name.removesuffix(SUFFIX))


def read_ledger(path: str | Path) -> list[LedgerEntry]:
    """Entries of a ledger file in file order.

    Raises
    ------
    InputError
        Missing or unreadable file, or a malformed line (file and line named).
    LedgerError
        The last line is cut off.
    """
    entries, problems = scan_ledger(path)
    if problems:
        raise LedgerError(problems[0].message, problems=problems)
    return entries


def export_entries(entries: Sequence[LedgerEntry]) -> str:
    """JSON Lines text of ``entries`` (to carry in a Flower reply as one string)."""
    return "".join(entry.line + "\n" for entry in entries)


def parse_entries(text: str, *, source: str = "ledger reply") -> list[LedgerEntry]:
    """Inverse of :func:`export_entries`.

    Raises
    ------
    InputError
        A line is not a complete, valid entry (``source`` and the line are named).
    """
    complete = text if text.endswith("\n") or not text else text + "\n"  # so a cut line is an error, not a problem
    entries, _ = _parse_lines(complete, source=source, site=None, fallback="?")
    return entries


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock beside ``path``, so two processes never append at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# verification

def verify_chain(entries: Sequence[LedgerEntry], public_key: Ed25519PublicKey | None, *,
                 site_id: str) -> list[Problem]:
    """Check one site's entries (in file order) and return every problem found.

    Checks
    ------
    1. Each entry: it names ``site_id`` (else ``wrong-site``: replayed from another site), its
       ``key_id`` is the key's (``wrong-key``), its signature verifies (``signature``: a field
       was changed), its ε is within its budget (``over-budget``).
       The content of an entry whose key or signature fails is not trusted, so it is not checked
       further (its budget, its ε against its neighbours, the next entry's link to it).
    2. File order: seq increases (``reordered``); no seq twice and no prev_hash twice (``fork``).
    3. The chain in seq order: starts at seq 0 with 64 zeros, no seq missing (``seq-gap``), each
       prev_hash is the previous entry's hash (``prev-hash``; not repeated after a bad signature,
       which already explains it), ε never decreases (``epsilon-decreased``: a reset).

    Parameters
    ----------
    entries
        The entries as read, in file order.
    public_key
        The site's public key; ``None`` skips the key and signature checks (the audit reports the
        missing key separately).
    site_id
        The site the ledger belongs to.

    Returns
    -------
    list[Problem]
        Empty when the chain is intact.
    """
    problems: list[Problem] = []
    expected_kid = None if public_key is None else key_id(public_key)
    bad_signature: set[int] = set()  # ids of entries whose content cannot be trusted

    def add(entry: LedgerEntry, kind: str, text: str) -> None:
        problems.append(Problem(site_id, entry.seq, entry.round, kind, f"{where(site_id, entry.seq, entry.round)}: {text}"))

    # 1. each entry on its own
    for entry in entries:
        if entry.site_id != site_id:
            add(entry, "wrong-site", f"the entry names site {entry.site_id!r}: an entry of another site replayed here")
        if expected_kid is not None:
            if entry.key_id != expected_kid:
                bad_signature.add(id(entry))
                add(entry, "wrong-key", f"signed by key {entry.key_id}, but the site's key is {expected_kid}")
            else:
                try:
                    verify(public_key, entry.signed_bytes, entry.signature, what=entry.where)
                except SignatureError:
                    bad_signature.add(id(entry))
                    add(entry, "signature", f"the signature does not verify with key {expected_kid}: the entry "
                                            "was changed after it was signed")
        if entry.epsilon > entry.budget_epsilon and id(entry) not in bad_signature:
            add(entry, "over-budget", f"ε = {entry.epsilon:.4g} exceeds the budget ε = {entry.budget_epsilon:g} "
                                      f"at δ = {entry.delta:g}")
    # 2. file order and forks
    seen_seq: dict[int, LedgerEntry] = {}
    seen_prev: dict[str, LedgerEntry] = {}
    top = -1
    for entry in entries:
        if entry.seq in seen_seq or entry.prev_hash in seen_prev:
            other = seen_seq.get(entry.seq) or seen_prev[entry.prev_hash]
            same = "an identical copy of" if other.entry_hash == entry.entry_hash else "a second entry beside"
            add(entry, "fork", f"{same} seq {other.seq} (same {'seq' if entry.seq in seen_seq else 'prev_hash'}): "
                               "the chain forks")
        elif entry.seq < top:
            add(entry, "reordered", f"comes after seq {top} in the file: entries were reordered")
        seen_seq.setdefault(entry.seq, entry)
        seen_prev.setdefault(entry.prev_hash, entry)
        top = max(top, entry.seq)
    # 3. the chain in seq order (one entry per seq; forks are reported above)
    chain = sorted(seen_seq.values(), key=lambda e: e.seq)
    previous: LedgerEntry | None = None
    for entry in chain:
        want_seq = 0 if previous is None else previous.seq + 1
        if entry.seq > want_seq:
            missing = f"seq {want_seq}" if entry.seq == want_seq + 1 else f"seq {want_seq}–{entry.seq - 1}"
            add(entry, "seq-gap", f"{missing} missing before it: an entry was dropped")
        else:
            want_hash = GENESIS if previous is None else previous.entry_hash
            if entry.prev_hash != want_hash and (previous is None or id(previous) not in bad_signature):
                what = "64 zeros (first entry)" if previous is None else f"the hash of seq {previous.seq}"
                add(entry, "prev-hash", f"prev_hash is not {what}: the chain is broken (an entry was replaced)")
        if previous is not None and entry.epsilon < previous.epsilon and not {id(entry), id(previous)} & bad_signature:
            add(entry, "epsilon-decreased", f"ε = {entry.epsilon:.4g} is below the ε = {previous.epsilon:.4g} "
                                            f"already spent at seq {previous.seq}: the spent budget was reset")
        previous = entry
    return problems


def check_chain(entries: Sequence[LedgerEntry], public_key: Ed25519PublicKey | None, *, site_id: str) -> None:
    """:func:`verify_chain` for a site at start-up: raise if anything is wrong.

    Raises
    ------
    LedgerError
        The first problem's message (naming site, round and seq), and how many more there are.
    """
    problems = verify_chain(entries, public_key, site_id=site_id)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise LedgerError(f"privacy ledger does not verify: {problems[0].message}{more}", problems=problems)


# the site's ledger

class Ledger:
    """A site's privacy ledger file, opened for appending.

    Opening verifies the existing chain with the key's public half; every append re-reads the
    file under a lock, so two processes cannot both extend the same head.

    Parameters
    ----------
    path
        The site's ledger file (JSON Lines), on the hospital's own disk beside the privacy state.
        Created with its folder on the first append.
    site_id
        The site's id (letters, digits, ``._-``), as in the federation.
    private_key
        The site's Ed25519 key (:func:`shared.signing.load_private_key`).

    Raises
    ------
    LedgerError
        The existing file does not verify (tampered, truncated, another site's or another key's).
    InputError
        A line of the file is malformed.
    ConfigError
        ``site_id`` is not a valid id.
    """

    def __init__(self, path: str | Path, site_id: str, private_key: Ed25519PrivateKey) -> None:
        self.path = Path(path)
        self.site_id = check_site_id(site_id)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ConfigError(f"private_key must be an Ed25519 private key, got {type(private_key).__name__}")
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)
        self._entries = self._load()

    def _load(self) -> list[LedgerEntry]:
        """Entries on disk, verified with this ledger's key and site id."""
        if not self.path.exists():
            return []
        entries, problems = scan_ledger(self.path, site_id=self.site_id)
        problems += verify_chain(entries, self.public_key, site_id=self.site_id)
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise LedgerError(f"{self.path}: privacy ledger does not verify: {problems[0].message}{more}; restore it "
                              "from a backup or the server's copy, never start a new one", problems=problems)
        return entries

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """The entries, oldest first."""
        return tuple(self._entries)

    @property
    def head(self) -> LedgerEntry | None:
        """The last entry, or ``None`` for an empty ledger."""
        return self._entries[-1] if self._entries else None

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, *, run_id: str, server_round: int, kind: Kind, mechanism: MechanismRecord, accountant: str,
               epsilon: float, delta: float, budget_epsilon: float, dataset_fingerprint: str,
               time: str | None = None) -> LedgerEntry:
        """Sign and append one entry; the file is rewritten atomically and fsync'd.

        Parameters
        ----------
        run_id, server_round
            The federated run and its server round (≥ 0).
        kind
            ``"train"`` or ``"evaluate"``.
        mechanism
            The mechanism charged.
        accountant
            The site accountant's name (``"rdp"`` or ``"prv"``).
        epsilon, delta
            ε spent so far, this charge included, at δ (from ``PrivacyState.record_round``).
        budget_epsilon
            The site's ε budget.
        dataset_fingerprint
            The privacy state's dataset fingerprint.
        time
            UTC ISO time of the charge; default now.

        Returns
        -------
        LedgerEntry
            The entry written.

        Raises
        ------
        LedgerError
            The file changed on disk and no longer verifies, ``(run_id, server_round, kind)`` is
            already recorded, ε is below the ε already recorded (a reset) or above the budget.
        ConfigError
            An argument is out of range or of the wrong type.
        """
        if kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not isinstance(mechanism, MechanismRecord):
            raise ConfigError(f"mechanism must be a MechanismRecord, got {type(mechanism).__name__}")
        _check_integer("server_round", server_round, low=0)
        body = {"format": FORMAT, "site_id": self.site_id, "run_id": run_id, "round": int(server_round),
                "time": time or datetime.now(UTC).isoformat(timespec="seconds"), "kind": kind,
                "mechanism": mechanism.to_json(), "accountant": accountant, "epsilon": _as_float("epsilon", epsilon),
                "delta": _as_float("delta", delta), "budget_epsilon": _as_float("budget_epsilon", budget_epsilon),
                "dataset_fingerprint": dataset_fingerprint, "key_id": self.key_id}
        with _locked(self.path):
            self._entries = self._load()  # another process may have appended since we opened
            head = self.head
            for entry in self._entries:
                if (entry.run_id, entry.round, entry.kind) == (run_id, server_round, kind):
                    raise LedgerError(f"{where(self.site_id, entry.seq, server_round)}: run {run_id!r} round "
                                      f"{server_round} ({kind}) is already in the ledger")
            if head is not None and body["epsilon"] < head.epsilon:
                raise LedgerError(f"{where(self.site_id, len(self), server_round)}: ε = {body['epsilon']:.4g} is "
                                  f"below the ε = {head.epsilon:.4g} already recorded at seq {head.seq}; the spent "
                                  "budget is never reset")
            if body["epsilon"] > body["budget_epsilon"]:
                raise LedgerError(f"{where(self.site_id, len(self), server_round)}: ε = {body['epsilon']:.4g} is past "
                                  f"the budget ε = {body['budget_epsilon']:g}; a round past the budget is refused, "
                                  "not recorded")
            body["seq"] = len(self._entries)
            body["prev_hash"] = GENESIS if head is None else head.entry_hash
            try:
                entry = _make_entry(self._key, body)
            except ConfigError as exc:
                raise ConfigError(f"ledger entry for {where(self.site_id, body['seq'], server_round)}: {exc}") from None
            old = self.path.read_bytes() if self.path.exists() else b""
            write_bytes_atomic(self.path, old + (entry.line + "\n").encode("utf-8"), durable=True)
            self._entries.append(entry)
        return entry

    def append_round(self, state: PrivacyState, *, run_id: str, server_round: int, kind: Kind = "train") -> LedgerEntry:
        """Append the entry for a round the privacy state has charged (call right after ``record_round``).

        The round must have been charged with ``round_id = round_key(run_id, server_round, kind)``,
        i.e. ``"RUN:ROUND"`` for training and ``"RUN:ROUND:evaluate"`` for an evaluation release.

        Raises
        ------
        LedgerError
            The state has no such round, or :meth:`append` refuses it.
        """
        wanted = round_key(run_id, server_round, kind)
        record = next((r for r in state.rounds if r.round_id == wanted), None)
        if record is None:
            raise LedgerError(f"{where(self.site_id, None, server_round)}: the privacy state {state.path} has no "
                              f"round {wanted!r}; charge it with record_round before writing the ledger")
        return self._append_record(state, record, run_id=run_id, server_round=server_round, kind=kind)

    def _append_record(self, state: PrivacyState, record: RoundRecord, *, run_id: str, server_round: int,
                       kind: Kind) -> LedgerEntry:
        mechanism = MechanismRecord(sample_rate=float(record.sample_rate), noise_multiplier=float(record.noise_multiplier),
                                    clip_norm=float(record.clip_norm), steps=int(record.steps),
                                    noise_multiplicity=int(record.noise_multiplicity))
        return self.append(run_id=run_id, server_round=server_round, kind=kind, mechanism=mechanism,
                           accountant=record.accountant, epsilon=record.epsilon, delta=record.delta,
                           budget_epsilon=state.budget.epsilon, dataset_fingerprint=state.fingerprint,
                           time=record.recorded_at)

    def reconcile(self, state: PrivacyState) -> list[LedgerEntry]:
        """Check the ledger against the privacy state at start-up and add the charges it lacks.

        A crash between ``record_round`` and :meth:`append_round` leaves a charged round out of the
        ledger (its weights never left the site); it is appended here, in the state's order. A round
        id not of the form ``RUN:ROUND[:evaluate]`` is written with run id = round id, round 0.

        Returns
        -------
        list[LedgerEntry]
            The entries added (usually none).

        Raises
        ------
        LedgerError
            The ledger belongs to another dataset, or records a charge the state does not have
            (the state was reset or restored from an old copy: the ledger is the witness).
        """
        charged = {r.round_id for r in state.rounds}
        recorded = set()
        for entry in self._entries:
            if entry.dataset_fingerprint != state.fingerprint:
                raise LedgerError(f"{entry.where}: the ledger {self.path} is for dataset {entry.dataset_fingerprint!r}, "
                                  f"the privacy state for {state.fingerprint!r}; use one ledger per privacy state")
            key = round_key(entry.run_id, entry.round, entry.kind)
            if key not in charged and entry.run_id in charged and (entry.round, entry.kind) == (0, "train"):
                key = entry.run_id  # a round id not of the form RUN:ROUND, written as run id = round id
            if key not in charged:
                raise LedgerError(f"{entry.where}: the ledger records {key!r} (ε = {entry.epsilon:.4g}) but the privacy "
                                  f"state {state.path} does not: the state was reset or restored from an old copy; "
                                  "restore the latest state, never train on a reset one")
            recorded.add(key)
        added = []
        for record in state.rounds:
            if record.round_id in recorded:
                continue
            match = _ROUND_ID.match(record.round_id)
            if match:
                run_id, server_round = match["run"], int(match["round"])
                kind: Kind = "evaluate" if match["kind"] else "train"
            else:
                run_id, server_round, kind = record.round_id, 0, "train"
            added.append(self._append_record(state, record, run_id=run_id, server_round=server_round, kind=kind))
        return added


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


# the server's copy

@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge_site_entries` did."""

    site_id: str
    path: Path
    added: int
    head_seq: int


def ledger_path(run_dir: str | Path, site_id: str) -> Path:
    """``RUN/ledger/<site_id>.jsonl``."""
    return Path(run_dir) / LEDGER_DIR / f"{check_site_id(site_id)}{SUFFIX}"


def merge_site_entries(run_dir: str | Path, entries: Sequence[LedgerEntry], *,
                       public_key: Ed25519PublicKey | None = None) -> MergeResult:
    """Merge the entries a site sent into the server's copy ``RUN/ledger/<site_id>.jsonl``.

    Idempotent: entries the server already holds are skipped. The site sends its entries up to
    its head (its whole ledger, or a tail that starts at or before the server's next seq).

    Parameters
    ----------
    run_dir
        The coordinator's run folder.
    entries
        The site's entries in seq order, all of one site (:func:`parse_entries` of the reply).
    public_key
        The site's public key, when the server has it: the merged chain is then verified in full.

    Returns
    -------
    MergeResult
        The file, how many entries were added and the head seq.

    Raises
    ------
    LedgerError
        Nothing is written when: the entries name several sites or are not consecutive; an entry
        differs from the one the server holds at that seq (a fork or a rewrite); the entries leave
        a gap after the server's head; they end before the server's head (the site's ledger was
        rolled back); or, with ``public_key``, the merged chain does not verify.
    """
    if not entries:
        raise LedgerError("no ledger entries to merge")
    site_id = check_site_id(entries[0].site_id)
    path = ledger_path(run_dir, site_id)
    for a, b in zip(entries, entries[1:], strict=False):
        if b.site_id != site_id:
            raise LedgerError(f"{b.where}: one merge must hold one site's entries, got {site_id!r} and {b.site_id!r}")
        if b.seq != a.seq + 1 or b.prev_hash != a.entry_hash:
            raise LedgerError(f"{b.where}: the entries sent are not a chain (after seq {a.seq})")
    with _locked(path):
        held = read_ledger(path) if path.exists() else []
        if held:
            check_chain(held, public_key, site_id=site_id)
        head = held[-1].seq if held else -1
        new: list[LedgerEntry] = []
        for entry in entries:
            if entry.seq <= head:
                if held[entry.seq].entry_hash != entry.entry_hash:
                    raise LedgerError(f"{entry.where}: differs from the entry the server holds for seq {entry.seq} "
                                      f"(round {held[entry.seq].round}): a fork or a rewrite; not merged")
                continue
            want_prev = (new[-1] if new else held[-1] if held else None)
            if entry.seq != head + 1 + len(new) or entry.prev_hash != (want_prev.entry_hash if want_prev else GENESIS):
                raise LedgerError(f"{entry.where}: does not extend the server's copy (head seq {head}); send the "
                                  f"site's entries from seq {head + 1}")
            new.append(entry)
        if entries[-1].seq < head:
            raise LedgerError(f"{entries[-1].where}: the site's ledger ends at seq {entries[-1].seq} but the server "
                              f"holds up to seq {head}: the site's ledger was rolled back")
        if public_key is not None:
            check_chain([*held, *new], public_key, site_id=site_id)
        if new:
            old = path.read_bytes() if path.exists() else b""
            write_bytes_atomic(path, old + export_entries(new).encode("utf-8"), durable=True)
    return MergeResult(site_id=site_id, path=path, added=len(new), head_seq=head + len(new))
