"""Reading a folder of Orphadata products into one :class:`OrphadataRelease` (see
:mod:`kg.sources.orphadata`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from kg.sources.orphadata.products import (
    GENE_COLUMNS,
    INHERITANCE_COLUMNS,
    ONSET_COLUMNS,
    PHENOTYPE_COLUMNS,
    PREVALENCE_COLUMNS,
    SYNONYM_COLUMNS,
    XREF_COLUMNS,
    Product1,
    Product4,
    Product6,
    Product9Ages,
    Product9Prev,
    _Table,
    parse_product1,
    parse_product4,
    parse_product6,
    parse_product9_ages,
    parse_product9_prev,
)
from kg.sources.orphadata.reader import ReleaseInfo
from shared.errors import InputError

#: Product name → the file name Orphadata publishes it under.
PRODUCT_FILES: dict[str, str] = {
    "product1": "en_product1.xml",
    "product4": "en_product4.xml",
    "product6": "en_product6.xml",
    "product9_prev": "en_product9_prev.xml",
    "product9_ages": "en_product9_ages.xml",
}


@dataclass(frozen=True, slots=True)
class OrphadataRelease:
    """The products found in one directory; a product's tables are empty when it is absent."""

    directory: Path
    releases: dict[str, ReleaseInfo]  # product name ("product1", ...) → its file's release
    disorders: pd.DataFrame  # DISORDER_COLUMNS, one row per code: product1's, then codes only others name
    synonyms: pd.DataFrame
    xrefs: pd.DataFrame
    phenotypes: pd.DataFrame
    genes: pd.DataFrame
    prevalences: pd.DataFrame
    onsets: pd.DataFrame
    inheritance: pd.DataFrame
    row_counts: dict[str, dict[str, int]]  # product name → table name → rows (present products)


def read_orphadata(directory: str | Path) -> OrphadataRelease:
    """Parse every Orphadata product present in ``directory`` (see :data:`PRODUCT_FILES`).

    Parameters
    ----------
    directory
        Folder holding any subset of ``en_product1.xml``, ``en_product4.xml``,
        ``en_product6.xml``, ``en_product9_prev.xml`` and ``en_product9_ages.xml``.

    Returns
    -------
    OrphadataRelease
        The tables of the products found (empty tables with the documented columns for the
        others), each file's :class:`ReleaseInfo` and the rows per product and table.

    Raises
    ------
    InputError
        ``directory`` is not a folder or holds none of the five files, or a file is bad
        (see the ``parse_product*`` functions).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("not a directory", file=directory)
    parsers: dict[str, Callable[[Path], Product1 | Product4 | Product6 | Product9Prev | Product9Ages]] = {
        "product1": parse_product1, "product4": parse_product4, "product6": parse_product6,
        "product9_prev": parse_product9_prev, "product9_ages": parse_product9_ages,
    }
    parsed = {name: parsers[name](directory / file) for name, file in PRODUCT_FILES.items()
              if (directory / file).is_file()}
    if not parsed:
        raise InputError(f"no Orphadata product here; expected any of {', '.join(PRODUCT_FILES.values())}",
                         file=directory)

    empty = {
        "synonyms": SYNONYM_COLUMNS, "xrefs": XREF_COLUMNS, "phenotypes": PHENOTYPE_COLUMNS,
        "genes": GENE_COLUMNS, "prevalences": PREVALENCE_COLUMNS, "onsets": ONSET_COLUMNS,
        "inheritance": INHERITANCE_COLUMNS,
    }
    tables = {name: _Table(cols).frame() for name, cols in empty.items()}
    row_counts: dict[str, dict[str, int]] = {}
    disorders = []
    for name, product in parsed.items():
        frames = {f.name: getattr(product, f.name) for f in fields(product) if f.name != "release"}
        row_counts[name] = {f: len(frame) for f, frame in frames.items()}
        disorders.append(frames.pop("disorders"))
        tables.update(frames)
    # product1 first: its names and types win for codes other products also name.
    all_disorders = pd.concat(disorders, ignore_index=True).drop_duplicates("orpha_code", ignore_index=True)
    return OrphadataRelease(
        directory=directory, releases={n: p.release for n, p in parsed.items()},
        disorders=all_disorders, row_counts=row_counts, **tables,
    )
