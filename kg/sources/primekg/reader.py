"""Reading PrimeKG's published files (``kg.csv``, or ``nodes.tab`` with ``edges.csv``): headers,
field counts, vocabularies and identifier/type consistency, checked with file and line (see
:mod:`kg.sources.primekg`, which also says how error lines are counted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from kg.sources.primekg.assemble import PrimeKG, _assemble, _RawNodes, _Rows
from kg.sources.primekg.vocabulary import (
    _PTYPES,
    _RELS,
    _SOURCES,
    EDGES_COLUMNS,
    ID_RULES,
    KG_COLUMNS,
    NODES_COLUMNS,
)
from shared.errors import InputError

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
