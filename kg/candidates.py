"""The survey's public candidate codes (``candidates.parquet`` of a bundle).

A vocabulary survey (:mod:`client.vocabulary_survey`) releases a noisy count for every code of a
list fixed *before* any site answers. Because the list is public and data-independent, a code
no site records costs nothing and reveals nothing: its released count is pure noise, and the
coordinator's threshold is post-processing. (A list drawn from the sites' own codes would need a
DP set union with its own δ; a public list avoids it.)

The list: every live (not obsolete) phenotype of the graph, every drug, every lab with a public
reference range, the bundle's own vocabulary, and the codes of public code lists the coordinator
names (``bundle make --candidates``), for codes the graph does not know, such as ICD-10 codes of
common comorbidities. A candidate list file is a TSV with a header and the columns ``code`` (a
CURIE, ``SYSTEM:CODE``) and ``name``; its domain follows the code's namespace (an unknown
namespace is a condition: ``phenotype``). The survey counts the candidates outside the bundle's
vocabulary (:meth:`shared.bundle.StudyBundle.survey_candidates`); the whole list also cuts the
bundle's code map.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from kg.store import KnowledgeGraph
from shared.ehr.cohort import NAMESPACE_DOMAIN
from shared.errors import InputError

CANDIDATE_COLUMNS = ("code", "domain", "name")
_CURIE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*:\S+$")


def read_candidate_list(path: str | Path) -> pd.DataFrame:
    """A public code list (TSV: ``code``, ``name``) as (code, domain, name).

    Raises
    ------
    InputError
        Missing file, missing column, or a code that is not a CURIE; names the file, row and field.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            if reader.fieldnames is None or "code" not in reader.fieldnames:
                raise InputError("a candidate list needs a header with the column 'code' (and 'name')", file=path)
            rows = []
            for line, row in enumerate(reader, start=2):
                code = (row.get("code") or "").strip()
                if not _CURIE.match(code):
                    raise InputError(f"code {code!r} is not a CURIE like ICD10:I10", file=path, line=line, field="code")
                namespace = code.split(":", 1)[0].upper()
                domain = NAMESPACE_DOMAIN.get(namespace, "phenotype")
                rows.append((code, "phenotype" if domain == "diagnosis" else domain, (row.get("name") or "").strip()))
    except FileNotFoundError:
        raise InputError("candidate list not found", file=path) from None
    return pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))


def build_candidates(graph: KnowledgeGraph, vocab: pd.DataFrame, lists: Sequence[str | Path] = ()) -> pd.DataFrame:
    """The candidate table (see the module docstring): one row per code, sorted by code."""
    nodes = graph.nodes
    live = nodes[~nodes["obsolete"].astype(bool)]
    frames = [
        live.loc[live["type"] == "phenotype", ["id", "name"]].assign(domain="phenotype"),
        live.loc[live["type"] == "drug", ["id", "name"]].assign(domain="drug"),
        graph.labs[["id", "name"]].assign(domain="lab"),
    ]
    table = pd.concat([f.rename(columns={"id": "code"}) for f in frames], ignore_index=True)
    table = pd.concat([vocab[["code", "domain", "name"]], table, *(read_candidate_list(p) for p in lists)],
                      ignore_index=True)
    table = table.drop_duplicates("code", keep="first").sort_values("code", ignore_index=True)
    return table[list(CANDIDATE_COLUMNS)].astype(str)


__all__ = ["CANDIDATE_COLUMNS", "build_candidates", "read_candidate_list"]
