"""The consortium record: the head of every site ledger the coordinator has verified, kept across
runs, so that a site whose privacy folder was lost (a container without a persistent ``/state``,
a replaced disk) cannot start again from ε = 0 unnoticed.

A run's own copy of the ledgers (``RUN/ledger``) lives and dies with the run folder; this record
does not. Per site id and dataset fingerprint it holds the last verified entry: its seq, hash,
ε and the run it came from. A site's ledger must contain that entry unchanged: one that starts
again (seq 0 with another history), forks, or ends before it is refused, with the record's
ε named. The site recovers by restoring its state folder, or by rebuilding it from the
coordinator's copy of its ledger (``RUN/ledger/<site>.jsonl`` of the run named) with
``raregraph privacy restore``, never by starting a new one. With no copy left anywhere, a new
ledger is accepted only when it opens with a carry entry whose acknowledgement the auditor's key
(``fed.auditor-pub``) signed for exactly the recorded head and at least its ε
(:mod:`shared.privacy.ledger.carry`).

The coordinator writes it (:mod:`server.strategy`); the auditor reads it to sign a carry forward.
File (JSON, written atomically)::

    {"format": "raregraph-consortium-record", "version": 1,
     "sites": {SITE: {FINGERPRINT: {"seq", "hash", "start", "epsilon", "delta", "budget_epsilon",
                                    "key_id", "run_id", "recorded_at"}}}}

``start`` is the hash of the chain's seq 0 (a carried-forward chain starts again); ``start`` and
``delta`` are missing in records written before they were added.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.atomic import write_bytes_atomic
from shared.errors import ConfigError, InputError, SignatureError
from shared.privacy.ledger.carry import acknowledges, verify_acknowledgement
from shared.privacy.ledger.entry import LedgerEntry
from shared.privacy.ledger.problems import LedgerError

FORMAT = "raregraph-consortium-record"
VERSION = 1


class ConsortiumRecord:
    """The record file: :meth:`check` a site's ledger against it, :meth:`advance` its head.

    Parameters
    ----------
    path
        The record file; created on the first :meth:`advance`.
    auditor_pub
        The auditor's public key: a ledger that starts again is accepted only on an acknowledgement
        it signed. None: no such ledger is accepted.

    Raises
    ------
    InputError
        The file exists and is not a consortium record.
    """

    def __init__(self, path: str | Path, *, auditor_pub: Ed25519PublicKey | None = None) -> None:
        self.path = Path(path)
        self.auditor_pub = auditor_pub
        self._doc = self._read()
        self._unsaved = False

    def _read(self) -> dict:
        if not self.path.exists():
            return {"format": FORMAT, "version": VERSION, "sites": {}}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"not a readable consortium record ({exc})", file=self.path) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION \
                or not isinstance(doc.get("sites"), dict):
            raise InputError(f"not a {FORMAT} version {VERSION} file", file=self.path)
        return doc

    def heads(self, site_id: str) -> dict[str, dict]:
        """Every dataset's last verified entry of that site, by fingerprint."""
        return dict(self._doc["sites"].get(site_id, {}))

    def head(self, site_id: str, fingerprint: str) -> dict | None:
        """The last verified entry of that site's ledger for that dataset, or None."""
        return self._doc["sites"].get(site_id, {}).get(fingerprint)

    def check(self, entries: Sequence[LedgerEntry]) -> None:
        """Check a site's whole ledger (as its reply carries it) against the record.

        Raises
        ------
        LedgerError
            The ledger does not contain the recorded head unchanged: it restarted, was rolled
            back or forked (the message names the recorded seq, ε and run, and the recovery).
        """
        for site, fingerprint, chain in _chains(entries):
            known = self.head(site, fingerprint)
            if known is None:
                continue
            held = next((e for e in chain if e.seq == known["seq"]), None)
            if (held is None or held.entry_hash != known["hash"]) and chain[0].kind == "carry":
                self._check_carry(site, chain[0], known)
            elif held is None or held.entry_hash != known["hash"]:
                last = chain[-1]
                what = ("ends before it (it started again or was rolled back)" if last.seq < known["seq"] else
                        "holds another entry there" if held is not None else "does not reach back to it")
                raise LedgerError(
                    f"site {site}: its privacy ledger for dataset {fingerprint[:12]}… {what}: the consortium record "
                    f"({self.path}) holds seq {known['seq']} (ε = {known['epsilon']:.4g}) from run "
                    f"{known['run_id']}, the site now sends seq {chain[0].seq}–{last.seq} (ε = {last.epsilon:.4g}); "
                    f"its privacy state was lost, reset or rolled back. Restore the site's state folder (or rebuild it "
                    f"from RUN/ledger/{site}.jsonl of run {known['run_id']} with `raregraph privacy restore`) "
                    "before it trains again")

    def _check_carry(self, site: str, carry: LedgerEntry, known: dict) -> None:
        """A ledger that starts again: accepted only on the auditor's acknowledgement of this head."""
        ack = carry.carried["acknowledgement"]
        if self.auditor_pub is None:
            raise LedgerError(f"site {site}: its ledger starts again on a carry-forward acknowledgement, but no auditor "
                              "key is configured to check it (set fed.auditor-pub)")
        try:
            verify_acknowledgement(ack, self.auditor_pub)
        except (ConfigError, SignatureError) as exc:
            raise LedgerError(f"site {site}: its carry-forward acknowledgement does not verify: {exc}") from None
        if not acknowledges(ack, known) or carry.carried["epsilon"] != ack["epsilon"]:
            raise LedgerError(
                f"site {site}: its carry-forward acknowledgement names seq {ack['lost_head']['seq']} (ε = "
                f"{ack['epsilon']:.4g}), but the consortium record ({self.path}) holds seq {known['seq']} (ε = "
                f"{known['epsilon']:.4g}) from run {known['run_id']}: the auditor must acknowledge that head")

    def advance(self, entries: Sequence[LedgerEntry], *, run_id: str, save: bool = True) -> None:
        """Record the head of a site's ledger once it has passed :meth:`check` and been verified
        and merged; a head the record already holds changes nothing. ``save=False`` leaves the
        file to one :meth:`save` for many sites (the coordinator's round)."""
        changed = False
        for site, fingerprint, chain in _chains(entries):
            last, known = chain[-1], self.head(site, fingerprint)
            restarted = chain[0].kind == "carry" and known is not None and known.get("start") != chain[0].entry_hash
            if known is not None and known["seq"] >= last.seq and not restarted:
                continue
            self._doc["sites"].setdefault(site, {})[fingerprint] = {
                "seq": last.seq, "hash": last.entry_hash, "start": chain[0].entry_hash, "epsilon": last.epsilon,
                "delta": last.delta, "budget_epsilon": last.budget_epsilon, "key_id": last.key_id, "run_id": run_id,
                "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
            changed = True
        self._unsaved |= changed
        if save:
            self.save()

    def save(self) -> None:
        """Write the record if an :meth:`advance` changed it since it was last written."""
        if self._unsaved:
            self._write()
            self._unsaved = False

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self._doc, indent=2, sort_keys=True) + "\n"
        write_bytes_atomic(self.path, text.encode("utf-8"), durable=True)


def _chains(entries: Sequence[LedgerEntry]) -> list[tuple[str, str, list[LedgerEntry]]]:
    """(site, dataset fingerprint, its entries in order) for every dataset the entries cover."""
    out = []
    for fingerprint in dict.fromkeys(e.dataset_fingerprint for e in entries):
        chain = [e for e in entries if e.dataset_fingerprint == fingerprint]
        out.append((chain[0].site_id, fingerprint, chain))
    return out
