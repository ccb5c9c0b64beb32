"""Meta-paths: named chains of relations, written as their abbreviation string.

``DaGhP`` reads disease –associated gene→ gene –has phenotype→ phenotype. Upper-case
letters are node types and lower-case letters are edges (:mod:`kg.schema`). The name is the
same in configs, cache keys, file names and metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kg.schema import ABBREV_NODE, Relation, metaedge_relation

_TOKEN = re.compile(r"^[A-Z]([a-z][A-Z])+$")


@dataclass(frozen=True, slots=True)
class Step:
    """One meta-edge of a meta-path."""

    relation: Relation
    reverse: bool  # walk target → source
    source_type: str
    target_type: str


@dataclass(frozen=True, slots=True)
class MetaPath:
    """A parsed meta-path."""

    name: str
    steps: tuple[Step, ...]

    @property
    def node_types(self) -> tuple[str, ...]:
        """Node type at each position (length = number of steps + 1)."""
        return (self.steps[0].source_type, *(s.target_type for s in self.steps))

    @property
    def is_symmetric(self) -> bool:
        """True when the path reads the same backwards (PathSim applies)."""
        return self.name == reverse_name(self.name)

    @property
    def source_type(self) -> str:
        return self.steps[0].source_type

    @property
    def target_type(self) -> str:
        return self.steps[-1].target_type


def reverse_name(name: str) -> str:
    """The abbreviation of the same meta-path walked backwards (``DtCeP`` → ``PeCtD``)."""
    return name[::-1]


def parse_metapath(name: str) -> MetaPath:
    """Parse an abbreviation string into steps.

    Raises
    ------
    ValueError
        The string is not alternating node/edge letters, or a meta-edge is not defined.
    """
    if not _TOKEN.match(name):
        raise ValueError(
            f"meta-path {name!r} must alternate node letters ({''.join(sorted(ABBREV_NODE))}) and "
            "lower-case edge letters, e.g. DhP or DaGhP"
        )
    steps = []
    for i in range(0, len(name) - 1, 2):
        src, edge, dst = name[i], name[i + 1], name[i + 2]
        relation, reverse = metaedge_relation(src, edge, dst)
        steps.append(Step(relation, reverse, ABBREV_NODE[src], ABBREV_NODE[dst]))
    return MetaPath(name=name, steps=tuple(steps))


#: The named meta-paths the study bundle scores, with the feature domain each one reaches.
FEATURE_METAPATHS: dict[str, tuple[str, str]] = {
    "DhP": ("phenotype", "phenotypes annotated to the disease (Orphanet/HPO)"),
    "DaGhP": ("phenotype", "phenotypes of the disease's genes"),
    "DhPiP": ("phenotype", "parents and children of the disease's phenotypes (HPO is_a)"),
    "DtC": ("drug", "drugs indicated for the disease"),
    "DtCeP": ("adverse_event", "adverse effects of the disease's drugs"),
    "DtCsP": ("adverse_event", "FAERS disproportionality signals of the disease's drugs"),
    "DhPmL": ("lab", "labs that reflect the disease's phenotypes"),
    "DtCePmL": ("lab", "labs that reflect adverse effects of the disease's drugs"),
}

#: Symmetric meta-paths used for PathSim similarity.
SIMILARITY_METAPATHS: dict[str, str] = {
    "DhPhD": "diseases sharing phenotypes",
    "DaGaD": "diseases sharing genes",
    "PhDhP": "phenotypes sharing diseases",
    "CePeC": "drugs sharing adverse effects",
}
