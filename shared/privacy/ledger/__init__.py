"""A site's signed, hash-chained privacy ledger: one JSON line per charge to its accountant.

The file format (fields, canonical JSON, hash and signature) is described in
:mod:`shared.privacy.ledger.entry`. The package's modules:

- :mod:`~shared.privacy.ledger.problems`: :class:`Problem`, :class:`LedgerError`, :func:`where`
- :mod:`~shared.privacy.ledger.entry`: :class:`LedgerEntry`, :class:`MechanismRecord`, the format's constants,
  :func:`canonical_json`, :func:`check_site_id`, :func:`round_key`
- :mod:`~shared.privacy.ledger.files`: reading and writing ledger files and replies (:func:`scan_ledger`,
  :func:`read_ledger`, :func:`export_entries`, :func:`parse_entries`)
- :mod:`~shared.privacy.ledger.verification`: :func:`verify_chain`, :func:`check_chain`
- :mod:`~shared.privacy.ledger.site_ledger`: :class:`Ledger`, the site's own file, opened for appending
- :mod:`~shared.privacy.ledger.key_use`: :class:`KeyUseRecord`, the heads a site key has signed, kept beside it
- :mod:`~shared.privacy.ledger.merge`: the server's copy (:func:`ledger_path`, :func:`merge_site_entries`)

Protocol for a client, per round (after ``PrivacyState.record_round``, before the reply)::

    ledger = Ledger(state_folder / "ledger.jsonl", site_id, private_key)   # verifies the chain
    ledger.reconcile(state)                      # once at start-up: catch up charges a crash left out
    entry = ledger.append_round(state, run_id=run_id, server_round=r, kind="train")
    reply[...] = export_entries(ledger.entries)  # the server merges with merge_site_entries

What one copy cannot show: a file cut back to an earlier entry is itself a valid chain. The
server's copy (``RUN/ledger/<site_id>.jsonl``, which :func:`merge_site_entries` refuses to roll
back) and :meth:`Ledger.reconcile` (the ledger against the privacy state) are the witnesses.
"""

from shared.privacy.ledger.entry import (
    FORMAT,
    GENESIS,
    LedgerEntry,
    MechanismRecord,
    canonical_json,
    check_site_id,
    round_key,
)
from shared.privacy.ledger.files import (
    SUFFIX,
    export_entries,
    parse_entries,
    read_ledger,
    scan_ledger,
)
from shared.privacy.ledger.key_use import KeyUseRecord, key_use_path
from shared.privacy.ledger.merge import ledger_path, merge_site_entries
from shared.privacy.ledger.problems import LedgerError, Problem, where
from shared.privacy.ledger.site_ledger import Ledger
from shared.privacy.ledger.verification import check_chain, verify_chain

__all__ = [
    "FORMAT",
    "GENESIS",
    "KeyUseRecord",
    "SUFFIX",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "MechanismRecord",
    "Problem",
    "canonical_json",
    "check_chain",
    "check_site_id",
    "export_entries",
    "key_use_path",
    "ledger_path",
    "merge_site_entries",
    "parse_entries",
    "read_ledger",
    "round_key",
    "scan_ledger",
    "verify_chain",
    "where",
]
