"""The server's copy of a site's ledger, ``RUN/ledger/<site_id>.jsonl``, and merging a reply into it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.atomic import write_bytes_atomic
from shared.runs import RunFolder
from shared.privacy.ledger.entry import GENESIS, LedgerEntry, check_site_id
from shared.privacy.ledger.files import SUFFIX, export_entries, locked, read_ledger
from shared.privacy.ledger.problems import LedgerError
from shared.privacy.ledger.verification import check_chain


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge_site_entries` did."""

    site_id: str
    path: Path
    added: int
    head_seq: int


def ledger_path(run_dir: str | Path, site_id: str) -> Path:
    """``RUN/ledger/<site_id>.jsonl``."""
    return RunFolder(Path(run_dir)).ledger / f"{check_site_id(site_id)}{SUFFIX}"


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
    with locked(path):
        held = read_ledger(path) if path.exists() else []
        if held:  # its signatures are checked below, with the new entries, when there is a key
            check_chain(held, None, site_id=site_id)
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
