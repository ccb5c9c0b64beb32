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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from shared.errors import InputError

KG_COLUMNS = (
    "relation", "display_relation", "x_index", "x_id", "x_type", "x_name", "x_source",
    "y_index", "y_id", "y_type", "y_name", "y_source",
)
NODES_COLUMNS = ("node_index", "node_id", "node_type", "node_name", "node_source")
EDGES_COLUMNS = ("relation", "display_relation", "x_index", "y_index")

#: PrimeKG node type → project node type (kg.schema names where the project has the type).
NODE_TYPES: dict[str, str] = {
    "gene/protein": "gene",
    "drug": "drug",
    "effect/phenotype": "phenotype",
    "disease": "disease",
    "biological_process": "biological_process",
    "molecular_function": "molecular_function",
    "cellular_component": "cellular_component",
    "exposure": "exposure",
    "pathway": "pathway",
    "anatomy": "anatomy",
}
_PTYPES = tuple(NODE_TYPES)


@dataclass(frozen=True, slots=True)
class IdRule:
    """How one ``x_source`` spells its ids and which CURIE they become."""

    prefix: str  # CURIE prefix
    pattern: str  # regular expression the published id must match in full
    pad: int  # zero-pad the number to this many digits (0: keep as given)
    types: tuple[str, ...]  # PrimeKG node types this source may carry
    expected: str  # for error messages


ID_RULES: dict[str, IdRule] = {
    "NCBI": IdRule("NCBIGene", r"\d+", 0, ("gene/protein",), "an NCBI Gene number"),
    "DrugBank": IdRule("DRUGBANK", r"DB\d{5}", 0, ("drug",), "a DrugBank id DBnnnnn"),
    "HPO": IdRule("HP", r"\d{1,7}", 7, ("effect/phenotype",), "an HPO number (up to 7 digits)"),
    "MONDO": IdRule("MONDO", r"\d{1,7}", 7, ("disease",), "a MONDO number (up to 7 digits)"),
    "MONDO_grouped": IdRule("MONDO", r"\d{1,7}(?:_\d{1,7})*", 7, ("disease",),
                            "MONDO numbers joined by '_'"),
    "GO": IdRule("GO", r"\d{1,7}", 7, ("biological_process", "molecular_function", "cellular_component"),
                 "a GO number (up to 7 digits)"),
    "REACTOME": IdRule("REACT", r"R-[A-Z]{3}-\d+", 0, ("pathway",), "a Reactome id R-HSA-n"),
    "UBERON": IdRule("UBERON", r"\d{1,7}", 7, ("anatomy",), "an UBERON number (up to 7 digits)"),
    "CTD": IdRule("MESH", r"[CD]\d{6,9}", 0, ("exposure",), "a MeSH id Dnnnnnn or Cnnnnnn"),
}
_SOURCES = tuple(ID_RULES)
_GROUPED = _SOURCES.index("MONDO_grouped")


@dataclass(frozen=True, slots=True)
class PrimeKGRelation:
    """A PrimeKG relation, its canonical direction and the project relation it maps to."""

    name: str  # PrimeKG ``relation``
    source_type: str  # PrimeKG node type at the canonical source
    target_type: str
    project: str | None  # kg.schema.RELATIONS name; None where the project has none (yet)
    displays: tuple[str, ...]  # the ``display_relation`` values of the 2023 release

    @property
    def symmetric(self) -> bool:
        """Same node type at both ends: stored once as (lower code, higher code)."""
        return self.source_type == self.target_type


_G, _C, _P, _D = "gene/protein", "drug", "effect/phenotype", "disease"
_BP, _MF, _CC = "biological_process", "molecular_function", "cellular_component"
_EX, _PW, _AN = "exposure", "pathway", "anatomy"

