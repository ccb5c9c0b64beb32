"""The key-use record: beside a site's key, the head of every ledger that key has signed.

A site's privacy folder (state and ledger) can be lost on its own: a container whose
``/state/privacy`` was not persisted, a restored backup of the wrong folder, an operator who
"cleans up". Its key usually survives (it is configured once, often mounted from elsewhere).
So every ledger append also writes, beside the key, the new head for that dataset, and a site
that finds an empty or shorter ledger while its key's record says it has signed further
refuses to train: a budget never starts again from ε = 0 because a folder went missing. The
coordinator's consortium record (:mod:`shared.privacy.ledger.consortium`) is the second, independent witness.

File ``<key file>-use.json`` (``identity/site.key`` → ``identity/site.key-use.json``), written
atomically; not signed (it guards against loss, not against the site itself)::

    {"format": "raregraph-key-use", "version": 1, "key_id": "…",
     "ledgers": {FINGERPRINT: {"site_id", "seq", "hash", "epsilon", "ledger", "recorded_at"}}}

A key folder that cannot be written (a read-only secret mount) keeps no record: the site says so
once in its log, and only the consortium record guards it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from shared.atomic import write_bytes_atomic
from shared.errors import InputError
from shared.privacy.ledger.carry import acknowledges
from shared.privacy.ledger.entry import LedgerEntry
from shared.privacy.ledger.problems import LedgerError

FORMAT = "raregraph-key-use"
VERSION = 1
SUFFIX = "-use.json"

log = logging.getLogger("raregraph.privacy")


def key_use_path(key_path: str | Path) -> Path:
    """Where the record of the key at ``key_path`` lives."""
    key_path = Path(key_path)
    return key_path.with_name(key_path.name + SUFFIX)


class KeyUseRecord:
    """The record beside one key: :meth:`check` a ledger against it, :meth:`advance` its head.

    Parameters
    ----------
    path
        The record file (:func:`key_use_path` of the key).
    key_id
        The key's id; a record written for another key is refused.

    Raises
    ------
    InputError
        The file exists and is not a key-use record of this key.
    """

    def __init__(self, path: str | Path, key_id: str) -> None:
        self.path = Path(path)
        self.key_id = key_id
        self._doc = self._read()
        self._unwritable = False

    def _read(self) -> dict:
        if not self.path.exists():
            return {"format": FORMAT, "version": VERSION, "key_id": self.key_id, "ledgers": {}}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"not a readable key-use record ({exc}); it lists the ledgers this key has signed: "
                             "restore it from a backup", file=self.path) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION \
                or not isinstance(doc.get("ledgers"), dict):
            raise InputError(f"not a {FORMAT} version {VERSION} file", file=self.path)
        if doc.get("key_id") != self.key_id:
            raise InputError(f"the record is of key {doc.get('key_id')!r}, the key beside it is {self.key_id!r}: "
                             "a key was replaced without its record", file=self.path)
        return doc

    def head(self, fingerprint: str) -> dict | None:
        """The last entry this key signed for that dataset, or None."""
        return self._doc["ledgers"].get(fingerprint)

    def check(self, entries: Sequence[LedgerEntry], *, fingerprint: str, ledger_path: Path) -> None:
        """The ledger at ``ledger_path`` (its ``entries``) must hold the recorded head unchanged.

        Raises
        ------
        LedgerError
            The ledger is empty or ends before the recorded head (the privacy folder was lost or
            restored from an old copy), or holds another entry there (a second history).
        """
        known = self.head(fingerprint)
        if known is None:
            return
        held = next((e for e in entries if e.seq == known["seq"]), None)
        if held is not None and held.entry_hash == known["hash"]:
            return
        if entries and entries[0].kind == "carry" and acknowledges(entries[0].carried["acknowledgement"], known):
            return  # a new ledger opened on an auditor's acknowledgement of exactly this head
        now = f"ends at seq {entries[-1].seq}" if entries else "is empty or missing"
        if held is not None:
            now = f"holds another entry at seq {known['seq']}"
        raise LedgerError(
            f"site {known['site_id']}: the privacy ledger {ledger_path} {now}, but this site's key has signed its "
            f"ledger for dataset {fingerprint[:19]}… up to seq {known['seq']} (ε = {known['epsilon']:.4g}; "
            f"{self.path}): the privacy folder was lost or rolled back, and training on it would start the budget "
            f"again. Restore the folder from a backup, or rebuild it from the coordinator's copy of the ledger with "
            f"`raregraph privacy restore` (with no copy left: an auditor's `raregraph audit carry-forward`)")

    def advance(self, entry: LedgerEntry, *, ledger_path: Path) -> None:
        """Record ``entry`` as the head of its dataset's ledger (after it is on disk)."""
        known = self.head(entry.dataset_fingerprint)
        if known is not None and known["seq"] >= entry.seq and entry.kind != "carry":
            return  # (a carry entry opens a new chain at seq 0, once check accepted it)
        self._doc["ledgers"][entry.dataset_fingerprint] = {
            "site_id": entry.site_id, "seq": entry.seq, "hash": entry.entry_hash, "epsilon": entry.epsilon,
            "ledger": str(Path(ledger_path).resolve()), "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if self._unwritable:
            return
        try:
            write_bytes_atomic(self.path, (json.dumps(self._doc, indent=2, sort_keys=True) + "\n").encode("utf-8"),
                               mode=0o600, durable=True)
        except OSError as exc:
            self._unwritable = True
            log.warning("site %s: cannot keep the key-use record %s (%s): only the coordinator's consortium record "
                        "now notices a lost privacy folder; make the key's folder writable", entry.site_id,
                        self.path, exc.strerror or exc)
