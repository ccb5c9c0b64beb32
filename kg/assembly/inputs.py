"""Read the external sources a build is given: which files they are (for hashes and the
manifest), where the FAERS quarters are, and each source parsed into :class:`SourceTables`.

Parsing is left to the source parsers in :mod:`kg.sources`; this module only decides what
to hand them and in which order. Orphadata, GARD and PrimeKG are parsed before their tables
are built, because Orphadata's and GARD's genes are matched by symbol to the NCBI Gene
nodes of HPO and PrimeKG (:func:`kg.assembly.crosswalk.gene_ids`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kg.assembly.crosswalk import gene_symbol_index
from kg.assembly.source_tables import SourceTables, faers_tables, gard_tables, orphadata_tables, primekg_tables
from kg.sources.faers import find_quarter_files, load_pt_map, normalise_pt, read_faers
from kg.sources.gard import read_gard
from kg.sources.obo import OboOntology
from kg.sources.orphadata import PRODUCT_FILES, read_orphadata
from kg.sources.primekg import PrimeKG, parse_kg_csv, read_primekg
from kg.store import KnowledgeGraph
from shared.errors import InputError
from shared.signing.keys import sha256_file

PUBLISHERS: dict[str, str] = {
    "orphadata": "Orphanet (Orphadata), CC BY 4.0",
    "primekg": "Chandak, Huang & Zitnik, PrimeKG (Harvard Dataverse doi:10.7910/DVN/IXA7BM)",
    "gard": "NIH NCATS Genetic and Rare Diseases Information Center",
    "faers": "US FDA Adverse Event Reporting System",
    "faers-map": "mapping table given to the build",
}
_DEMO = re.compile(r"^DEMO\d{2}Q[1-4](_NEW)?\.TXT$", re.I)


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file a source reads, known before parsing (hashed while the build runs)."""

    source: str  # "orphadata", "primekg", "faers" (GARD's files are known after parsing)
    path: Path
    name: str  # the manifest's "file": the file name, prefixed by the quarter for FAERS
    release: str  # what the file itself says, where it says nothing more precise


def faers_quarters(paths: Sequence[Path]) -> list[Path]:
    """Quarter folders: each path that holds a DEMO table (directly or in ``ascii/``), or
    else the sorted subfolders of it that do.

    Raises
    ------
    InputError
        A path holds no quarter at all.
    """
    quarters: list[Path] = []
    for path in paths:
        if _is_quarter(path):
            quarters.append(path)
            continue
        found = sorted(p for p in path.iterdir() if p.is_dir() and _is_quarter(p))
        if not found:
            raise InputError("no FAERS quarter here (a DEMOyyQq.txt table, directly or in ascii/, "
                             "in this folder or its subfolders)", file=path)
        quarters += found
    return quarters


def _is_quarter(folder: Path) -> bool:
    places = [folder, *(p for p in folder.iterdir() if p.is_dir() and p.name.lower() == "ascii")]
    return any(_DEMO.match(f.name) for place in places for f in place.iterdir() if f.is_file())


def external_files(sources, quarters: list[Path]) -> list[SourceFile]:
    """The files of Orphadata, PrimeKG and FAERS that the build will read."""
    files: list[SourceFile] = []
    if sources.orphadata is not None:
        files += [SourceFile("orphadata", sources.orphadata / f, f, "") for f in PRODUCT_FILES.values()
                  if (sources.orphadata / f).is_file()]
    if sources.primekg is not None:
        files += [SourceFile("primekg", p, p.name, "not stated in the file") for p in _primekg_files(sources.primekg)]
    for q in quarters:
        found = find_quarter_files(q)
        read = [found.tables[k] for k in ("DEMO", "DRUG", "REAC")] + list(found.deleted)
        files += [SourceFile("faers", p, f"{q.name}/{p.name}", q.name) for p in read]
    for path in (sources.faers_drug_map, sources.faers_pt_map):
        if path is not None and quarters:
            files.append(SourceFile("faers-map", path, path.name, "user mapping table"))
    return files


def _primekg_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / "kg.csv").is_file():
        return [path / "kg.csv"]
    return [p for p in (path / "nodes.tab", path / "edges.csv") if p.is_file()]


