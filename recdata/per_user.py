"""Per-user evaluation rows on disk: one columnar Parquet file per evaluation, read back as the lists it was given.

``write_report`` saves every recommender's per-user table (``{"user_id": [...], "ndcg@10": [...], ...}``, one
entry per evaluated example, for paired bootstraps) with ``write_per_user``; ``load_per_user`` reads it. At
millions of users a JSON list per metric was GBs (issue 34); Parquet stores one column per (recommender, metric),
compressed, and a reader can load only the recommenders it compares. Layout of ``per_user.parquet``:

- ``user_id``: the user ids shared by every table that holds the same users in the same order (the usual case:
  every row of one evaluation scores the same examples); a table with other users gets its own
  ``<name>/user_id``;
- ``<name>/<column>``: each other column of table ``name`` (float64 metrics; NaN and None kept apart);
- schema metadata ``alignrec.per_user``: each table's row count and its columns in their order (so names with a
  ``/`` are never parsed). Tables shorter than the longest are padded with nulls that the reader cuts off.

Runs written before it hold ``per_user.json`` instead (``LEGACY_PER_USER_FILE``); ``load_per_user`` reads either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recdata.io import atomic_path

__all__ = ["LEGACY_PER_USER_FILE", "PER_USER_FILE", "load_per_user", "per_user_path", "write_per_user"]

PER_USER_FILE = "per_user.parquet"
LEGACY_PER_USER_FILE = "per_user.json"  # what runs before the Parquet file hold: still read
_META_KEY = b"alignrec.per_user"
_FORMAT = 1
_SHARED = "user_id"


def write_per_user(path: str | os.PathLike, tables: Mapping[str, Mapping[str, Sequence[Any]]]) -> None:
    """Write ``{name: {column: values}}`` (each table's columns of equal length) to one Parquet file, atomically."""
    shared = next((t[_SHARED] for t in tables.values() if _SHARED in t), None)
    num_rows = max((len(values) for t in tables.values() for values in t.values()), default=0)
    columns: dict[str, pa.Array] = {}
    layout: dict[str, dict[str, Any]] = {}
    if shared is not None:
        columns[_SHARED] = _column(shared, num_rows, pa.string())
    for name, table in tables.items():
        lengths = {len(values) for values in table.values()}
        if len(lengths) > 1:
            raise ValueError(f"per-user table {name!r} has columns of different lengths {sorted(lengths)}")
        stored = {}
        for key, values in table.items():
            if key == _SHARED and list(values) == list(shared):
                stored[key] = _SHARED
                continue
            column = _unique(f"{name}/{key}", columns)
            columns[column] = _column(values, num_rows, pa.string() if key == _SHARED else None)
            stored[key] = column
        layout[name] = {"rows": lengths.pop() if lengths else 0, "columns": stored}
    meta = {_META_KEY: json.dumps({"format": _FORMAT, "tables": layout}, ensure_ascii=False).encode("utf-8")}
    table = pa.table(columns).replace_schema_metadata(meta) if columns else pa.table({}).replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def per_user_path(out_dir: str | os.PathLike) -> Path | None:
    """The per-user file of an evaluation folder: ``per_user.parquet``, else an older run's ``per_user.json``."""
    for name in (PER_USER_FILE, LEGACY_PER_USER_FILE):
        path = Path(out_dir) / name
        if path.is_file():
            return path
    return None


def load_per_user(out_dir: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, dict[str, list]]:
    """``recommender -> {"user_id": [...], "ndcg@10": [...], ...}`` as ``write_report`` saved it (Parquet, or an
    older run's ``per_user.json``); ``names``: only these tables (a Parquet file then reads only their columns)."""
    path = per_user_path(out_dir)
    if path is None:
        raise FileNotFoundError(f"{Path(out_dir) / PER_USER_FILE} does not exist; re-run `alignrec evaluate` with "
                                "this version")
    if path.name == LEGACY_PER_USER_FILE:
        return _select(json.loads(path.read_text(encoding="utf-8")), names, path)
    schema = pq.read_schema(path)
    try:
        meta = json.loads(schema.metadata[_META_KEY])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path} has no {_META_KEY.decode()} metadata: not a per-user file written by "
                         "write_per_user; re-run `alignrec evaluate`") from None
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path} has per-user format {meta.get('format')!r}; this version reads {_FORMAT}: update "
                         "alignrec or re-run `alignrec evaluate`")
    layout = _select(meta["tables"], names, path)
    wanted = sorted({column for t in layout.values() for column in t["columns"].values()})
    data = pq.read_table(path, columns=wanted)
    return {name: {key: data.column(column).slice(0, t["rows"]).to_pylist() for key, column in t["columns"].items()}
            for name, t in layout.items()}


def _select(tables: dict[str, Any], names: Sequence[str] | None, path: Path) -> dict[str, Any]:
    if names is None:
        return tables
    missing = [n for n in names if n not in tables]
    if missing:
        raise KeyError(f"{path} has no per-user table {missing}; it has {sorted(tables)}")
    return {n: tables[n] for n in names}


def _column(values: Sequence[Any], num_rows: int, type_: pa.DataType | None) -> pa.Array:
    """``values`` as an Arrow array padded with nulls to ``num_rows`` (Python floats stay bit-exact float64)."""
    array = pa.array(values if isinstance(values, list) else list(values), type=type_)
    if len(array) < num_rows:
        array = pa.concat_arrays([array, pa.nulls(num_rows - len(array), array.type)])
    return array


def _unique(column: str, taken: Mapping[str, Any]) -> str:
    """``column``, or ``column#2``, ``#3``... when a table and column name already spell it (``a/b`` + ``c`` vs
    ``a`` + ``b/c``)."""
    name, i = column, 1
    while name in taken:
        i += 1
        name = f"{column}#{i}"
    return name
