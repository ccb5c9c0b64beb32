"""The site's own ledger file: :class:`Ledger` opens and verifies it, signs and appends entries."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.atomic import write_bytes_atomic
from shared.errors import ConfigError
from shared.privacy.ledger.carry import acknowledgement_hash
from shared.privacy.ledger.entry import (
    CHARGES,
    FORMAT,
    GENESIS,
    Kind,
    LedgerEntry,
    MechanismRecord,
    canonical_json,
    check_integer,
    check_site_id,
    round_key,
)
from shared.privacy.ledger.files import locked, scan_ledger
from shared.privacy.ledger.key_use import KeyUseRecord
from shared.privacy.ledger.problems import LedgerError, where
from shared.privacy.ledger.verification import verify_chain
from shared.signing.keys import key_id, sign

if TYPE_CHECKING:  # annotations only: the ledger reads a state it is given, so reading a ledger loads no Opacus
    from shared.privacy.state import PrivacyState
    from shared.privacy.state_file import RoundRecord

_ROUND_ID = re.compile(r"^(?P<run>.+):(?P<round>\d+)(?::(?P<kind>evaluate|histogram))?$")


def _make_entry(private_key: Ed25519PrivateKey, body: dict[str, Any]) -> LedgerEntry:
    """Sign ``body`` (every field but the signature) and validate the result."""
    raw = {**body, "signature": sign(private_key, canonical_json(body))}
    return LedgerEntry.from_json(raw)


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
        The site's Ed25519 key (:func:`shared.signing.keys.load_private_key`).
    key_use
        The key's use record (:func:`~shared.privacy.ledger.key_use.key_use_path` of the key file):
        :meth:`reconcile` refuses a ledger that lacks the head recorded there, and every append
        advances it. ``None`` keeps no record (tests, one-off tools).

    Raises
    ------
    LedgerError
        The existing file does not verify (tampered, truncated, another site's or another key's).
    InputError
        A line of the file is malformed, or the key-use record is not one of this key.
    ConfigError
        ``site_id`` is not a valid id.
    """

    def __init__(self, path: str | Path, site_id: str, private_key: Ed25519PrivateKey, *,
                 key_use: str | Path | None = None) -> None:
        self.path = Path(path)
        self.site_id = check_site_id(site_id)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ConfigError(f"private_key must be an Ed25519 private key, got {type(private_key).__name__}")
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)
        self._key_use = None if key_use is None else KeyUseRecord(key_use, self.key_id)
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
            ``"train"``, ``"evaluate"`` or ``"histogram"``.
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
        if kind not in CHARGES:
            raise ConfigError(f"kind must be one of {', '.join(CHARGES)}, got {kind!r}")
        if not isinstance(mechanism, MechanismRecord):
            raise ConfigError(f"mechanism must be a MechanismRecord, got {type(mechanism).__name__}")
        return self._append(run_id=run_id, server_round=server_round, kind=kind, mechanism=mechanism.to_json(),
                            accountant=accountant, epsilon=epsilon, delta=delta, budget_epsilon=budget_epsilon,
                            dataset_fingerprint=dataset_fingerprint, time=time)

    def append_budget(self, state: PrivacyState, *, run_id: str, server_round: int) -> LedgerEntry | None:
        """Sign the site's budget change, if its privacy state holds another budget than the last entry.

        A budget is changed only on purpose (a raise needs ``budget-raise``); the change is its own
        entry — the old and the new (ε, δ), and ε spent at the new δ — so the audit shows it as an
        event and checks it against the consortium's budget file. Call it after :meth:`reconcile`.

        Returns
        -------
        LedgerEntry or None
            The entry written, or None when the budget is the one the ledger already holds.
        """
        head, budget = self.head, state.budget
        if head is None or (head.budget_epsilon, head.delta) == (budget.epsilon, budget.delta):
            return None
        return self._append(run_id=run_id, server_round=server_round, kind="budget", mechanism=None,
                            accountant=state.mechanism, epsilon=state.epsilon(), delta=budget.delta,
                            budget_epsilon=budget.epsilon, dataset_fingerprint=state.fingerprint,
                            previous_budget={"epsilon": head.budget_epsilon, "delta": head.delta})

    def append_carry(self, state: PrivacyState, acknowledgement: dict[str, Any]) -> LedgerEntry:
        """Open an empty ledger with the carry entry of a state made by ``PrivacyState.carry_forward``.

        Raises
        ------
        LedgerError
            The ledger is not empty, or the state carries nothing or another acknowledgement.
        """
        carried = state.carried
        if carried is None or carried["acknowledgement"] != acknowledgement_hash(acknowledgement):
            raise LedgerError(f"{self.path}: the privacy state {state.path} does not carry this acknowledgement forward")
        if self._entries:
            raise LedgerError(f"{self.path}: a carry entry opens a new ledger; this one has {len(self)} entries")
        return self._append(run_id="carry-forward", server_round=0, kind="carry", mechanism=None,
                            accountant=state.mechanism, epsilon=carried["epsilon"], delta=state.budget.delta,
                            budget_epsilon=state.budget.epsilon, dataset_fingerprint=state.fingerprint,
                            carried={"epsilon": carried["epsilon"], "delta": carried["delta"],
                                     "acknowledgement": acknowledgement})

    def _append(self, *, run_id: str, server_round: int, kind: Kind, mechanism: dict[str, Any] | None,
                accountant: str, epsilon: float, delta: float, budget_epsilon: float, dataset_fingerprint: str,
                time: str | None = None, **event: Any) -> LedgerEntry:
        """Sign and append one entry of any kind (see :meth:`append`)."""
        check_integer("server_round", server_round, low=0)
        body = {"format": FORMAT, "site_id": self.site_id, "run_id": run_id, "round": int(server_round),
                "time": time or datetime.now(UTC).isoformat(timespec="seconds"), "kind": kind,
                "mechanism": mechanism, "accountant": accountant, "epsilon": _as_float("epsilon", epsilon),
                "delta": _as_float("delta", delta), "budget_epsilon": _as_float("budget_epsilon", budget_epsilon),
                "dataset_fingerprint": dataset_fingerprint, "key_id": self.key_id, **event}
        with locked(self.path):
            self._entries = self._load()  # another process may have appended since we opened
            head = self.head
            for entry in self._entries:
                if (entry.run_id, entry.round, entry.kind) == (run_id, server_round, kind):
                    raise LedgerError(f"{where(self.site_id, entry.seq, server_round)}: run {run_id!r} round "
                                      f"{server_round} ({kind}) is already in the ledger")
            if head is not None and body["epsilon"] < head.epsilon and not _delta_raised(kind, body, head):
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
            if self._key_use is not None:
                self._key_use.advance(entry, ledger_path=self.path)
        return entry

    def append_round(self, state: PrivacyState, *, run_id: str, server_round: int, kind: Kind = "train") -> LedgerEntry:
        """Append the entry for a round the privacy state has charged (call right after ``record_round``).

        The round must have been charged with ``round_id = round_key(run_id, server_round, kind)``,
        i.e. ``"RUN:ROUND"`` for training, ``"RUN:ROUND:evaluate"`` for an evaluation release and
        ``"RUN:0:histogram"`` for the disease-mix release.

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

    def check_key_use(self, fingerprint: str) -> None:
        """Refuse a ledger that lacks the head the key-use record holds for that dataset; call it
        before a privacy state is opened or created, so a lost folder is never started afresh.

        Raises
        ------
        LedgerError
            The ledger is empty, ends earlier or holds another entry there (the privacy folder
            was lost or rolled back).
        """
        if self._key_use is not None:
            self._key_use.check(self._entries, fingerprint=fingerprint, ledger_path=self.path)

    def reconcile(self, state: PrivacyState) -> list[LedgerEntry]:
        """Check the ledger against the privacy state at start-up and add the charges it lacks.

        A crash between ``record_round`` and :meth:`append_round` leaves a charged round out of the
        ledger (its weights never left the site); it is appended here, in the state's order. A round
        id not of the form ``RUN:ROUND[:evaluate|:histogram]`` is written with run id = round id, round 0.

        Returns
        -------
        list[LedgerEntry]
            The entries added (usually none).

        Raises
        ------
        LedgerError
            The ledger belongs to another dataset, records a charge the state does not have (the
            state was reset or restored from an old copy: the ledger is the witness), records a
            charge with another mechanism or ε than the state says (the state file was edited:
            the signed ledger is what the site spent, and nothing only the state file says is
            trusted), or lacks the head the key-use record holds (the whole privacy folder was
            lost or rolled back).
        """
        self.check_key_use(state.fingerprint)
        charged = {r.round_id: r for r in state.rounds}
        recorded = set()
        _check_carry(self._entries, state, self.path)
        for entry in self._entries:
            if entry.dataset_fingerprint != state.fingerprint:
                raise LedgerError(f"{entry.where}: the ledger {self.path} is for dataset {entry.dataset_fingerprint!r}, "
                                  f"the privacy state for {state.fingerprint!r}; use one ledger per privacy state")
            if not entry.is_charge:
                continue
            key = round_key(entry.run_id, entry.round, entry.kind)
            if key not in charged and entry.run_id in charged and (entry.round, entry.kind) == (0, "train"):
                key = entry.run_id  # a round id not of the form RUN:ROUND, written as run id = round id
            if key not in charged:
                raise LedgerError(f"{entry.where}: the ledger records {key!r} (ε = {entry.epsilon:.4g}) but the privacy "
                                  f"state {state.path} does not: the state was reset or restored from an old copy; "
                                  "restore the latest state, never train on a reset one")
            _check_same_charge(entry, charged[key], state.path)
            recorded.add(key)
        added = []
        for record in state.rounds:
            if record.round_id in recorded:
                continue
            match = _ROUND_ID.match(record.round_id)
            if match:
                run_id, server_round = match["run"], int(match["round"])
                kind: Kind = match["kind"] or "train"  # type: ignore[assignment]
            else:
                run_id, server_round, kind = record.round_id, 0, "train"
            added.append(self._append_record(state, record, run_id=run_id, server_round=server_round, kind=kind))
        return added


def _delta_raised(kind: str, body: dict[str, Any], head: LedgerEntry) -> bool:
    """A budget entry that raises δ states ε at the larger δ, which may be smaller: not a reset."""
    return kind == "budget" and body["delta"] > head.delta


def _check_carry(entries: list[LedgerEntry], state: PrivacyState, path: Path) -> None:
    """A state that carries a lost ledger's ε forward and its ledger's carry entry must agree."""
    carry = entries[0] if entries and entries[0].kind == "carry" else None
    carried = state.carried
    if carried is None and carry is None:
        return
    if carry is None:
        raise LedgerError(f"{path}: the privacy state {state.path} carries ε = {carried['epsilon']:.4g} forward, but "
                          "the ledger does not open with its carry entry; restore the ledger written with the state")
    if carried is None or (carried["epsilon"], carried["delta"], carried["acknowledgement"]) != (
            carry.carried["epsilon"], carry.carried["delta"], acknowledgement_hash(carry.carried["acknowledgement"])):
        raise LedgerError(f"{carry.where}: the ledger carries ε = {carry.carried['epsilon']:.4g} forward, the privacy "
                          f"state {state.path} {'nothing' if carried is None else 'another figure'}: the state was "
                          "reset or edited; restore it (raregraph privacy restore)")


def _check_same_charge(entry: LedgerEntry, record: RoundRecord, state_path: Path) -> None:
    """The privacy state's record of a charge must say what the signed entry says: the mechanism
    (σ, q, steps, clip norm, multiplicity) and the ε after it; else the state file was edited."""
    m = entry.mechanism
    pairs = (("noise multiplier", m.noise_multiplier, record.noise_multiplier),
             ("sample rate", m.sample_rate, record.sample_rate), ("steps", m.steps, record.steps),
             ("clip norm", m.clip_norm, record.clip_norm),
             ("noise multiplicity", m.noise_multiplicity, record.noise_multiplicity),
             ("ε", entry.epsilon, record.epsilon))
    for name, signed, stated in pairs:
        if float(signed) != float(stated):
            raise LedgerError(f"{entry.where}: the privacy state {state_path} records {name} {float(stated):.6g} for "
                              f"{record.round_id!r}, the signed ledger {float(signed):.6g}: the state file was edited; "
                              "restore it from a backup (the ledger is what the site spent)")


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)
