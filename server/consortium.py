"""The consortium record: the head of every site ledger the coordinator has verified, kept across
runs, so that a site whose privacy folder was lost (a container without a persistent ``/state``,
a replaced disk) cannot start again from ε = 0 unnoticed.

A run's own copy of the ledgers (``RUN/ledger``) lives and dies with the run folder; this record
does not. Per site id and dataset fingerprint it holds the last verified entry: its seq, hash,
ε and the run it came from. A site's ledger must contain that entry unchanged: one that starts
again (seq 0 with another history), forks, or ends before it is refused, with the record's
ε named. The site recovers by restoring its state folder, or by rebuilding it from the
coordinator's copy of its ledger (``RUN/ledger/<site>.jsonl`` of the run named) with
``raregraph privacy restore``, never by starting a new one.

File (JSON, written atomically)::

    {"format": "raregraph-consortium-record", "version": 1,
     "sites": {SITE: {FINGERPRINT: {"seq", "hash", "epsilon", "budget_epsilon", "key_id",
                                    "run_id", "recorded_at"}}}}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from shared.atomic import write_bytes_atomic
from shared.errors import InputError
from shared.privacy.ledger import LedgerEntry, LedgerError

FORMAT = "raregraph-consortium-record"
VERSION = 1


class ConsortiumRecord:
    """The record file: :meth:`check` a site's ledger against it, :meth:`advance` its head.

    Parameters
    ----------
    path
        The record file; created on the first :meth:`advance`.

    Raises
    ------
    InputError
        The file exists and is not a consortium record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._doc = self._read()

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
            if held is None or held.entry_hash != known["hash"]:
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

    def advance(self, entries: Sequence[LedgerEntry], *, run_id: str) -> None:
        """Record the head of a site's ledger once it has passed :meth:`check` and been verified
        and merged; a head the record already holds changes nothing."""
        changed = False
        for site, fingerprint, chain in _chains(entries):
            last, known = chain[-1], self.head(site, fingerprint)
            if known is not None and known["seq"] >= last.seq:
                continue
            self._doc["sites"].setdefault(site, {})[fingerprint] = {
                "seq": last.seq, "hash": last.entry_hash, "epsilon": last.epsilon,
                "budget_epsilon": last.budget_epsilon, "key_id": last.key_id, "run_id": run_id,
                "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
            changed = True
        if changed:
            self._write()

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