RELATIONS: dict[str, PrimeKGRelation] = {
    r.name: r
    for r in (
        PrimeKGRelation("protein_protein", _G, _G, None, ("ppi",)),
        PrimeKGRelation("drug_protein", _C, _G, None, ("carrier", "enzyme", "target", "transporter")),
        PrimeKGRelation("contraindication", _C, _D, None, ("contraindication",)),
        PrimeKGRelation("indication", _C, _D, "indication", ("indication",)),
        PrimeKGRelation("off-label use", _C, _D, None, ("off-label use",)),
        PrimeKGRelation("drug_drug", _C, _C, None, ("synergistic interaction",)),
        PrimeKGRelation("phenotype_protein", _G, _P, "gene_phenotype", ("associated with",)),
        PrimeKGRelation("phenotype_phenotype", _P, _P, None, ("parent-child",)),
        PrimeKGRelation("disease_phenotype_negative", _D, _P, "lacks_phenotype", ("phenotype absent",)),
        PrimeKGRelation("disease_phenotype_positive", _D, _P, "has_phenotype", ("phenotype present",)),
        PrimeKGRelation("disease_protein", _D, _G, "associated_gene", ("associated with",)),
        PrimeKGRelation("disease_disease", _D, _D, None, ("parent-child",)),
        PrimeKGRelation("drug_effect", _C, _P, "drug_effect", ("side effect",)),
        PrimeKGRelation("bioprocess_bioprocess", _BP, _BP, None, ("parent-child",)),
        PrimeKGRelation("molfunc_molfunc", _MF, _MF, None, ("parent-child",)),
        PrimeKGRelation("cellcomp_cellcomp", _CC, _CC, None, ("parent-child",)),
        PrimeKGRelation("molfunc_protein", _MF, _G, None, ("interacts with",)),
        PrimeKGRelation("cellcomp_protein", _CC, _G, None, ("interacts with",)),
        PrimeKGRelation("bioprocess_protein", _BP, _G, None, ("interacts with",)),
        PrimeKGRelation("exposure_protein", _EX, _G, None, ("interacts with",)),
        PrimeKGRelation("exposure_disease", _EX, _D, None, ("linked to",)),
        PrimeKGRelation("exposure_exposure", _EX, _EX, None, ("parent-child",)),
        PrimeKGRelation("exposure_bioprocess", _EX, _BP, None, ("interacts with",)),
        PrimeKGRelation("exposure_molfunc", _EX, _MF, None, ("interacts with",)),
        PrimeKGRelation("exposure_cellcomp", _EX, _CC, None, ("interacts with",)),
        PrimeKGRelation("pathway_pathway", _PW, _PW, None, ("parent-child",)),
        PrimeKGRelation("pathway_protein", _PW, _G, None, ("interacts with",)),
        PrimeKGRelation("anatomy_anatomy", _AN, _AN, None, ("parent-child",)),
        PrimeKGRelation("anatomy_protein_present", _AN, _G, None, ("expression present",)),
        PrimeKGRelation("anatomy_protein_absent", _AN, _G, None, ("expression absent",)),
    )
}
_RELS = tuple(RELATIONS)
_MAX_DISPLAYS = 62  # display_relation sets are packed into one int64 bit mask per edge


@dataclass(frozen=True, slots=True)
class PrimeKGStats:
    """What the parser read, expanded and collapsed (``duplicates`` = the three kinds summed)."""

    rows_read: int
    rows_per_relation: dict[str, int]
    edges_per_relation: dict[str, int]
    exact_duplicates: int  # a row repeated verbatim (same direction, same display_relation)
    reverse_duplicates: int  # the other direction of an edge already read
    display_duplicates: int  # same edge, another display_relation (merged into one label)
    grouped_nodes: int  # distinct MONDO_grouped ids
    grouped_members: int  # distinct MONDO ids inside them
    grouped_rows: int  # rows with a MONDO_grouped end
    expansion_rows_added: int  # extra rows made by copying group edges to every member
    self_loops_dropped: int  # rows whose two ends are one node (after expansion)
    nodes_per_type: dict[str, int] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        """All rows dropped as copies of another row's edge."""
        return self.exact_duplicates + self.reverse_duplicates + self.display_duplicates

    def as_dict(self) -> dict:
        """JSON-ready counts."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["duplicates"] = self.duplicates
        return out


@dataclass(frozen=True, slots=True)
class PrimeKG:
    """The parsed graph.

    ``nodes`` (row position = node code): ``id`` (CURIE), ``type`` (project type),
    ``name``, ``source`` (PrimeKG ``x_source``), ``primekg_type``, ``primekg_id`` (the id
    as published; the group id for a member that only appears inside a group). Sorted by id.

    ``edges``: ``source``, ``target`` (int32 node codes), ``relation`` (PrimeKG name),
    ``project_relation`` (kg.schema name or missing) and ``display_relation`` (categoricals).
    One row per edge in canonical direction, sorted by relation, source, target.
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    stats: PrimeKGStats
    files: tuple[Path, ...]

    def edges_by_id(self) -> pd.DataFrame:
        """``edges`` with ``source`` and ``target`` as CURIEs (categoricals over node ids)."""
        ids = pd.Categorical.from_codes(self.edges["source"].to_numpy(), categories=self.nodes["id"])
        out = self.edges.assign(
            source=ids,
            target=pd.Categorical.from_codes(self.edges["target"].to_numpy(), dtype=ids.dtype),
        )
        return out


