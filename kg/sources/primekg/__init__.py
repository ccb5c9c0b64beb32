"""Parser for PrimeKG (Chandak, Huang & Zitnik, *Sci. Data* 10:67, 2023; Harvard Dataverse
doi:10.7910/DVN/IXA7BM).

``kg.csv`` is comma-separated with quoted fields where needed and this header::

    relation,display_relation,x_index,x_id,x_type,x_name,x_source,y_index,y_id,y_type,y_name,y_source

Its ~8.1 M rows hold ~4.05 M undirected edges, each written once per direction, and some
pairs twice with different ``display_relation`` (``drug_protein``: target / enzyme /
carrier / transporter). The release also ships ``nodes.tab`` (tab-separated ``node_index,
node_id, node_type, node_name, node_source``) and ``edges.csv`` (``relation,
display_relation, x_index, y_index``); :func:`parse_nodes_and_edges` reads that pair instead.

Identifiers become CURIEs, one rule per ``x_source``:

=================  ==============================  ============================================
``x_source``       published ``x_id``              CURIE
=================  ==============================  ============================================
``NCBI``           ``2200``                        ``NCBIGene:2200``
``DrugBank``       ``DB00001``                     ``DRUGBANK:DB00001``
``HPO``            ``1250`` (no padding)           ``HP:0001250`` (7 digits)
``MONDO``          ``8019``                        ``MONDO:0008019`` (7 digits)
``MONDO_grouped``  ``13924_12592_14672``           one node per member: ``MONDO:0013924``, ...
``GO``             ``6281``                        ``GO:0006281`` (7 digits)
``REACTOME``       ``R-HSA-109582``                ``REACT:R-HSA-109582``
``UBERON``         ``2107``                        ``UBERON:0002107`` (7 digits)
``CTD``            ``D001564`` (MeSH)              ``MESH:D001564``
=================  ==============================  ============================================

A ``MONDO_grouped`` node is PrimeKG's merge of near-identical diseases (same name stem). It
is split back into its member MONDO diseases, and every edge of the group is copied to each
member (an edge between two groups of sizes *a* and *b* becomes *a*·*b* edges). A member
that also appears on its own keeps its own name; a copy that turns into a self-loop (a
group linked to its own member) is dropped and counted.

Every edge is stored once, in a canonical direction fixed per relation (:data:`RELATIONS`):
the direction of the project relation it maps to where there is one, otherwise the order
of the PrimeKG name (``anatomy_protein_present``: anatomy → gene). Relations between two
nodes of one type are symmetric, stored as (lower node code, higher node code), which is
CURIE order: this includes the ``parent-child`` ontology relations, whose direction
``kg.csv`` does not keep (both directions are present; take is_a direction from the
ontologies themselves). Rows that differ only in ``display_relation`` collapse into
one edge whose ``display_relation`` lists every value, sorted and joined by ``;``.

Line numbers in error messages count the header as line 1 and assume that no quoted field
spans lines.

Modules
-------
vocabulary
    The published columns, node types, identifier rules (:data:`ID_RULES`) and relations
    (:data:`RELATIONS`).
reader
    :func:`read_primekg`, :func:`parse_kg_csv`, :func:`parse_nodes_and_edges`: reading and
    checking the published files.
assemble
    :class:`PrimeKG` and :class:`PrimeKGStats`: node table, group expansion, canonical
    direction and collapsing.
"""

from kg.sources.primekg.assemble import PrimeKG, PrimeKGStats
from kg.sources.primekg.reader import parse_kg_csv, parse_nodes_and_edges, read_primekg
from kg.sources.primekg.vocabulary import (
    EDGES_COLUMNS,
    ID_RULES,
    KG_COLUMNS,
    NODE_TYPES,
    NODES_COLUMNS,
    RELATIONS,
    IdRule,
    PrimeKGRelation,
)

__all__ = [
    "EDGES_COLUMNS", "ID_RULES", "KG_COLUMNS", "NODES_COLUMNS", "NODE_TYPES", "RELATIONS", "IdRule", "PrimeKG",
    "PrimeKGRelation", "PrimeKGStats", "parse_kg_csv", "parse_nodes_and_edges", "read_primekg",
]
