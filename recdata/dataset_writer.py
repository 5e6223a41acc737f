"""Write a ``datasets`` folder from an iterator of rows, holding one record batch at a time.

``save_dataset_rows`` writes what ``Dataset.from_dict(rows).save_to_disk(path)`` writes: its shard rule (one
``data-0000i-of-0000n.arrow`` per ``max_shard_size`` of Arrow bytes), its record batches (1,000 rows from each
shard's first row), ``state.json`` and ``dataset_info.json``; ``datasets.load_from_disk`` reads the folder, and
the Arrow files are byte for byte those of ``save_to_disk`` (tests/recdata/test_dataset_writer.py). Building the
``Dataset`` first holds every row twice (Python objects, then Arrow), and saving a memory-mapped one pages the
whole file into the resident set; here memory is one record batch, whatever the number of rows.

The rows go once into the first shard's file; only an output above ``max_shard_size`` (or with rows above
100 kB, which save_to_disk writes in smaller batches) is read back as a stream, never mapped, and cut again.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets import config
from datasets.arrow_writer import ArrowWriter, get_writer_batch_size_from_data_size
from datasets.fingerprint import generate_random_fingerprint
from datasets.utils.py_utils import asdict, convert_file_size_to_int

__all__ = ["BATCH_ROWS", "save_dataset_dict_splits", "save_dataset_rows"]

BATCH_ROWS = config.DEFAULT_MAX_BATCH_SIZE  # rows per record batch, as save_to_disk writes them


def _shard_name(index: int, count: int) -> str:
    return f"data-{index:05d}-of-{count:05d}.arrow"


def _tables(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> Iterator[pa.Table]:
    """Tables of ``BATCH_ROWS`` rows (the last one shorter)."""
    columns = schema.names
    batch: dict[str, list] = {c: [] for c in columns}
    n = 0
    for row in rows:
        for c in columns:
            batch[c].append(row[c])
        n += 1
        if n == BATCH_ROWS:
            yield pa.Table.from_pydict(batch, schema=schema)
            batch, n = {c: [] for c in columns}, 0
    if n:
        yield pa.Table.from_pydict(batch, schema=schema)


def _with_lookahead(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """Each table as a slice of one array that also holds the next table's rows. pyarrow writes the string data
    of a slice padded to a multiple of 64 bytes when its buffer goes on, as it does for the slices of the whole
    dataset's arrays that save_to_disk writes, so the files match byte for byte."""
    previous = None
    for table in tables:
        if previous is not None:
            yield pa.concat_tables([previous, table]).combine_chunks().slice(0, previous.num_rows)
        previous = table
    if previous is not None:
        yield previous


def _write(path: Path, features: datasets.Features, tables: Iterable[pa.Table]) -> tuple[int, int]:
    """Write ``tables`` (each becomes one record batch) to ``path``; (rows, Arrow bytes)."""
    rows = nbytes = 0
    writer = ArrowWriter(features=features, path=str(path), embed_local_files=True)  # save_to_disk's writer
    try:
        for table in tables:
            writer.write_table(table)
            rows += table.num_rows
            nbytes += table.nbytes
        writer.finalize()
    finally:
        writer.close()
    return rows, nbytes


class _Cursor:
    """Reads an Arrow stream file (plain reads, never memory-mapped) ``n`` rows at a time."""

    def __init__(self, reader: pa.RecordBatchStreamReader) -> None:
        self.reader = reader
        self.pending: list[pa.RecordBatch] = []
        self.held = 0

    def take(self, n: int) -> pa.Table:
        while self.held < n:
            batch = self.reader.read_next_batch()
            self.pending.append(batch)
            self.held += batch.num_rows
        table = pa.Table.from_batches(self.pending)
        rest = table.slice(n)
        self.pending, self.held = rest.to_batches(), rest.num_rows
        return table.slice(0, n).combine_chunks()


def save_dataset_rows(rows: Iterable[Mapping[str, Any]], features: datasets.Features, path: str | os.PathLike,
                      max_shard_size: str | int | None = None) -> int:
    """Write ``rows`` (dicts with every column of ``features``) as ``Dataset.save_to_disk(path)`` writes the same
    rows (its ``max_shard_size``); returns the number of rows."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    first = out / _shard_name(0, 1)
    num_rows, nbytes = _write(first, features, _with_lookahead(_tables(rows, features.arrow_schema)))
    # save_to_disk's rules: shards by Arrow bytes, never more shards than rows (none for no rows); record batches
    # of BATCH_ROWS rows, fewer when that is above MAX_ROW_GROUP_SIZE bytes
    num_shards = min(num_rows, int(nbytes / convert_file_size_to_int(max_shard_size or config.MAX_SHARD_SIZE)) + 1)
    batch_rows = min(BATCH_ROWS, get_writer_batch_size_from_data_size(num_rows, nbytes)) if nbytes else BATCH_ROWS
    if num_shards != 1 or batch_rows != BATCH_ROWS:
        source = out / f".{first.name}.rows"
        os.replace(first, source)
        try:
            div, mod = divmod(num_rows, max(num_shards, 1))  # Dataset.shard(contiguous=True)
            sizes = [div + (index < mod) for index in range(num_shards)]
            cuts = [[min(batch_rows, size - start) for start in range(0, size, batch_rows)] for size in sizes]
            with pa.OSFile(str(source), "rb") as stream, pa.ipc.open_stream(stream) as reader:
                cursor = _Cursor(reader)
                tables = _with_lookahead(cursor.take(n) for shard in cuts for n in shard)
                for index, shard in enumerate(cuts):
                    _write(out / _shard_name(index, num_shards), features, itertools.islice(tables, len(shard)))
        finally:
            source.unlink()
    state = {"_data_files": [{"filename": _shard_name(i, num_shards)} for i in range(num_shards)],
             "_fingerprint": generate_random_fingerprint(), "_format_columns": None, "_format_kwargs": {},
             "_format_type": None, "_output_all_columns": False, "_split": None}
    (out / config.DATASET_STATE_JSON_FILENAME).write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    info = asdict(datasets.DatasetInfo(features=features))
    (out / config.DATASET_INFO_FILENAME).write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2),
                                                    encoding="utf-8")
    return num_rows


def save_dataset_dict_splits(path: str | os.PathLike, splits: Iterable[str]) -> None:
    """The ``dataset_dict.json`` ``DatasetDict.save_to_disk`` writes, for split folders written with
    ``save_dataset_rows``, so ``datasets.load_from_disk(path)`` gives the ``DatasetDict``."""
    Path(path).mkdir(parents=True, exist_ok=True)
    (Path(path) / config.DATASETDICT_JSON_FILENAME).write_text(json.dumps({"splits": list(splits)}), encoding="utf-8")
