"""Map a site's local codes (ICD-10, SNOMED CT, RxNorm, ATC, ...) to the graph's codes
through the study bundle's code map, and count what was mapped, what was not and why.

The bundle's ``codemap.parquet`` (made by ``kg.codemap``) has one row per (system, code,
target) with the relation of the local code to the target: ``exact``, ``narrower`` (the
local code is more specific: every patient with it has the target), ``broader`` (the
local code covers the target and more) or ``related``. A site accepts relations up to a
level (:data:`ACCEPT`): by default ``exact`` and ``narrower``, because a broader code
(ICD-10 E75.2 "Other sphingolipidosis" for Gaucher disease) would give patients a
disease they may not have.

Rules for one local code
------------------------
1. A code already in a graph namespace (ORPHA, HP, DRUGBANK, LOINC, MEDDRA) is used as is;
   in FHIR the first coding in a graph system wins over every other coding.
2. The site's own mapping table, when given, replaces the bundle's rows for the codes it
   lists (the site knows its local codes best); its use is counted, and it never leaves
   the site.
3. Among the accepted rows of the code, the strongest relation wins (exact over narrower
   over broader over related). One target at that level: mapped. Several: ambiguous —
   none is picked (a guess would put patients in the wrong disease); the code is counted
   and listed with its candidates.
4. An ICD-10 / ICD-10-CM code with no row falls back to its parent code (``Q87.40`` →
   ``Q87.4``, ``E84.11`` → ``E84.1`` → ``E84``) when the parent maps ``exact`` or
   ``narrower``: the child is then ``narrower`` than the parent's closest targets. An ICD-10-CM code is
   also looked up as WHO ICD-10 (the classifications share their codes up to four
   characters).
5. Codes are normalised first: upper case, ICD dagger/asterisk marks dropped, a missing
   ICD dot restored (``E752`` → ``E75.2``); a drug name (system ``NAME``) is lower-cased
   (``str.casefold``) with its whitespace collapsed (``" Velaglucerase  Alfa"`` →
   ``"velaglucerase alfa"``).
6. Drug names: a drug written as free text (an OMOP ``drug_source_value`` without a prefix;
   a FHIR medication with no coding in a known system: its ``text``, then each coding's
   ``display``) is looked up as system ``NAME``. The map holds generic names only; a brand
   or a strength (``Cerezyme 400 U``) is unmapped, and counted as such.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from shared.ehr.settings import ACCEPT, DEFAULT_ACCEPT, RELATIONS, Accept
from shared.errors import InputError

NAME = "NAME"  # drug names (generic, normalised by :func:`normalise_code`) → DrugBank
SYSTEMS = ("ICD10", "ICD10CM", "ICD11", "SNOMEDCT", "UMLS", "RXNORM", "ATC", NAME)
#: graph namespaces: codes in them are used as they are
GRAPH_NAMESPACES = frozenset({"ORPHA", "HP", "DRUGBANK", "LOINC", "MEDDRA"})
#: FHIR code system URI (normalised: http, no trailing slash) → system
SYSTEM_URLS: dict[str, str] = {
    "http://hl7.org/fhir/sid/icd-10": "ICD10", "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://id.who.int/icd/release/11/mms": "ICD11", "http://id.who.int/icd11/mms": "ICD11",
    "http://snomed.info/sct": "SNOMEDCT", "http://www.nlm.nih.gov/research/umls": "UMLS",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RXNORM", "http://www.whocc.no/atc": "ATC",
}
#: OMOP source-value prefix (upper case, letters and digits only) → system
PREFIXES: dict[str, str] = {
    "ICD10": "ICD10", "ICD10WHO": "ICD10", "ICD10CM": "ICD10CM", "ICD11": "ICD11", "ICD11MMS": "ICD11",
    "SNOMEDCT": "SNOMEDCT", "SNOMED": "SNOMEDCT", "SNOMEDCTUS": "SNOMEDCT", "SCT": "SNOMEDCT", "UMLS": "UMLS",
    "RXNORM": "RXNORM", "ATC": "ATC", "NAME": NAME, "DRUGNAME": NAME,
}
#: what the graph target of each system looks like
TARGETS = {"ICD10": "ORPHA", "ICD10CM": "ORPHA", "ICD11": "ORPHA", "SNOMEDCT": "HP", "UMLS": "HP",
           "RXNORM": "DRUGBANK", "ATC": "DRUGBANK", NAME: "DRUGBANK"}
TABLE_COLUMNS = ("system", "code", "relation", "target", "target_name", "citation")
CODEMAP_COLUMNS = ("system", "code", "target", "relation", "source")
TOP_CODES = 10  # unmapped codes listed per system
_TARGET = {"ORPHA": re.compile(r"ORPHA:\d+"), "HP": re.compile(r"HP:\d{7}"),
           "DRUGBANK": re.compile(r"DRUGBANK:DB\d{5}")}
_CODE = {"ICD10": re.compile(r"[A-Z]\d{2}(\.\d{1,2})?"), "ICD10CM": re.compile(r"[A-Z]\d{2}(\.[0-9A-Z]{1,4})?"),
         "ICD11": re.compile(r"[0-9A-Z]{4}(\.[0-9A-Z]{1,4})?"), "SNOMEDCT": re.compile(r"\d{6,18}"),
         "UMLS": re.compile(r"C\d{7}"), "RXNORM": re.compile(r"\d{1,8}"), "ATC": re.compile(r"[A-Z]\d{2}[A-Z]{2}\d{2}"),
         NAME: re.compile(r"[^\s:](?:[^\t:]{0,118}[^\s:])?")}  # one line, no colon (it would read as a prefix)
_ICD_NO_DOT = re.compile(r"([A-Z]\d{2})([0-9A-Z]{1,4})")


def read_code_table(path: str | Path) -> pd.DataFrame:
    """A mapping table (a coordinator's curated one, or a site's own): TSV with
    :data:`TABLE_COLUMNS`, one header row, ``#`` comment lines allowed.

    Returns
    -------
    DataFrame with :data:`CODEMAP_COLUMNS` (``source`` is the file name).

    Raises
    ------
    InputError
        Missing file or column, unknown system or relation, a malformed code or target,
        an empty citation; the message names file, line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("code mapping table not found", file=path)
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        numbered = ((n, line) for n, line in enumerate(fh, start=1) if line.strip() and not line.startswith("#"))
        lines = list(numbered)
    reader = csv.DictReader((line for _, line in lines), delimiter="\t")
    missing = [c for c in TABLE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"column missing (expected {', '.join(TABLE_COLUMNS)})", file=path,
                         line=lines[0][0] if lines else 1, field=missing[0])
    for (number, _), row in zip(lines[1:], reader):
        system = (row["system"] or "").strip()
        code = normalise_code(NAME, row["code"] or "") if system == NAME else (row["code"] or "").strip()
        relation, target = (row["relation"] or "").strip(), (row["target"] or "").strip()
        checks = (("system", system in SYSTEMS, f"{system!r} is not one of {', '.join(SYSTEMS)}"),
                  ("code", system in _CODE and bool(_CODE[system].fullmatch(code)), f"{code!r} is not a {system} code"),
                  ("relation", relation in RELATIONS, f"{relation!r} is not one of {', '.join(RELATIONS)}"),
                  ("target", system in TARGETS and bool(_TARGET[TARGETS[system]].fullmatch(target)),
                   f"{target!r} is not a {TARGETS.get(system, 'graph')} code"),
                  ("citation", bool((row["citation"] or "").strip()), "empty: every row needs its source"))
        for field, ok, message in checks:
            if not ok:
                raise InputError(message, file=path, line=number, field=field)
        rows.append((system, code, target, relation, path.name))
    return pd.DataFrame(rows, columns=list(CODEMAP_COLUMNS))


