"""CDM tables as files typed as the v5.4 DDL types them: Parquet columns int32 / int64 / date32 /
timestamp / float64 / string by the specification's type, CSV with ISO dates and empty fields
for NULL."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from shared.ehr.cdm_ddl import TABLES

FORMATS = ("csv", "parquet")
_ARROW_TYPES = {"integer": pa.int32(), "bigint": pa.int64(), "date": pa.date32(), "datetime": pa.timestamp("s"),
                "float": pa.float64()}


def arrow_table(name: str, frame: pd.DataFrame) -> pa.Table:
    """CDM table ``name`` with every column of the specification, each cast to its DDL type:
    ``frame``'s values where it has the column, NULL elsewhere.

    Raises
    ------
    ValueError
        ``frame`` has a column the table does not, or a value that does not fit its type (an
        integer beyond 32 bits).
    """
    spec = TABLES[name]
    unknown = [c for c in frame.columns if c not in {column.name for column in spec.columns}]
    if unknown:
        raise ValueError(f"{name} has no column {unknown[0]!r}")
    arrays = []
    for column in spec.columns:
        kind = _ARROW_TYPES.get(column.type, pa.string())
        if column.name not in frame:
            arrays.append(pa.nulls(len(frame), kind))
            continue
        try:  # a safe cast: an overflow or a lossy conversion raises
            arrays.append(pa.array(frame[column.name], from_pandas=True).cast(kind))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"{name}.{column.name} does not fit {column.type}: {exc}") from None
    return pa.Table.from_arrays(arrays, names=[c.name for c in spec.columns])


def write_cdm_files(tables: dict[str, pd.DataFrame], folder: Path, *, fmt: str) -> None:
    """Write each table as ``<name>.csv`` or ``<name>.parquet`` into an existing folder (callers
    make it atomic).

    Raises
    ------
    ValueError
        Unknown format, or a table that does not fit its DDL types (:func:`arrow_table`).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    for name, frame in tables.items():
        table = arrow_table(name, frame)
        if fmt == "parquet":
            pq.write_table(table, folder / f"{name}.parquet")
        else:
            with open(folder / f"{name}.csv", "wb") as f:
                # a bare header (the names are plain identifiers; Arrow would quote them), then the
                # rows: dates as YYYY-MM-DD, NULL as an empty field, strings quoted
                f.write((",".join(table.column_names) + "\n").encode("utf-8"))
                pa_csv.write_csv(table, f, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
