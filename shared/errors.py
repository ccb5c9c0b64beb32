"""Project exceptions. Library code raises these; only CLI commands and app handlers
turn them into exit codes or error replies."""

from __future__ import annotations

from pathlib import Path


class RareGraphError(Exception):
    """Base class: the message alone must tell the user what is wrong and what to fix."""


class InputError(RareGraphError, ValueError):
    """A file the user gave us is missing, malformed or inconsistent.

    The message is rendered as ``FILE:LINE: column FIELD: problem`` (text files) or
    ``FILE: row N: column FIELD: problem`` (Parquet: data row N, 1-based), so that one
    line names exactly where to look.
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
        self.problem = problem
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
