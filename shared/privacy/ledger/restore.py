"""Rebuild a lost privacy folder: from a copy of the site's signed ledger, or, with no copy left,
from an auditor's carry-forward acknowledgement.

When a site's privacy folder (``privacy_state.json`` + ``ledger.jsonl``) is lost, the site
refuses to train (its key-use record and the coordinator's consortium record both know it has
trained). The ledger is the record of what was spent: every entry carries the mechanism it
charged (σ, sampling rate, steps, clip norm) and the ε after it, signed by the site's key. So a
copy of it — the coordinator's ``RUN/ledger/<site>.jsonl``, an auditor's, a backup — is enough
to rebuild the state exactly: :func:`restore_privacy_folder` verifies the copy with the site's
own key, checks it reaches the head the key-use record holds, rebuilds the accountant from the
mechanisms, checks that the recomputed ε is what the ledger signed, and writes both files.
:func:`carry_forward_folder` starts a new folder from an auditor-signed acknowledgement of the
lost head instead (:mod:`shared.privacy.ledger.carry`). Neither overwrites a state or a different
ledger, and neither leaves anything behind when it refuses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.atomic import write_bytes_atomic
from shared.errors import InputError
from shared.privacy.budget import PrivacyBudget
from shared.privacy.ledger.carry import acknowledgement_hash, acknowledges, read_acknowledgement, verify_acknowledgement
from shared.privacy.ledger.entry import LedgerEntry, round_key
from shared.privacy.ledger.files import scan_ledger
from shared.privacy.ledger.key_use import KeyUseRecord, key_use_path
from shared.privacy.ledger.problems import LedgerError
from shared.privacy.ledger.site_ledger import Ledger
from shared.privacy.ledger.verification import verify_chain
from shared.privacy.state import PrivacyState
from shared.privacy.state_file import STATE_FILE, RoundRecord
from shared.signing.keys import key_id, load_private_key, load_public_key

LEDGER_FILE = "ledger.jsonl"
EPSILON_RTOL = 1e-9  # the accountant is deterministic: the recomputed ε is the signed one


@dataclass(frozen=True)
class Restored:
    """What :func:`restore_privacy_folder` wrote."""

    state: Path
    ledger: Path
    site_id: str
    fingerprint: str
    entries: int
    epsilon: float
    budget: PrivacyBudget


def restore_privacy_folder(copy: str | Path, folder: str | Path, *, site_key: str | Path) -> Restored:
    """Write ``folder``'s privacy state and ledger from a verified copy of the site's ledger.

    Parameters
    ----------
    copy
        A copy of the site's ledger (JSON Lines), e.g. the coordinator's ``RUN/ledger/<site>.jsonl``.
    folder
        The site's privacy folder (``STATE/privacy`` for a federated site, ``STATE`` for
        ``raregraph train --epsilon``); it must hold no privacy state.
    site_key
        The site's private key (the one that signed the ledger); its key-use record, beside it,
        is checked and kept.

    Raises
    ------
    LedgerError
        The copy does not verify with the key, covers several datasets, or ends before the head
        the key-use record holds (it is older than what the site signed).
    InputError
        The copy is missing, empty or malformed; the folder already holds a state or another
        ledger; the key cannot be read.
    """
    copy, folder, site_key = Path(copy), Path(folder), Path(site_key)
    if not copy.is_file():
        raise InputError("no such ledger copy", file=copy)
    key = load_private_key(site_key)
    entries, problems = scan_ledger(copy)
    if not entries and not problems:
        raise InputError("the ledger copy holds no entries: nothing to restore", file=copy)
    site_id = entries[0].site_id if entries else ""
    problems += verify_chain(entries, key.public_key(), site_id=site_id)
    if problems:
        raise LedgerError(f"{copy}: the ledger copy does not verify with the key {site_key} "
                          f"(key id {key_id(key.public_key())}): {problems[0].message}", problems=problems)
    fingerprints = sorted({e.dataset_fingerprint for e in entries})
    if len(fingerprints) != 1:
        raise LedgerError(f"{copy}: the ledger copy covers {len(fingerprints)} datasets; a privacy folder holds one")
    fingerprint, last = fingerprints[0], entries[-1]
    state_path, ledger_path = folder / STATE_FILE, folder / LEDGER_FILE
    KeyUseRecord(key_use_path(site_key), key_id(key.public_key())).check(entries, fingerprint=fingerprint,
                                                                         ledger_path=copy)
    if state_path.exists():
        raise InputError("a privacy state is already here; restoring never overwrites one (move it aside first if "
                         "it is the damaged one)", file=state_path)
    text = "".join(e.line + "\n" for e in entries).encode("utf-8")
    kept_ledger = ledger_path.exists()
    if kept_ledger and ledger_path.read_bytes() != text:
        raise InputError("a different ledger is already here; restoring never overwrites one (move it aside first "
                         "if it is the damaged one)", file=ledger_path)
    budget = PrivacyBudget(epsilon=last.budget_epsilon, delta=last.delta)
    with _undo_on_failure(folder, keep_ledger=kept_ledger):
        carry = entries[0].carried if entries[0].kind == "carry" else None
        carried = None if carry is None else {"epsilon": carry["epsilon"], "delta": carry["delta"],
                                              "acknowledgement": acknowledgement_hash(carry["acknowledgement"])}
        state = PrivacyState.rebuild(folder, fingerprint=fingerprint, budget=budget, accountant=last.accountant,
                                     rounds=[_record(e) for e in entries if e.is_charge],
                                     source=f"ledger copy {copy.resolve()}", carried=carried)
        if not math.isclose(state.epsilon(), last.epsilon, rel_tol=EPSILON_RTOL, abs_tol=1e-12):
            raise LedgerError(f"{copy}: the mechanisms the ledger records give ε = {state.epsilon():.6g}, its last "
                              f"entry signed ε = {last.epsilon:.6g}: the copy is not a complete ledger of this site")
        if not kept_ledger:
            write_bytes_atomic(ledger_path, text, durable=True)
        ledger = Ledger(ledger_path, site_id, key, key_use=key_use_path(site_key))
        if ledger.reconcile(state):
            raise LedgerError(f"{copy}: the rebuilt state holds charges the ledger lacks")  # cannot happen: same source
    return Restored(state=state_path, ledger=ledger_path, site_id=site_id, fingerprint=fingerprint,
                    entries=len(entries), epsilon=last.epsilon, budget=budget)


def carry_forward_folder(acknowledgement: str | Path, folder: str | Path, *, site_key: str | Path,
                         auditor_pub: str | Path, budget: PrivacyBudget, accountant: str = "rdp") -> Restored:
    """Start a new privacy folder that carries a lost ledger's ε forward on an auditor's acknowledgement.

    The new ledger opens with a carry entry (signed by ``site_key``) holding the acknowledgement;
    the new state composes what it spends next with the carried (ε₀, δ₀).

    Parameters
    ----------
    acknowledgement
        The auditor-signed file from ``raregraph audit carry-forward``.
    folder
        The site's privacy folder; it must hold no state and no ledger.
    site_key
        The site's private key (the old one, or a new one the coordinator registers); if its
        key-use record holds a head for the dataset, the acknowledgement must name exactly it.
    auditor_pub
        The auditor's public key.
    budget
        The site's budget from now on, the carried part included: its ε and δ must exceed (ε₀, δ₀).
    accountant
        The accountant for what is spent next (``"rdp"`` or ``"prv"``).

    Raises
    ------
    SignatureError
        The acknowledgement was not signed by the auditor's key, or was changed.
    LedgerError
        The site key's record holds another head than the one acknowledged.
    InputError
        Unreadable files; a folder that holds a state or a ledger; a budget that leaves nothing.
    """
    folder, site_key = Path(folder), Path(site_key)
    ack = verify_acknowledgement(read_acknowledgement(acknowledgement), load_public_key(auditor_pub))
    key = load_private_key(site_key)
    fingerprint = ack["dataset_fingerprint"]
    state_path, ledger_path = folder / STATE_FILE, folder / LEDGER_FILE
    for path, what in ((state_path, "a privacy state"), (ledger_path, "a ledger")):
        if path.exists():
            raise InputError(f"{what} is already here; a carry forward starts a new folder (move it aside first if it "
                             "is the damaged one, or restore from it instead)", file=path)
    known = KeyUseRecord(key_use_path(site_key), key_id(key.public_key())).head(fingerprint)
    if known is not None and not acknowledges(ack, known):
        raise LedgerError(f"the key {site_key} has signed its ledger for dataset {fingerprint[:19]}… up to seq "
                          f"{known['seq']} (ε = {known['epsilon']:.4g}), the acknowledgement {acknowledgement} names "
                          f"seq {ack['lost_head']['seq']} (ε = {ack['epsilon']:.4g}): it would forget a charge")
    with _undo_on_failure(folder, keep_ledger=False):
        state = PrivacyState.carry_forward(folder, fingerprint=fingerprint, budget=budget, accountant=accountant,
                                           epsilon=ack["epsilon"], delta=ack["delta"],
                                           acknowledgement=acknowledgement_hash(ack))
        Ledger(ledger_path, ack["site_id"], key, key_use=key_use_path(site_key)).append_carry(state, ack)
    return Restored(state=state_path, ledger=ledger_path, site_id=ack["site_id"], fingerprint=fingerprint, entries=1,
                    epsilon=ack["epsilon"], budget=budget)


@contextmanager
def _undo_on_failure(folder: Path, *, keep_ledger: bool) -> Iterator[None]:
    """Remove the state (and the ledger, unless it was there before) when the body fails, and the
    folder if it made it: a refused restore leaves nothing behind."""
    made_folder = not folder.exists()
    try:
        yield
    except BaseException:
        for path in (folder / STATE_FILE, *(() if keep_ledger else (folder / LEDGER_FILE,))):
            path.unlink(missing_ok=True)
        if made_folder and folder.exists():
            for leftover in folder.iterdir():
                if leftover.name.startswith("."):  # the state's lock file
                    leftover.unlink()
            folder.rmdir()
        raise


def _record(entry: LedgerEntry) -> RoundRecord:
    """The privacy state's record of the charge an entry signs."""
    m = entry.mechanism
    return RoundRecord(round_id=round_key(entry.run_id, entry.round, entry.kind), steps=m.steps,
                       noise_multiplier=m.noise_multiplier, sample_rate=m.sample_rate, clip_norm=m.clip_norm,
                       noise_multiplicity=m.noise_multiplicity, epsilon=entry.epsilon, delta=entry.delta,
                       accountant=entry.accountant, recorded_at=entry.time)
