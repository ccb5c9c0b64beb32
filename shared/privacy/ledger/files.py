"""Reading and writing ledger files and replies: JSON Lines in, entries out, and the file lock."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.errors import ConfigError, InputError
from shared.privacy.ledger.entry import LedgerEntry
from shared.privacy.ledger.problems import LedgerError, Problem, where

SUFFIX = ".jsonl"


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
def locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock beside ``path``, so two processes never append at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
