"""Project exceptions. Library code raises these; only CLI commands and app handlers
turn them into exit codes or error replies."""

from __future__ import annotations

from pathlib import Path

#: characters of a value from a user's file that an error message quotes; the rest is
#: elided with its length noted, so a 4 MB field never floods a terminal or a JSON report
QUOTE_CHARS = 60
#: characters of an input problem's text: a net under quote() for messages that embed a
#: library's text or a long list (the longest legitimate ones are a few hundred)
PROBLEM_CHARS = 1000


def quote(value: object, *, bare: bool = False) -> str:
    """How every error message shows a value read from a user's file.

    Parameters
    ----------
    value
        The value as read (any type).
    bare
        ``str(value)`` instead of ``repr(value)`` (ids and numbers read better unquoted).

    Returns
    -------
    str
        The representation, cut to :data:`QUOTE_CHARS` characters with ``… (N characters)``
        appended when longer.
    """
    text = str(value) if bare else repr(value)
    if len(text) <= QUOTE_CHARS:
        return text
    return f"{text[:QUOTE_CHARS]}… ({len(str(value)):,} characters)"


def clip(text: str, limit: int = PROBLEM_CHARS) -> str:
    """``text`` cut to ``limit`` characters (the net under :func:`quote`)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


class RareGraphError(Exception):
    """Base class: the message alone must tell the user what is wrong and what to fix."""


class InputError(RareGraphError, ValueError):
    """A file the user gave us is missing, malformed or inconsistent.

    The message is rendered as ``FILE:LINE: column FIELD: problem`` (text files) or
    ``FILE: row N: column FIELD: problem`` (Parquet: data row N, 1-based), so that one
    line names exactly where to look. Values are quoted with :func:`quote`, and the problem
    is cut to :data:`PROBLEM_CHARS` characters, so the line stays one line.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.problem = problem = clip(problem)
        self.file = None if file is None else str(file)
        self.line = line
        self.row = row
        self.field = field
        where = ""
        if self.file is not None:
            where = self.file if line is None else f"{self.file}:{line}"
        parts = [p for p in (where, f"row {row}" if row is not None else "", f"column {field}" if field else "") if p]
        super().__init__(": ".join([*parts, problem]))


class ConfigError(RareGraphError, ValueError):
    """A configuration file or option has an unknown key, a wrong type or a bad value."""


class SignatureError(RareGraphError):
    """A signature, key or file hash does not verify."""


class OutputExistsError(RareGraphError):
    """The output path exists and the user did not ask to replace it."""
