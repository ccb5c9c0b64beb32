"""Streaming the ``JDBOR`` frame that every Orphadata XML product shares: expat driven
directly (for line numbers), one ``Disorder`` tree at a time, the release facts of the root,
and helpers to read the labelled-term pattern inside a ``Disorder`` (see
:mod:`kg.sources.orphadata`).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

from shared.errors import InputError

_CHUNK = 1 << 16  # bytes fed to expat at a time


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    """What the ``JDBOR`` root and its ``Availability`` block say about one file."""

    file: str  # file name, e.g. "en_product1.xml"
    date: str  # JDBOR date, e.g. "2023-06-22 04:58:24"
    version: str  # JDBOR version, e.g. "1.3.26 / 4.1.7 [2022-12-15] (orientdb version)"
    copyright: str
    dbserver: str
    licence: str  # Licence/ShortIdentifier, e.g. "CC-BY-4.0"; "" in releases without one
    encoding: str  # from the XML declaration; "" when none is declared (then UTF-8)
    declared_disorders: int | None  # the count attribute of the top-level list
    disorders_read: int  # Disorder elements actually read


# --------------------------------------------------------------------------- streaming


@dataclass(slots=True)
class _Record:
    """One finished ``Disorder`` tree and the line each of its elements starts on."""

    elem: ET.Element
    lines: dict[ET.Element, int]

    def line(self, elem: ET.Element | None = None) -> int:
        """Line of ``elem`` (default: the ``Disorder`` itself)."""
        return self.lines[self.elem if elem is None else elem]


class _JdborReader:
    """Drive expat over one file; yield each outermost ``Disorder`` as a small tree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root: dict[str, str] = {}
        self.encoding = ""
        self.licence = ""
        self.declared: int | None = None
        self.count = 0
        self.first_line: int | None = None
        self._depth = 0
        self._builder: ET.TreeBuilder | None = None
        self._lines: dict[ET.Element, int] = {}
        self._record_depth = 0
        self._capture: list[str] | None = None
        self._done: list[_Record] = []
        self._parser = expat.ParserCreate()  # no encoding argument: the declaration decides
        self._parser.buffer_text = True
        self._parser.XmlDeclHandler = self._xml_decl
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        # Text goes straight to the current record's TreeBuilder (or to the licence capture)
        # and is not reported at all elsewhere: most calls then never enter Python.
        self._parser.CharacterDataHandler = None

    def records(self) -> Iterator[_Record]:
        """Yield the ``Disorder`` records in file order.

        Raises
        ------
        InputError
            Missing file, malformed XML (with expat's line and column) or a root that is
            not ``JDBOR``.
        """
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            raise InputError("file not found", file=self.path) from None
        except OSError as exc:
            raise InputError(f"cannot read the file ({exc.strerror})", file=self.path) from None
        with fh:
            while True:
                chunk = fh.read(_CHUNK)
                self._feed(chunk, final=not chunk)
                yield from self._done
                self._done.clear()
                if not chunk:
                    break

    def release(self) -> ReleaseInfo:
        """The release facts (complete once :meth:`records` is exhausted)."""
        get = self.root.get
        return ReleaseInfo(
            file=self.path.name, date=get("date", ""), version=get("version", ""),
            copyright=get("copyright", ""), dbserver=get("dbserver", ""), licence=self.licence,
            encoding=self.encoding, declared_disorders=self.declared, disorders_read=self.count,
        )

    def _feed(self, chunk: bytes, *, final: bool) -> None:
        try:
            self._parser.Parse(chunk, final)
        except expat.ExpatError as exc:
            raise InputError(
                f"malformed XML: {expat.ErrorString(exc.code)} (column {exc.offset + 1})",
                file=self.path, line=exc.lineno,
            ) from None

    def _xml_decl(self, version: str, encoding: str | None, standalone: int) -> None:
        self.encoding = encoding or ""

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if self._builder is not None:
            self._lines[self._builder.start(tag, attrs)] = self._parser.CurrentLineNumber
        elif tag == "Disorder" and self._depth > 1:
            self._builder, self._lines, self._record_depth = ET.TreeBuilder(), {}, self._depth
            self._lines[self._builder.start(tag, attrs)] = self._parser.CurrentLineNumber
            self._parser.CharacterDataHandler = self._builder.data
        elif self._depth == 1:
            if tag != "JDBOR":
                raise InputError(
                    f"root element is <{tag}>, expected <JDBOR> (not an Orphadata XML product)",
                    file=self.path, line=self._parser.CurrentLineNumber,
                )
            self.root = dict(attrs)
        elif self._depth == 2 and tag.endswith("List") and "count" in attrs:
            self.declared = int(attrs["count"]) if attrs["count"].isdigit() else None
        elif tag == "ShortIdentifier":
            self._capture = []
            self._parser.CharacterDataHandler = self._capture.append

    def _end(self, tag: str) -> None:
        if self._builder is not None:
            self._builder.end(tag)
            if self._depth == self._record_depth:
                elem = self._builder.close()
                self._done.append(_Record(elem, self._lines))
                self.count += 1
                if self.first_line is None:
                    self.first_line = self._lines[elem]
                self._builder = None
                self._parser.CharacterDataHandler = None
        elif self._capture is not None:
            self._parser.CharacterDataHandler = None
            self.licence, self._capture = "".join(self._capture).strip(), None
        self._depth -= 1


# --------------------------------------------------------------------------- element helpers


def _text(elem: ET.Element | None) -> str:
    """Stripped text of ``elem``; "" when it is missing or empty."""
    return "" if elem is None or elem.text is None else elem.text.strip()


def _grandchild(parent: ET.Element, tag: str, sub: str) -> ET.Element | None:
    """``parent/tag/sub`` or None."""
    # Plain-tag find() runs in C; a path such as "tag/sub" would go through ElementPath.
    child = parent.find(tag)
    return None if child is None else child.find(sub)


def _name(parent: ET.Element, tag: str) -> str:
    """Text of ``parent/tag/Name`` (the labelled-term pattern Orphadata uses everywhere)."""
    return sys.intern(_text(_grandchild(parent, tag, "Name")))


def _items(parent: ET.Element, list_tag: str, item_tag: str) -> list[ET.Element]:
    """The ``item_tag`` children of ``parent/list_tag``."""
    child = parent.find(list_tag)
    return [] if child is None else child.findall(item_tag)


def _orpha_code(rec: _Record, path: Path) -> str:
    """``ORPHA:n`` from ``OrphaCode`` (or the older ``OrphaNumber``)."""
    code = rec.elem.find("OrphaCode")
    if code is None:
        code = rec.elem.find("OrphaNumber")
    if code is None:
        raise InputError(
            "<Disorder> has no <OrphaCode> (or, before 2020, <OrphaNumber>)",
            file=path, line=rec.line(), field="OrphaCode",
        )
    text = _text(code)
    if not (text.isascii() and text.isdigit()):
        raise InputError(
            f"ORPHAcode {text!r} is not a number", file=path, line=rec.line(code), field=code.tag
        )
    return f"ORPHA:{int(text)}"
