"""Mapping FAERS names to the graph's vocabulary: drug names (``drugname``, ``prod_ai``) to
DrugBank ids and MedDRA PT text to HPO ids, from the caller's tables (see
:mod:`kg.sources.faers`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from shared.errors import InputError

_DRUGBANK = re.compile(r"^(?:DRUGBANK:)?(DB\d{5})$")
_HPO_ID = re.compile(r"^HP:\d{7}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalise_drug_name(name: str) -> str:
    """Upper case, control characters to spaces, runs of whitespace to one space."""
    return " ".join(_CONTROL.sub(" ", name).split()).upper()


def normalise_pt(pt: str) -> str:
    """Case-folded, whitespace-collapsed PT text (the key of the HPO map and MEDDRA nodes)."""
    return " ".join(_CONTROL.sub(" ", pt).split()).casefold()


def _read_tsv(path: Path, columns: tuple[str, str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable tab-separated table ({exc})", file=path) from None
    for col in columns:
        if col not in table.columns:
            raise InputError(f"missing column {col!r}: expected a header {chr(9).join(columns)!r}",
                             file=path, line=1, field=col)
    return table


def load_drug_map(source: pd.DataFrame | str | Path) -> pd.DataFrame:
    """Normalised name → ``DRUGBANK:DBnnnnn`` (columns ``name``, ``drug``; a name may map to several).

    ``source`` is a table or a TSV with columns ``name`` and ``drugbank_id`` (``DB00419`` or
    ``DRUGBANK:DB00419``).

    Raises
    ------
    InputError
        Missing file or column, an empty name, or an id that is not a DrugBank accession.
    """
    path = None if isinstance(source, pd.DataFrame) else Path(source)
    table = source if path is None else _read_tsv(path, ("name", "drugbank_id"))
    for col in ("name", "drugbank_id"):
        if col not in table.columns:
            raise InputError(f"drug map has no column {col!r}", file=path, line=1, field=col)
    names = table["name"].astype(str).map(normalise_drug_name)
    ids = table["drugbank_id"].astype(str).str.strip().str.extract(_DRUGBANK, expand=False)
    for col, bad in (("name", names == ""), ("drugbank_id", ids.isna())):
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            what = "a drug name" if col == "name" else "a DrugBank id DBnnnnn"
            raise InputError(f"{table[col].iloc[i]!r} is not {what}",
                             file=path, line=None if path is None else i + 2, field=col)
    return pd.DataFrame({"name": names, "drug": "DRUGBANK:" + ids}).drop_duplicates(ignore_index=True)


def load_pt_map(source: Mapping[str, str] | str | Path | None) -> dict[str, str]:
    """Normalised PT → HPO id, from a dict (e.g. from hp.obo MedDRA xrefs) or a TSV ``pt, hpo_id``.

    Raises
    ------
    InputError
        Missing file or column, a bad HPO id, or one PT mapped to two HPO terms.
    """
    if source is None:
        return {}
    path = None if isinstance(source, Mapping) else Path(source)
    if path is None:
        pairs = [(k, v, None) for k, v in source.items()]
    else:
        table = _read_tsv(path, ("pt", "hpo_id"))
        pairs = [(k, v, i + 2) for i, (k, v) in enumerate(zip(table["pt"], table["hpo_id"]))]
    out: dict[str, str] = {}
    for pt, hpo, line in pairs:
        key, hpo = normalise_pt(str(pt)), str(hpo).strip()
        if not _HPO_ID.match(hpo):
            raise InputError(f"{hpo!r} for PT {pt!r} is not an HPO id HP:nnnnnnn",
                             file=path, line=line, field="hpo_id")
        if out.get(key, hpo) != hpo:
            raise InputError(f"PT {pt!r} maps to both {out[key]} and {hpo}",
                             file=path, line=line, field="pt")
        out[key] = hpo
    return out


def _drug_ids(drugs: pd.DataFrame, drug_map: pd.DataFrame) -> pd.DataFrame:
    """(row, drug) for every DrugBank id that a row's drugname or prod_ai (or its parts) names."""
    lookup = drug_map.groupby("name")["drug"].agg(tuple).to_dict()
    names = pd.concat([
        pd.DataFrame({"row": drugs.index, "name": drugs["drugname"]}),
        pd.DataFrame({"row": drugs.index, "name": drugs["prod_ai"]}),
        pd.DataFrame({"row": drugs.index, "name": drugs["prod_ai"].str.split("\\")}).explode("name"),
    ]).dropna()
    unique = pd.Series(names["name"].unique())
    normal = dict(zip(unique, unique.map(normalise_drug_name)))
    names["drug"] = names["name"].map(normal).map(lookup)
    return names.dropna(subset=["drug"]).explode("drug")[["row", "drug"]].drop_duplicates()