# --------------------------------------------------------------------------- entry points


def read_primekg(directory: str | Path) -> PrimeKG:
    """Parse a PrimeKG download folder: ``kg.csv`` if present, else ``nodes.tab`` + ``edges.csv``.

    Parameters
    ----------
    directory
        Folder holding the Dataverse files under their published names.

    Returns
    -------
    PrimeKG
        See :func:`parse_kg_csv`.

    Raises
    ------
    InputError
        Neither file set is in the folder, or the file read is malformed (see
        :func:`parse_kg_csv`).
    """
    directory = Path(directory)
    if (directory / "kg.csv").is_file():
        return parse_kg_csv(directory / "kg.csv")
    if (directory / "nodes.tab").is_file() and (directory / "edges.csv").is_file():
        return parse_nodes_and_edges(directory / "nodes.tab", directory / "edges.csv")
    raise InputError("no PrimeKG kg.csv (or nodes.tab with edges.csv) in this folder", file=directory)


def parse_kg_csv(path: str | Path) -> PrimeKG:
    """Parse PrimeKG's ``kg.csv`` into typed nodes and collapsed, canonically directed edges.

    Reads only the 10 columns it needs (not ``x_index``/``y_index``), every one
    dictionary-encoded, and turns each into small integer codes chunk by chunk, releasing
    the text as it goes; identifiers are checked and mapped once per distinct node.

    Parameters
    ----------
    path
        ``kg.csv`` with the published 12-column header.

    Returns
    -------
    PrimeKG
        Nodes, edges and counts (:class:`PrimeKGStats`).

    Raises
    ------
    InputError
        Missing file; a header other than the published one; a row with too few or too many
        fields (a truncated download); an unknown relation, node type or ``x_source``; an
        id that does not fit its source (for example a non-numeric HPO or MONDO id); an
        ``x_type`` that its ``x_source`` cannot carry or that changes between rows of one
        node; a relation joining node types it does not join. The message names the line
        and column.
    """
    path = Path(path)
    _check_header(path, KG_COLUMNS, ",")
    table = _read_table(path, [c for c in KG_COLUMNS if not c.endswith("_index")], delimiter=",")
    n = table.num_rows
    cols = {name: table.column(name) for name in table.column_names}
    del table  # from here each column's buffers go as soon as it is converted
    rel = _vocab_codes(cols.pop("relation"), _RELS, path, "relation", "relation")
    disp, disp_labels = _open_codes(cols.pop("display_relation"))
    # one id vocabulary for both sides, so that a node read as x and as y is the same key:
    # a single hash pass over every block's dictionary gives each entry its vocabulary code
    blocks = [c.dictionary for s in "xy" for c in cols[f"{s}_id"].chunks]
    encoded = pc.dictionary_encode(pa.concat_arrays(blocks))
    id_vocab = encoded.dictionary
    block_codes = iter(np.split(encoded.indices.to_numpy(), np.cumsum([len(b) for b in blocks])[:-1]))
    del blocks, encoded
    n_src = len(_SOURCES)
    key_type = np.int32 if len(id_vocab) * n_src < 2**31 else np.int64
    raw_of_key = np.zeros(len(id_vocab) * n_src, dtype=key_type)
    keys, ptypes = {}, {}
    for side in "xy":
        source = _vocab_codes(cols.pop(f"{side}_source"), _SOURCES, path, f"{side}_source", "source")
        ptypes[side] = _vocab_codes(cols.pop(f"{side}_type"), _PTYPES, path, f"{side}_type", "node type")
        _check_type_source(ptypes[side], source, path, side)
        ident = _codes(cols.pop(f"{side}_id"), lambda _: next(block_codes), np.int32)
        keys[side] = ident.astype(key_type, copy=False)
        keys[side] *= n_src
        keys[side] += source
        del source, ident
        raw_of_key[keys[side]] = 1
    node_keys = np.flatnonzero(raw_of_key)
    np.cumsum(raw_of_key, out=raw_of_key)
    raw_of_key -= 1
    x_raw = raw_of_key[keys.pop("x")].astype(np.int32)
    y_raw = raw_of_key[keys.pop("y")].astype(np.int32)
    del raw_of_key
    n_raw = len(node_keys)
    # where each node is first seen (x side wins ties: same row)
    first_x, first_y = _first_rows(x_raw, n_raw, n), _first_rows(y_raw, n_raw, n)
    use_x = first_x <= first_y
    rows_x, rows_y = np.flatnonzero(use_x), np.flatnonzero(~use_x)
    ptype = np.empty(n_raw, dtype=np.int8)
    ptype[rows_x] = ptypes["x"][first_x[rows_x]]
    ptype[rows_y] = ptypes["y"][first_y[rows_y]]
    name = np.empty(n_raw, dtype=object)
    name[rows_x] = _strings_at(cols.pop("x_name"), first_x[rows_x])
    name[rows_y] = _strings_at(cols.pop("y_name"), first_y[rows_y])
    raw = _RawNodes(
        source=(node_keys % n_src).astype(np.int8),
        ident=id_vocab.take(pa.array(node_keys // n_src)).to_numpy(zero_copy_only=False).astype(object),
        ptype=ptype,
        name=name,
        file=path,
        line=np.where(use_x, first_x, first_y) + 2,
        field=np.where(use_x, "x_id", "y_id").astype(object),
    )
    for side, node in (("x", x_raw), ("y", y_raw)):
        _check_node_type_stable(raw, node, ptypes.pop(side), path, side)
    rows = _Rows(rel=rel, disp=disp, disp_labels=disp_labels, x=x_raw, y=y_raw, file=path, first_line=2)
    return _assemble(raw, rows, files=(path,))


def parse_nodes_and_edges(nodes_path: str | Path, edges_path: str | Path) -> PrimeKG:
    """Parse the release's ``nodes.tab`` + ``edges.csv`` pair (same result as ``kg.csv``).

    ``nodes.tab`` is tab-separated; a field may be wrapped in double quotes (Dataverse's
    tabular export quotes strings). Identifier rules, direction and collapsing are those
    of :func:`parse_kg_csv`; node names and types come from ``nodes.tab``.

    Parameters
    ----------
    nodes_path, edges_path
        ``nodes.tab`` and ``edges.csv`` with their published headers.

    Returns
    -------
    PrimeKG
        Nodes, edges and counts, equal to what :func:`parse_kg_csv` gives for the same release.

    Raises
    ------
    InputError
        Missing file, wrong header, truncated row, a non-integer or repeated ``node_index``,
        an edge naming a ``node_index`` that ``nodes.tab`` lacks, and every node or relation
        error of :func:`parse_kg_csv`.
    """
    nodes_path, edges_path = Path(nodes_path), Path(edges_path)
    _check_header(nodes_path, NODES_COLUMNS, "\t")
    _check_header(edges_path, EDGES_COLUMNS, ",")
    nt = _read_table(nodes_path, list(NODES_COLUMNS), delimiter="\t")
    index = _integers(nt.column("node_index"), nodes_path, "node_index")
    order = np.argsort(index, kind="stable")
    repeated = np.flatnonzero(np.diff(index[order]) == 0)
    if len(repeated):
        row = int(order[repeated[0] + 1])
        raise InputError(f"node_index {index[row]} appears twice", file=nodes_path, line=row + 2, field="node_index")
    source = _vocab_codes(nt.column("node_source"), _SOURCES, nodes_path, "node_source", "source")
    ptype = _vocab_codes(nt.column("node_type"), _PTYPES, nodes_path, "node_type", "node type")
    _check_type_source(ptype, source, nodes_path, "node")
    everything = np.arange(nt.num_rows)
    raw = _RawNodes(
        source=source,
        ident=_strings_at(nt.column("node_id"), everything),
        ptype=ptype,
        name=_strings_at(nt.column("node_name"), everything),
        file=nodes_path,
        line=everything + 2,
        field=np.full(nt.num_rows, "node_id", dtype=object),
    )
    del nt
    et = _read_table(edges_path, list(EDGES_COLUMNS), delimiter=",")
    rel = _vocab_codes(et.column("relation"), _RELS, edges_path, "relation", "relation")
    disp, disp_labels = _open_codes(et.column("display_relation"))
    ends = []
    sorted_index = index[order]
    for column in ("x_index", "y_index"):
        values = _integers(et.column(column), edges_path, column)
        pos = np.minimum(np.searchsorted(sorted_index, values), len(order) - 1)
        missing = np.flatnonzero(sorted_index[pos] != values)
        if len(missing):
            i = int(missing[0])
            raise InputError(f"node_index {values[i]} is not in {nodes_path.name}", file=edges_path, line=i + 2,
                             field=column)
        ends.append(order[pos].astype(np.int32))
    rows = _Rows(rel=rel, disp=disp, disp_labels=disp_labels, x=ends[0], y=ends[1], file=edges_path, first_line=2)
    return _assemble(raw, rows, files=(nodes_path, edges_path))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class _RawNodes:
    """Nodes as published (a MONDO_grouped id is still one node), with where each is seen."""

    source: np.ndarray  # int8 index into _SOURCES
    ident: np.ndarray  # object: published id
    ptype: np.ndarray  # int8 index into _PTYPES
    name: np.ndarray  # object
    file: Path
    line: np.ndarray  # int64 line of first sighting
    field: np.ndarray  # object: column of first sighting


@dataclass(frozen=True, slots=True)
class _Rows:
    """One entry per edge row: relation index, display code, raw node codes of both ends."""

    rel: np.ndarray  # int8 index into _RELS
    disp: np.ndarray  # int16 code into disp_labels
    disp_labels: list[str]
    x: np.ndarray  # int32 raw node code
    y: np.ndarray
    file: Path
    first_line: int  # file line of row 0


def _check_header(path: Path, columns: tuple[str, ...], delimiter: str) -> None:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            first = fh.readline().rstrip("\r\n")
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    got = tuple(c.strip('"') for c in first.split(delimiter))
    if got != columns:
        sep = "tab" if delimiter == "\t" else "comma"
        raise InputError(
            f"wrong header: expected the {sep}-separated columns {', '.join(columns)}, got {first[:160]!r}",
            file=path, line=1,
        )


def _read_table(path: Path, columns: list[str], *, delimiter: str) -> pa.Table:
    """Read ``columns`` of a delimited file with a header line, every one dictionary-encoded text.

    Each ~8 MB block keeps its own dictionaries (no unification pass, no second copy).
    """
    bad: list[pa_csv.InvalidRow] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        if not bad:
            bad.append(row)
        return "skip"

    text = pa.dictionary(pa.int32(), pa.string())
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(block_size=8 << 20),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char='"', invalid_row_handler=on_invalid),
            convert_options=pa_csv.ConvertOptions(
                include_columns=columns, column_types={c: text for c in columns}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        raise InputError(f"not a readable delimited table ({exc})", file=path) from None
    if bad:
        row = bad[0]
        line = row.number if row.number is not None else _find_line(path, row.text)
        raise InputError(
            f"expected {row.expected_columns} fields, got {row.actual_columns} (truncated or malformed row)",
            file=path, line=line,
        )
    if table.num_rows == 0:
        raise InputError("no data rows (empty or truncated file)", file=path)
    return table


def _find_line(path: Path, text: str) -> int | None:
    """Line number of the first line equal to ``text`` (Arrow's threaded reader loses it)."""
    target = text.encode("utf-8")
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if raw.rstrip(b"\r\n") == target:
                return lineno
    return None


def _codes(column: pa.ChunkedArray, lookup, dtype) -> np.ndarray:
    """Per chunk (every one, in order), map the chunk's dictionary through ``lookup`` (→ numpy
    codes), then the chunk's rows through that map."""
    out = np.empty(len(column), dtype=dtype)
    pos = 0
    for chunk in column.chunks:
        mapping = lookup(chunk.dictionary)
        out[pos:pos + len(chunk)] = mapping[chunk.indices.to_numpy(zero_copy_only=False)]
        pos += len(chunk)
    return out


def _vocab_codes(column: pa.ChunkedArray, vocab: tuple[str, ...], path: Path, field: str, what: str) -> np.ndarray:
    """Codes into a fixed vocabulary (int8); an unknown value names its first line."""
    index = {v: i for i, v in enumerate(vocab)}
    codes = _codes(column, lambda d: np.array([index.get(v, -1) for v in d.to_pylist()], dtype=np.int8), np.int8)
    bad = np.flatnonzero(codes < 0)
    if len(bad):
        i = int(bad[0])
        raise InputError(f"unknown {what} {column[i].as_py()!r}; known: {', '.join(vocab)}", file=path, line=i + 2,
                         field=field)
    return codes


def _open_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Codes (int16) into a vocabulary built from the column's values, in order of appearance."""
    labels: dict[str, int] = {}

    def lookup(dictionary: pa.Array) -> np.ndarray:
        return np.array([labels.setdefault(v, len(labels)) for v in dictionary.to_pylist()], dtype=np.int16)

    codes = _codes(column, lookup, np.int16)
    return codes, list(labels)


def _strings_at(column: pa.ChunkedArray, rows: np.ndarray) -> np.ndarray:
    """The text of ``column`` at ``rows`` (object array), read chunk by chunk."""
    out = np.empty(len(rows), dtype=object)
    ends = np.cumsum([len(c) for c in column.chunks])
    which = np.searchsorted(ends, rows, side="right")
    for k in np.unique(which):
        sel = np.flatnonzero(which == k)
        chunk = column.chunk(int(k))
        local = pa.array(rows[sel] - (ends[k] - len(chunk)))
        values = chunk.take(local)
        if pa.types.is_dictionary(values.type):
            values = values.dictionary.take(values.indices)
        out[sel] = values.to_numpy(zero_copy_only=False)
    return out


def _integers(column: pa.ChunkedArray, path: Path, field: str) -> np.ndarray:
    """Parse a column of non-negative integers (read as text, to name a bad line)."""
    text = pc.cast(column, pa.string()) if pa.types.is_dictionary(column.type) else column
    ok = pc.match_substring_regex(text, r"^\s*\d{1,12}\s*$").to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~ok)
    if len(bad):
        i = int(bad[0])
        raise InputError(f"{text[i].as_py()!r} is not a node index (a non-negative integer)", file=path,
                         line=i + 2, field=field)
    return pc.cast(pc.utf8_trim_whitespace(text), pa.int64()).to_numpy()


def _first_rows(node: np.ndarray, n_nodes: int, n_rows: int) -> np.ndarray:
    """For every node code, the first row it occurs in (``n_rows`` if never)."""
    first = np.full(n_nodes, n_rows, dtype=np.int64)
    np.minimum.at(first, node, np.arange(n_rows))
    return first


def _check_type_source(ptype: np.ndarray, source: np.ndarray, path: Path, side: str) -> None:
    """Every row's node type must be one its source can carry (a small lookup table)."""
    allowed = np.zeros((len(_PTYPES), len(_SOURCES)), dtype=bool)
    for s, rule in enumerate(ID_RULES.values()):
        for t in rule.types:
            allowed[_PTYPES.index(t), s] = True
    bad = np.flatnonzero(~allowed[ptype, source])
    if len(bad):
        i = int(bad[0])
        src = _SOURCES[source[i]]
        raise InputError(
            f"{side}_type {_PTYPES[ptype[i]]!r} is inconsistent with {side}_source {src!r} "
            f"(which carries {', '.join(ID_RULES[src].types)})",
            file=path, line=i + 2, field=f"{side}_type",
        )


def _check_node_type_stable(raw: _RawNodes, node: np.ndarray, ptype: np.ndarray, path: Path, side: str) -> None:
    bad = np.flatnonzero(raw.ptype[node] != ptype)
    if len(bad):
        i = int(bad[0])
        r = node[i]
        raise InputError(
            f"{side}_type {_PTYPES[ptype[i]]!r} differs from {_PTYPES[raw.ptype[r]]!r} given for "
            f"{_SOURCES[raw.source[r]]} {raw.ident[r]} on line {raw.line[r]}",
            file=path, line=i + 2, field=f"{side}_type",
        )


# --------------------------------------------------------------------------- assembling


def _curies(raw: _RawNodes) -> tuple[np.ndarray, np.ndarray]:
    """CURIEs of every raw node's members: (member → raw node code, member CURIE).

    Ids are checked and rewritten per source with vectorised string operations.
    """
    owners, curies = [], []
    for s, (name, rule) in enumerate(ID_RULES.items()):
        sel = np.flatnonzero(raw.source == s)
        if not len(sel):
            continue
        ids = pd.Series(raw.ident[sel], dtype=object).astype(str)
        ok = ids.str.fullmatch(rule.pattern).to_numpy(dtype=bool)
        if not ok.all():
            r = sel[int(np.flatnonzero(~ok)[0])]
            raise InputError(f"{raw.ident[r]!r} is not {rule.expected} (source {name})", file=raw.file,
                             line=int(raw.line[r]), field=str(raw.field[r]))
        if s == _GROUPED:
            parts = ids.str.split("_")
            owner = np.repeat(sel, parts.str.len().to_numpy())
            ids = pd.Series(np.concatenate(parts.to_numpy()) if len(parts) else [], dtype=object)
        else:
            owner = sel
        if rule.pad:
            ids = ids.str.zfill(rule.pad)
        owners.append(owner)
        curies.append((rule.prefix + ":" + ids).to_numpy(dtype=object))
    return np.concatenate(owners), np.concatenate(curies)


def _assemble(raw: _RawNodes, rows: _Rows, *, files: tuple[Path, ...]) -> PrimeKG:
    """Node table, group expansion, canonical direction and collapsing (steps 1–5 below)."""
    # 1. node table: member CURIEs, sorted; a node seen on its own beats its group copy
    owner, curie = _curies(raw)
    grouped = raw.source[owner] == _GROUPED
    members = pd.DataFrame({"id": curie, "grouped": grouped, "owner": owner})
    members = members.sort_values(["id", "grouped"], kind="stable")
    best = members.drop_duplicates("id")
    r = best["owner"].to_numpy()
    ptypes = np.asarray(_PTYPES, dtype=object)[raw.ptype[r]]
    nodes = pd.DataFrame({
        "id": best["id"].to_numpy(dtype=object),
        "type": pd.Series(ptypes).map(NODE_TYPES).to_numpy(dtype=object),
        "name": raw.name[r],
        "source": np.asarray(_SOURCES, dtype=object)[raw.source[r]],
        "primekg_type": ptypes,
        "primekg_id": raw.ident[r],
    })
    final = np.searchsorted(nodes["id"].to_numpy(dtype=object), curie).astype(np.int32)
    # CSR of raw node → final member codes
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=len(raw.source))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    member_codes = final[order]

    # 2. orientation per row, from the node types (rows are type-checked against relations)
    spec = [RELATIONS[n] for n in _RELS]
    src_t = np.array([_PTYPES.index(s.source_type) for s in spec], dtype=np.int8)
    dst_t = np.array([_PTYPES.index(s.target_type) for s in spec], dtype=np.int8)
    symmetric = np.array([s.symmetric for s in spec])
    xt, yt = raw.ptype[rows.x], raw.ptype[rows.y]
    forward = (xt == src_t[rows.rel]) & (yt == dst_t[rows.rel])
    backward = (xt == dst_t[rows.rel]) & (yt == src_t[rows.rel])
    bad = np.flatnonzero(~(forward | backward))
    if len(bad):
        i = int(bad[0])
        s = spec[rows.rel[i]]
        raise InputError(
            f"relation {s.name!r} joins {s.source_type} and {s.target_type}, not "
            f"{_PTYPES[xt[i]]} and {_PTYPES[yt[i]]}",
            file=rows.file, line=rows.first_line + i, field="relation",
        )
    del xt, yt, backward

    # 3. final node codes of both ends; a row with a group end is copied to every member pair
    n = len(rows.rel)
    in_group = np.flatnonzero((raw.source[rows.x] == _GROUPED) | (raw.source[rows.y] == _GROUPED))
    first_member = member_codes[indptr[:-1]]
    rel, disp, fwd = rows.rel, rows.disp, forward
    xf, yf = first_member[rows.x], first_member[rows.y]
    if len(in_group):
        keep = np.ones(n, dtype=bool)
        keep[in_group] = False
        g_rel, g_disp, g_fwd, g_x, g_y = (a[in_group] for a in (rel, disp, fwd, rows.x, rows.y))
        rep, offsets = _expand(counts[g_x])
        g_rel, g_disp, g_fwd, g_y = g_rel[rep], g_disp[rep], g_fwd[rep], g_y[rep]
        g_xf = member_codes[indptr[g_x[rep]] + offsets]
        rep, offsets = _expand(counts[g_y])
        g_rel, g_disp, g_fwd, g_xf = g_rel[rep], g_disp[rep], g_fwd[rep], g_xf[rep]
        g_yf = member_codes[indptr[g_y[rep]] + offsets]
        rel, disp, fwd, xf, yf = (np.concatenate([a[keep], b]) for a, b in (
            (rel, g_rel), (disp, g_disp), (fwd, g_fwd), (xf, g_xf), (yf, g_yf)))
        del keep, g_rel, g_disp, g_fwd, g_x, g_y, g_xf, g_yf, rep, offsets
    swap = np.where(symmetric[rel], xf > yf, ~fwd)
    src = np.where(swap, yf, xf)
    dst = np.where(swap, xf, yf)
    del xf, yf, fwd
    loop = src == dst
    loops = int(np.count_nonzero(loop))
    if loops:
        keep = ~loop
        src, dst, rel, disp, swap = src[keep], dst[keep], rel[keep], disp[keep], swap[keep]
    del loop

    # 4. collapse: one in-place sort of a packed key (relation, source, target, display, swapped)
    n_nodes, n_disp = len(nodes), max(len(rows.disp_labels), 1)
    if n_disp > _MAX_DISPLAYS:
        raise InputError(f"{n_disp} distinct display_relation values; at most {_MAX_DISPLAYS} are supported",
                         file=rows.file, field="display_relation")
    bits = int(len(_RELS)).bit_length() + 2 * int(n_nodes).bit_length() + int(n_disp).bit_length() + 1
    if bits > 63:
        raise ValueError(f"graph too large to pack edge keys into 64 bits ({n_nodes} nodes)")
    key = rel.astype(np.int64)
    for factor, value in ((n_nodes, src), (n_nodes, dst), (n_disp, disp), (2, swap)):
        key *= factor
        key += value
    del src, dst, disp, swap, rel
    key.sort()
    u3 = key[_starts(key)]
    u2 = u3 >> 1
    u2 = u2[_starts(u2)]
    edge, d = np.divmod(u2, n_disp)
    starts = np.flatnonzero(_starts(edge))
    mask = np.bitwise_or.reduceat(np.left_shift(np.int64(1), d), starts) if len(d) else d
    edge = edge[starts]
    rest, target = np.divmod(edge, n_nodes)
    e_rel, source = np.divmod(rest, n_nodes)

    # 5. labels: one string per distinct display set
    masks, mask_code = np.unique(mask, return_inverse=True)
    labels = [";".join(sorted(rows.disp_labels[b] for b in range(n_disp) if (int(m) >> b) & 1)) for m in masks]
    rel_cat = pd.Categorical.from_codes(e_rel.astype(np.int16), categories=list(_RELS))
    projects = sorted({s.project for s in spec if s.project})
    proj_code = np.array([projects.index(s.project) if s.project else -1 for s in spec], dtype=np.int16)
    edges = pd.DataFrame({
        "source": source.astype(np.int32),
        "target": target.astype(np.int32),
        "relation": rel_cat,
        "project_relation": pd.Categorical.from_codes(proj_code[e_rel], categories=projects),
        "display_relation": pd.Categorical.from_codes(mask_code.astype(np.int32), categories=labels),
    })
    rows_per = np.bincount(rows.rel, minlength=len(_RELS))
    edges_per = np.bincount(e_rel, minlength=len(_RELS))
    stats = PrimeKGStats(
        rows_read=n,
        rows_per_relation={r: int(c) for r, c in zip(_RELS, rows_per) if c},
        edges_per_relation={r: int(c) for r, c in zip(_RELS, edges_per) if c},
        exact_duplicates=int(len(key) - len(u3)),
        reverse_duplicates=int(len(u3) - len(u2)),
        display_duplicates=int(len(u2) - len(edge)),
        grouped_nodes=int(np.count_nonzero(raw.source == _GROUPED)),
        grouped_members=int(pd.unique(curie[grouped]).size),
        grouped_rows=len(in_group),
        expansion_rows_added=int(len(key) + loops - n),
        self_loops_dropped=loops,
        nodes_per_type={str(k): int(v) for k, v in nodes["type"].value_counts().sort_index().items()},
    )
    return PrimeKG(nodes=nodes, edges=edges, stats=stats, files=files)


def _starts(sorted_values: np.ndarray) -> np.ndarray:
    """Boolean mask of the first element of every run of equal values."""
    out = np.ones(len(sorted_values), dtype=bool)
    if len(sorted_values) > 1:
        np.not_equal(sorted_values[1:], sorted_values[:-1], out=out[1:])
    return out


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry ``i`` repeated ``counts[i]`` times, and the position 0 … counts[i]-1 of each copy."""
    rep = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return rep, np.arange(len(rep)) - starts[rep]
