"""Verifying one site's chain of entries: every problem found (:func:`verify_chain`) or the first raised."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.errors import SignatureError
from shared.privacy.ledger.entry import GENESIS, LedgerEntry
from shared.privacy.ledger.problems import LedgerError, Problem, where
from shared.signing.keys import key_id, verify


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
       which already explains it), ε never decreases (``epsilon-decreased``: a reset; a budget
       entry that raises δ states ε at the larger δ and may), a carry entry only at seq 0
       (``carry-not-first``).

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
        if entry.kind == "carry" and entry.seq != 0:
            add(entry, "carry-not-first", "a carry entry opens a new ledger (seq 0); here it would hide the "
                                          "charges before it")
        delta_raised = entry.kind == "budget" and previous is not None and entry.delta > previous.delta
        if previous is not None and entry.epsilon < previous.epsilon and not delta_raised \
                and not {id(entry), id(previous)} & bad_signature:
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