def external_manifest_entries(files: list[SourceFile], hashes: list[str],
                              parts: list[SourceTables]) -> dict[str, list[dict]]:
    """Manifest ``sources`` entries per source (GARD's files are hashed here, after parsing)."""
    releases = {p.name: p.extra.get("releases", {}) for p in parts}
    by_file = {v.get("file", ""): f"{v['date']} ({v['version']})" for r in releases.values() for v in r.values()}
    out: dict[str, list[dict]] = {}
    for f, digest in zip(files, hashes):
        key = "faers" if f.source == "faers-map" else f.source
        out.setdefault(key, []).append({
            "file": f.name, "sha256": digest, "bytes": f.path.stat().st_size,
            "release": by_file.get(f.name, f.release), "publisher": PUBLISHERS[f.source],
        })
    for part in parts:
        for path in part.extra.get("files", {}).values():
            p = Path(path)
            out.setdefault(part.name, []).append({
                "file": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size,
                "release": "not stated in the file", "publisher": PUBLISHERS[part.name],
            })
    return out


def read_external(sources, quarters: list[Path], obo: OboOntology, base: KnowledgeGraph,
                  step: Callable[[str], None]) -> list[SourceTables]:
    """Parse every external source given, in precedence order (Orphadata, GARD, PrimeKG, FAERS).

    Raises
    ------
    InputError
        From the source parsers: the file, line and field of the first bad row.
    """
    orpha = gard = primekg = None
    if sources.orphadata is not None:
        step("parsing Orphadata XML products")
        orpha = read_orphadata(sources.orphadata)
    if sources.gard is not None:
        step("parsing GARD tables")
        gard = read_gard(sources.gard)
    if sources.primekg is not None:
        step(f"parsing PrimeKG {sources.primekg.name}")
        primekg = _read_primekg(sources.primekg)
    genes = [base.nodes] + ([primekg.nodes] if primekg is not None else [])
    symbols = gene_symbol_index(pd.concat([g[g["type"] == "gene"][["id", "name"]] for g in genes]))
    parts = []
    if orpha is not None:
        parts.append(orphadata_tables(orpha, symbols))
    if gard is not None:
        parts.append(gard_tables(gard, symbols))
    if primekg is not None:
        step("PrimeKG edges to project relations")
        parts.append(primekg_tables(primekg))
    if quarters:
        step(f"reading {len(quarters)} FAERS quarter(s), computing signals")
        pt_map = faers_pt_map(obo, base, sources.faers_pt_map)
        result = read_faers(quarters, drug_map=sources.faers_drug_map, pt_to_hpo=pt_map)
        parts.append(faers_tables(result, sources.faers_drug_map, [q.name for q in quarters]))
    return parts


def _read_primekg(path: Path) -> PrimeKG:
    return parse_kg_csv(path) if path.is_file() else read_primekg(path)


def faers_pt_map(obo: OboOntology, base: KnowledgeGraph, table: Path | None) -> dict[str, str]:
    """FAERS PT text → HPO term: hp.obo labels, then the given table on top.

    A PT whose text equals (case-folded, whitespace collapsed) the name or an EXACT synonym
    of exactly one phenotype term is that term: FAERS extracts carry PT text, not MedDRA
    codes, so hp.obo's MedDRA xrefs cannot be joined, but its labels can. A text two terms
    share is left out. The table (``pt``, ``hpo_id``) wins where it disagrees.
    """
    phenotypes = set(base.nodes.loc[base.nodes["type"] == "phenotype", "id"])
    pairs = [(normalise_pt(t.name), t.id) for t in obo.terms.values() if t.id in phenotypes and not t.obsolete]
    pairs += [(normalise_pt(text), t.id) for t in obo.terms.values() if t.id in phenotypes and not t.obsolete
              for text, scope in t.synonyms if scope == "EXACT"]
    labels = pd.DataFrame(pairs, columns=["pt", "hpo_id"]).drop_duplicates()
    labels = labels[~labels["pt"].duplicated(keep=False)]
    return {**dict(zip(labels["pt"], labels["hpo_id"])), **load_pt_map(table)}
