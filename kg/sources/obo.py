"""Parser for OBO 1.2 flat files such as the HPO release ``hp.obo``.

Only ``[Term]`` stanzas are kept; ``[Typedef]`` stanzas are skipped. The parser reads the
file once, line by line, and checks what a truncated or foreign file would break: the
``format-version`` header, an ``id`` and ``name`` in every term, and ``is_a`` targets that
are defined in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import InputError


@dataclass(slots=True)
class OboTerm:
    """One ``[Term]`` stanza. ``line`` is where the stanza starts (1-based)."""

    id: str
    line: int
    name: str = ""
    definition: str = ""
    synonyms: list[tuple[str, str]] = field(default_factory=list)  # (text, scope)
    xrefs: list[str] = field(default_factory=list)
    alt_ids: list[str] = field(default_factory=list)
    is_a: list[str] = field(default_factory=list)
    replaced_by: list[str] = field(default_factory=list)
    consider: list[str] = field(default_factory=list)
    obsolete: bool = False


@dataclass(slots=True)
class OboOntology:
    """The parsed file: header tags and terms by id (file order)."""

    header: dict[str, list[str]]
    terms: dict[str, OboTerm]

    @property
    def version(self) -> str:
        """The release, from ``data-version`` (``hp/releases/2025-01-16`` → ``2025-01-16``)."""
        raw = (self.header.get("data-version") or [""])[0]
        return raw.rsplit("/", 1)[-1]


# "text" then the rest; the text is runs of plain characters between escapes (the unrolled
# form of (?:[^"\\]|\\.)*, which matches the same strings without a step per character)
_QUOTED = re.compile(r'^"([^"\\]*(?:\\.[^"\\]*)*)"\s*(.*)$')
_ESCAPE = re.compile(r"\\(.)")


def _quoted(value: str) -> tuple[str, str]:
    """Split ``"text" REST`` into (text, REST), honouring backslash escapes."""
    if not value.startswith('"'):
        return value, ""
    m = _QUOTED.match(value)
    if m is None:
        raise ValueError("unterminated quoted string")
    text = m.group(1)
    if "\\" in text:
        text = _ESCAPE.sub(r"\1", text)
    return text, m.group(2).strip()


def _strip_comment(value: str) -> str:
    """Drop a trailing ``! comment`` and any ``{qualifiers}`` from a tag value."""
    bang = value.find(" !")
    if bang >= 0:
        value = value[:bang]
    brace = value.find(" {")
    if brace >= 0:
        value = value[:brace]
    return value.strip()


def parse_obo(path: str | Path) -> OboOntology:
    """Parse an OBO 1.2 file.

    Parameters
    ----------
    path
        The ``.obo`` file.

    Returns
    -------
    OboOntology
        Header tags and every ``[Term]``, obsolete ones included (flag ``obsolete``).

    Raises
    ------
    InputError
        The file is missing, lacks the ``format-version`` header, has a term without
        ``id`` or ``name``, a malformed synonym, a duplicate id, or an ``is_a`` target
        that is not defined (a truncated file). The message names file and line.
    """
    path = Path(path)
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    header: dict[str, list[str]] = {}
    terms: dict[str, OboTerm] = {}
    is_a_lines: list[tuple[str, str, int]] = []
    term: OboTerm | None = None
    in_term = False
    in_header = True
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\n").rstrip("\r")
            if lineno == 1 and not line.startswith("format-version:"):
                raise InputError(
                    "not an OBO file: the first line must be 'format-version: ...'",
                    file=path, line=1,
                )
            if not line or line.startswith("!"):
                continue
            if line.startswith("["):
                if term is not None:
                    _finish(term, terms, path)
                    term = None
                in_header = False
                in_term = line.strip() == "[Term]"
                if in_term:
                    term = OboTerm(id="", line=lineno)
                continue
            tag, sep, value = line.partition(":")
            if not sep:
                raise InputError(f"expected 'tag: value', got {line[:60]!r}", file=path, line=lineno)
            value = value.strip()
            if in_header:
                header.setdefault(tag, []).append(value)
                continue
            if not in_term or term is None:
                continue
            if tag == "id":
                term.id = value
            elif tag == "name":
                term.name = value
            elif tag == "def":
                try:
                    term.definition = _quoted(value)[0]
                except ValueError:
                    raise InputError("malformed def", file=path, line=lineno, field="def") from None
            elif tag == "synonym":
                try:
                    text, rest = _quoted(value)
                except ValueError:
                    raise InputError("malformed synonym", file=path, line=lineno, field="synonym") from None
                scope = rest.split(" ", 1)[0] if rest else "RELATED"
                term.synonyms.append((text, scope))
            elif tag == "xref":
                term.xrefs.append(value.split(" ", 1)[0])
            elif tag == "alt_id":
                term.alt_ids.append(value)
            elif tag == "is_a":
                target = _strip_comment(value)
                term.is_a.append(target)
                is_a_lines.append((term.id, target, lineno))
            elif tag == "is_obsolete":
                term.obsolete = value == "true"
            elif tag == "replaced_by":
                term.replaced_by.append(value)
            elif tag == "consider":
                term.consider.append(value)
    if term is not None:
        _finish(term, terms, path)
    if "format-version" not in header:
        raise InputError("missing 'format-version' header", file=path, line=1)
    for child, target, lineno in is_a_lines:
        if target not in terms:
            raise InputError(
                f"is_a target {target} of {child} is not defined in the file (truncated?)",
                file=path, line=lineno, field="is_a",
            )
    return OboOntology(header=header, terms=terms)


def _finish(term: OboTerm, terms: dict[str, OboTerm], path: Path) -> None:
    if not term.id:
        raise InputError("[Term] stanza without an id (truncated?)", file=path, line=term.line, field="id")
    if not term.name:
        raise InputError(f"term {term.id} has no name (truncated?)", file=path, line=term.line, field="name")
    if term.id in terms:
        raise InputError(f"duplicate term id {term.id}", file=path, line=term.line, field="id")
    terms[term.id] = term