def normalise_code(system: str, code: str) -> str:
    """Rule 5: upper case; for ICD, marks dropped and the dot restored; a drug name lower case, single-spaced."""
    if system == NAME:
        return " ".join(code.split()).casefold()
    code = code.strip().upper()
    if system in ("ICD10", "ICD10CM", "ICD11"):
        code = code.rstrip("*+†")
        if system != "ICD11" and "." not in code and (m := _ICD_NO_DOT.fullmatch(code)):
            code = f"{m.group(1)}.{m.group(2)}"
    return code


def split_source_value(value: str) -> tuple[str, str]:
    """(system or the raw prefix, code) of an OMOP source value ``PREFIX:code``; ``("", value)`` without one."""
    prefix, sep, code = value.partition(":")
    if not sep:
        return "", value
    key = re.sub(r"[^A-Z0-9]", "", prefix.upper())
    return PREFIXES.get(key, prefix), code


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one local code became."""

    system: str
    code: str
    status: Literal["mapped", "unmapped", "ambiguous"]
    target: str | None = None
    relation: str | None = None
    candidates: tuple[str, ...] = ()
    local: bool = False  # mapped by the site's own table


class CodeMapper:
    """Resolves local codes with the bundle's code map (and a site table) and counts the outcomes.

    Parameters
    ----------
    codemap
        The bundle's table (:data:`CODEMAP_COLUMNS`).
    accept
        The weakest relation used (``"narrower"``: exact and narrower).
    site_table
        The site's own mapping file (:func:`read_code_table` format), or None.
    """

    def __init__(self, codemap: pd.DataFrame, *, accept: Accept = DEFAULT_ACCEPT,
                 site_table: str | Path | None = None) -> None:
        if accept not in ACCEPT:
            raise ValueError(f"accept must be one of {', '.join(ACCEPT)}, got {accept!r}")
        self.accept = accept
        self.accepted = RELATIONS[: RELATIONS.index(accept) + 1]
        self.rows = self._index(codemap)
        self.site_file = None if site_table is None else str(site_table)
        self.site_rows = self._index(read_code_table(site_table)) if site_table is not None else {}
        self._cache: dict[tuple[str, str], Resolution] = {}
        self.native: Counter = Counter()  # namespace → rows
        self.mapped: dict[str, Counter] = {}  # system → relation → rows
        self.mapped_local = 0
        self.unmapped: dict[str, Counter] = {}  # system → code → rows
        self.ambiguous: dict[str, Counter] = {}
        self.candidates: dict[tuple[str, str], tuple[str, ...]] = {}
        self.first_seen: dict[tuple[str, str], tuple[str, int, str]] = {}  # (system, code) → (file, line, field)

    @staticmethod
    def _index(table: pd.DataFrame) -> dict[tuple[str, str], list[tuple[str, str]]]:
        out: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for system, code, target, relation in zip(table["system"], table["code"], table["target"], table["relation"]):
            out.setdefault((str(system), normalise_code(str(system), str(code))), []).append((str(target), str(relation)))
        return out

    # --- lookup ---------------------------------------------------------------------
    def resolve(self, system: str, code: str) -> Resolution:
        """Rules 2–5 for one code of a known system (a cached, pure lookup: nothing counted)."""
        code = normalise_code(system, code)
        key = (system, code)
        if key not in self._cache:
            self._cache[key] = self._resolve(system, code)
        return self._cache[key]

    def _resolve(self, system: str, code: str) -> Resolution:
        if (system, code) in self.site_rows:
            return self._choose(system, code, self.site_rows[(system, code)], local=True)
        rows = self.rows.get((system, code))
        if rows is None and system == "ICD10CM":
            rows = self.rows.get(("ICD10", code))
        if rows is None and system in ("ICD10", "ICD10CM"):
            rows = self._parent_rows(system, code)
        return self._choose(system, code, rows or [], local=False)

    def rows_of(self, system: str, code: str) -> list[tuple[str, str]]:
        """Every (target, relation) row rules 2–4 look at for a code, at any relation (for
        saying which codes came close to a target; :meth:`resolve` decides)."""
        code = normalise_code(system, code)
        if (system, code) in self.site_rows:
            return list(self.site_rows[(system, code)])
        rows = self.rows.get((system, code))
        if rows is None and system == "ICD10CM":
            rows = self.rows.get(("ICD10", code))
        if rows is None and system in ("ICD10", "ICD10CM"):
            rows = self._parent_rows(system, code)
        return list(rows or [])

    def _parent_rows(self, system: str, code: str) -> list[tuple[str, str]] | None:
        parent = code
        while len(parent) > 3:
            parent = parent[:-1].rstrip(".")
            for sys in (system, "ICD10") if system == "ICD10CM" else (system,):
                rows = [(t, r) for t, r in self.rows.get((sys, parent), []) if r in ("exact", "narrower")]
                if rows:  # the parent's closest targets: the child is narrower than each of them
                    best = min(RELATIONS.index(r) for _, r in rows)
                    return [(t, "narrower") for t, r in rows if RELATIONS.index(r) == best]
        return None

    def _choose(self, system: str, code: str, rows: list[tuple[str, str]], *, local: bool) -> Resolution:
        usable = [(t, r) for t, r in rows if r in self.accepted]
        if not usable:
            return Resolution(system, code, "unmapped")
        best = min(RELATIONS.index(r) for _, r in usable)
        targets = tuple(sorted({t for t, r in usable if RELATIONS.index(r) == best}))
        if len(targets) > 1:
            return Resolution(system, code, "ambiguous", candidates=targets)
        return Resolution(system, code, "mapped", targets[0], RELATIONS[best], targets, local)

    def resolve_concept(self, codings: Iterable[tuple[str, str]]) -> Resolution | None:
        """The best of a FHIR concept's codings given as (system URL, code); None without codings.

        A mapped coding with the strongest relation wins (ties: the first); else the first
        ambiguous one; else the first coding, unmapped (unknown systems keep their URL).
        """
        results = []
        for url, code in codings:
            system = SYSTEM_URLS.get(url)
            results.append(self.resolve(system, code) if system else Resolution(url or "(no system)", code, "unmapped"))
        if not results:
            return None
        mapped = [r for r in results if r.status == "mapped"]
        if mapped:
            return min(mapped, key=lambda r: RELATIONS.index(r.relation or "related"))
        return next((r for r in results if r.status == "ambiguous"), results[0])

    def resolve_names(self, names: Iterable[str]) -> Resolution | None:
        """Rule 6 for a drug written as text: the first name that maps; else the first
        ambiguous one; else the first, unmapped. None without a (non-blank) name."""
        results = [self.resolve(NAME, n) for n in names if normalise_code(NAME, n)]
        if not results:
            return None
        return next((r for r in results if r.status == "mapped"),
                    next((r for r in results if r.status == "ambiguous"), results[0]))

    # --- counting -------------------------------------------------------------------
    def count_native(self, code: str, n: int = 1) -> None:
        self.native[code.split(":", 1)[0]] += n

    def record(self, res: Resolution, *, file: str, line: int, field: str, n: int = 1) -> None:
        """Count ``n`` rows with this outcome; remember where an unmapped or ambiguous code was first seen."""
        if res.status == "mapped":
            self.mapped.setdefault(res.system, Counter())[res.relation] += n
            self.mapped_local += n if res.local else 0
            return
        bucket = self.unmapped if res.status == "unmapped" else self.ambiguous
        bucket.setdefault(res.system, Counter())[res.code] += n
        self.first_seen.setdefault((res.system, res.code), (file, line, field))
        if res.status == "ambiguous":
            self.candidates[(res.system, res.code)] = res.candidates

    def map_source_values(self, codes: pd.Series, rows: np.ndarray, *, file: str, field: str,
                          names: bool = False) -> np.ndarray:
        """OMOP ``*_source_value`` CURIEs → graph CURIEs where they map; others unchanged.

        Parameters
        ----------
        codes
            Stripped source values (``ICD10:E75.2``, ``HP:0001166``, ...).
        rows
            The file row (CSV line or Parquet row) of each value, for the report.
        file, field
            Where the values come from, for the report.
        names
            Values without a prefix are drug names (rule 6: ``drug_source_value``); else
            they are counted as ``(no prefix)``, unmapped.
        """
        out = codes.to_numpy(dtype=object).copy()
        for value, positions in pd.Series(np.arange(len(codes))).groupby(codes.to_numpy(), sort=True):
            system, code = split_source_value(str(value))
            idx = positions.to_numpy()
            if system.upper() in GRAPH_NAMESPACES:
                self.count_native(system.upper(), len(idx))
                continue
            if names and not system:
                system = NAME
            res = self.resolve(system, code) if system in SYSTEMS else \
                Resolution(system or "(no prefix)", code, "unmapped")
            self.record(res, file=file, line=int(rows[idx[0]]), field=field, n=len(idx))
            if res.status == "mapped":
                out[idx] = res.target
        return out

    def summary(self) -> dict:
        """JSON-ready counts: per system rows mapped (by relation), unmapped and ambiguous, and coverage."""
        systems = sorted(set(self.mapped) | set(self.unmapped) | set(self.ambiguous))
        coverage = {}
        for s in systems:
            mapped = dict(sorted(self.mapped.get(s, Counter()).items(), key=lambda kv: RELATIONS.index(kv[0])))
            unmapped, ambiguous = self.unmapped.get(s, Counter()), self.ambiguous.get(s, Counter())
            total = sum(mapped.values()) + sum(unmapped.values()) + sum(ambiguous.values())
            coverage[s] = {
                "rows": int(total), "mapped": {k: int(v) for k, v in mapped.items()},
                "unmapped": int(sum(unmapped.values())), "ambiguous": int(sum(ambiguous.values())),
                "coverage": round(sum(mapped.values()) / total, 4) if total else None,
                "top_unmapped": [self._where(s, c, n) for c, n in _by_count(unmapped)[:TOP_CODES]],
            }
        ambiguous = [{**self._where(s, c, n), "system": s, "candidates": list(self.candidates[(s, c)])}
                     for s in sorted(self.ambiguous) for c, n in _by_count(self.ambiguous[s])]
        return {"accept": list(self.accepted), "native": {k: int(v) for k, v in sorted(self.native.items())},
                "systems": coverage, "ambiguous": ambiguous,
                "site_table": None if self.site_file is None else
                {"file": Path(self.site_file).name, "codes": len(self.site_rows), "rows_mapped": int(self.mapped_local)}}

    def _where(self, system: str, code: str, n: int) -> dict:
        file, line, field = self.first_seen[(system, code)]
        return {"code": code, "rows": int(n), "file": Path(file).name, "line": int(line), "field": field}


def _by_count(counts: Counter) -> list[tuple[str, int]]:
    """Most frequent first, ties by code (the report is the same on every run)."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


__all__ = ["ACCEPT", "CODEMAP_COLUMNS", "CodeMapper", "DEFAULT_ACCEPT", "NAME", "RELATIONS", "Resolution", "SYSTEMS",
           "SYSTEM_URLS", "TABLE_COLUMNS", "normalise_code", "read_code_table", "split_source_value"]
