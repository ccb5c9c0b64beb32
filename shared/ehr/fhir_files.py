"""The files of a FHIR R4 Bulk Data export: which NDJSON file holds which resource type, and
their lines (plain or gzip, streamed). :mod:`shared.ehr.fhir` reads them.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from shared.errors import InputError

MEDICATION_EVENTS = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")
#: reading order: persons, then medication codes, exposures, and what refers to them
RESOURCE_TYPES = ("Patient", "Medication", *MEDICATION_EVENTS, "Condition", "Observation", "AdverseEvent")
_FILE = re.compile(r"(?:\d+[._-])?([A-Za-z]+)(?:[._-]\d+)?\.ndjson(\.gz)?")


def is_fhir_file(path: Path) -> bool:
    """Whether a file name is NDJSON (``.ndjson`` or ``.ndjson.gz``)."""
    return path.name.endswith((".ndjson", ".ndjson.gz"))


def find_fhir_files(folder: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """The folder's NDJSON files per resource type read here, and the names of the others.

    Parameters
    ----------
    folder
        The export folder. A file is ``<Type>.ndjson`` or ``<Type>.ndjson.gz``, possibly
        numbered either side (``Patient.000.ndjson``, ``Patient_1.ndjson``, ``1.Patient.ndjson``);
        the type is matched case-insensitively against :data:`RESOURCE_TYPES`.

    Returns
    -------
    (dict of type → paths, list of names)
        Each type's files in natural order (``2`` before ``10``), and the NDJSON files of
        other types, which are not read.
    """
    types = {t.lower(): t for t in RESOURCE_TYPES}
    found: dict[str, list[Path]] = {}
    ignored = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and is_fhir_file(p)):
        m = _FILE.fullmatch(path.name)
        rtype = types.get(m.group(1).lower()) if m else None
        if rtype is None:
            ignored.append(path.name)
        else:
            found.setdefault(rtype, []).append(path)
    natural = lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]  # noqa: E731
    return {t: sorted(paths, key=natural) for t, paths in found.items()}, ignored


def ndjson_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of a plain or gzip NDJSON file, streamed.

    Parameters
    ----------
    path
        The file; gzip when its name ends in ``.gz``.

    Yields
    ------
    (int, bytes)
        1-based line number and the raw line (empty lines included).

    Raises
    ------
    InputError
        A broken gzip stream, naming the line that could not be read.
    """
    number = 0  # lines read so far: the error names the one that could not be
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as fh:
            for raw in fh:
                number += 1
                yield number, raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(f"not a readable gzip file ({type(exc).__name__}: {exc})", file=path,
                         line=number + 1) from None
