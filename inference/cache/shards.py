"""Reading and writing cache chunk files (Parquet) and the manifest that certifies a finished build.

A chunk holds rows ``(user_id, rank, item_id, score)`` (rank 1 = best) for a fixed list of users, plus the
``{user_id: history_hash}`` of those users in the Parquet schema metadata, so users with no recommendation
still count as done and an incremental refresh knows which histories each row set came from.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import operator
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from inference.cache.layout import MANIFEST_NAME, USERS_META_KEY
from inference.cache.location import Location, open_location
from recdata.errors import InputFileError, UserError
from recdata.io import atomic_write_bytes

logger = logging.getLogger(__name__)

Recs = list[tuple[str, float]]

CHUNK_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float64())]
)


def write_chunk(path: Path, users: Sequence[str], user_hashes: Mapping[str, str], recs: Sequence[Recs]) -> int:
    """Write one chunk atomically (temp file + rename); returns its row count."""
    data, num_rows = encode_chunk(users, user_hashes, recs)
    atomic_write_bytes(path, data)
    return num_rows


def encode_chunk(users: Sequence[str], user_hashes: Mapping[str, str],
                 recs: Sequence[Recs] | RecColumns) -> tuple[bytes, int]:
    """The Parquet bytes of one chunk and its row count (deterministic: same input, same bytes). ``recs``: per user,
    or already column-wise (``RecColumns``, no Python list per user: the same bytes)."""
    cols = recs if isinstance(recs, RecColumns) else RecColumns.from_recs(recs)
    lengths = cols.lengths
    row_user = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    columns = [
        pa.array(users, pa.string()).take(pa.array(row_user)),
        pa.array((np.arange(len(row_user), dtype=np.int64) - starts + 1).astype(np.int32)),  # rank, 1 = best
        cols.items,
        pa.array(cols.scores, pa.float64()),
    ]
    meta = {USERS_META_KEY: json.dumps({u: user_hashes[u] for u in users}, ensure_ascii=False).encode("utf-8")}
    table = pa.table(columns, schema=CHUNK_SCHEMA.with_metadata(meta))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes(), int(lengths.sum())


@dataclass(frozen=True)
class RecColumns:
    """The recommendations of a list of users back to back, as a chunk stores them: a build of millions of users
    moves them as a few arrays instead of a list of tuples per user (issue 34)."""

    lengths: np.ndarray  # [users] int64: how many rows each user has, in user order
    items: pa.StringArray  # [rows] item ids, each user's best first
    scores: np.ndarray  # [rows] float64

    @classmethod
    def from_recs(cls, recs: Sequence[Recs]) -> RecColumns:
        """Column-wise ``recs`` (one ``[(item_id, score), ...]`` per user)."""
        flat = list(itertools.chain.from_iterable(recs))
        return cls(np.fromiter(map(len, recs), np.int64, len(recs)),
                   pa.array(list(map(operator.itemgetter(0), flat)), pa.string()),
                   np.fromiter(map(operator.itemgetter(1), flat), np.float64, len(flat)))

    @classmethod
    def from_positions(cls, positions: np.ndarray, scores: np.ndarray,
                       item_ids: pa.StringArray | Sequence[str]) -> RecColumns:
        """An answer as array producers hold it (a model's top-k), no Python object per row: ``positions``
        ``[users, width]`` index ``item_ids`` (best first; negative: no item, e.g. a beam search's padding), ``scores``
        the same shape. One ``take`` gathers the ids (a position past them: ``IndexError``): build the table once."""
        positions, scores = np.asarray(positions, np.int64), np.asarray(scores, np.float64)
        if positions.ndim != 2 or scores.shape != positions.shape:
            raise ValueError(f"positions {positions.shape} and scores {scores.shape} must be one [users, width] shape")
        table = item_ids if isinstance(item_ids, pa.Array) else pa.array(list(item_ids), pa.string())
        keep = positions >= 0
        flat = positions.reshape(-1) if keep.all() else positions[keep]  # row-major: user by user, best first
        return cls(keep.sum(axis=1, dtype=np.int64), pc.take(table, pa.array(flat)),
                   scores.reshape(-1) if len(flat) == scores.size else scores[keep])

    @classmethod
    def from_answer(cls, users: Sequence[str], answer: Sequence[Any] | RecColumns, k: int) -> RecColumns:
        """A recommender's ``answer`` for ``users`` column-wise, validated (one list of at most ``k`` distinct
        ``(item_id: str, finite score)`` per user; else ``UserError`` naming the user) so a bad recommender never
        writes a bad cache. Whole-array checks; the per-user ones run only to name a culprit or for unusual types.
        An answer that is already a ``RecColumns`` is checked as arrays only (``_check_columns``)."""
        if isinstance(answer, RecColumns):
            return _check_columns(users, answer, k)
        if len(answer) != len(users):
            raise UserError(f"recommend_fn returned {len(answer)} lists for {len(users)} users; it must return one "
                            "per user")
        columns = cls._checked(answer, k)
        return columns if columns is not None else cls.from_recs(_check_answer(users, answer, k))

    @classmethod
    def _checked(cls, answer: Sequence[Any], k: int) -> RecColumns | None:
        """``answer`` column-wise if it is valid and plain (lists of ``(str, score)`` tuples), else None."""
        if not set(map(type, answer)) <= {list}:
            return None
        lengths = np.fromiter(map(len, answer), np.int64, len(answer))
        if len(answer) and int(lengths.max()) > k:
            return None
        flat = list(itertools.chain.from_iterable(answer))
        if not set(map(type, flat)) <= {tuple} or not set(map(len, flat)) <= {2}:
            return None
        items = list(map(operator.itemgetter(0), flat))
        if not set(map(type, items)) <= {str}:
            return None
        try:
            scores = np.fromiter(map(float, map(operator.itemgetter(1), flat)), np.float64, len(flat))
            item_array = pa.array(items, pa.string())
        except (TypeError, ValueError, OverflowError, pa.ArrowException):
            return None
        if not np.isfinite(scores).all():
            return None
        if _has_duplicates(item_array.dictionary_encode().indices.to_numpy(), lengths):
            return None
        return cls(lengths, item_array, scores)

    def recs(self) -> list[Recs]:
        """One ``[(item_id, score), ...]`` per user."""
        pairs = list(zip(self.items.to_pylist(), self.scores.tolist(), strict=True))
        bounds = np.cumsum(self.lengths).tolist()
        return [pairs[a:b] for a, b in itertools.pairwise([0, *bounds])]  # no user: none


def _has_duplicates(codes: np.ndarray, lengths: np.ndarray) -> bool:
    """Whether some user's list (``lengths`` rows each, back to back) holds one item code twice: each list sorted as
    a row of a users x longest-list grid, padded with distinct negative codes (else one sort of user-major keys)."""
    if len(codes) < 2:
        return False
    users, width = len(lengths), int(lengths.max())
    row_user = np.repeat(np.arange(users, dtype=np.int64), lengths)
    if users * width > 4 * len(codes):  # a few long lists among short ones: the grid would be mostly padding
        keys = np.sort(row_user * (int(codes.max()) + 1) + codes)
        return bool((keys[1:] == keys[:-1]).any())
    grid = np.tile(-1 - np.arange(width, dtype=np.int64), (users, 1))
    grid[row_user, np.arange(len(codes)) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = codes
    grid.sort(axis=1)
    return bool((grid[:, 1:] == grid[:, :-1]).any())


def _check_columns(users: Sequence[str], answer: RecColumns, k: int) -> RecColumns:
    """A ``RecColumns`` answer under the rules of a list one, as whole arrays (no Python object per row); a bad row's
    user, to name it, is found from the lengths."""
    lengths, items, scores = np.asarray(answer.lengths), answer.items, np.asarray(answer.scores)
    if (lengths.ndim != 1 or lengths.dtype.kind not in "iu" or scores.ndim != 1 or scores.dtype.kind not in "iuf"
            or not isinstance(items, pa.Array) or not pa.types.is_string(items.type)):
        raise UserError("recommend_fn returned a RecColumns of the wrong types: lengths must be a 1-D integer array, "
                        "scores a 1-D float array and items a pyarrow string array")
    if len(lengths) != len(users):
        raise UserError(f"recommend_fn returned RecColumns for {len(lengths)} users for {len(users)} users; it must "
                        "hold one list per user")
    lengths, scores = lengths.astype(np.int64, copy=False), scores.astype(np.float64, copy=False)
    if len(bad := np.flatnonzero((lengths < 0) | (lengths > k))):
        user = int(bad[0])
        raise UserError(f"recommend_fn returned {lengths[user]} items for user {users[user]!r}, "
                        + ("a negative count" if lengths[user] < 0 else f"more than k={k}"))
    ends = np.cumsum(lengths)
    total, rows = (int(ends[-1]) if len(ends) else 0), min(len(items), len(scores))
    if total != len(items) or total != len(scores):  # name the user whose rows run past the data, else the last
        user = int(np.searchsorted(ends, rows, side="right")) if total > rows else len(users) - 1
        where = (f"user {users[user]!r}'s rows run past them" if total > rows else
                 f"rows are left over after the last user ({users[user] if users else None!r})")
        raise UserError(f"recommend_fn returned {len(items)} items and {len(scores)} scores for lengths summing to "
                        f"{total}: {where}; the lengths must sum to both")
    bad_rows = np.flatnonzero(items.is_null().to_numpy(zero_copy_only=False) | ~np.isfinite(scores))
    if len(bad_rows):
        user = int(np.searchsorted(ends, row := int(bad_rows[0]), side="right"))  # the first bad row's user
        raise UserError(f"recommend_fn returned {(items[row].as_py(), float(scores[row]))!r} for user "
                        f"{users[user]!r}; expected (item_id: str, finite score)")
    codes = items.dictionary_encode().indices.to_numpy().astype(np.int64)
    if _has_duplicates(codes, lengths):  # the first user holding one code twice
        row_user = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
        keys = np.sort(row_user * (int(codes.max()) + 1) + codes)
        user = int(keys[1:][keys[1:] == keys[:-1]].min() // (int(codes.max()) + 1))
        raise UserError(f"recommend_fn returned duplicate items for user {users[user]!r}: "
                        f"{items.slice(ends[user] - lengths[user], lengths[user]).to_pylist()}")
    return RecColumns(lengths, items, scores)


def _check_answer(users: Sequence[str], answer: Sequence[Any], k: int) -> list[Recs]:
    """The per-user checks of ``RecColumns.from_answer``: the first bad user's error, else each user's list."""
    checked = []
    for user, recs in zip(users, answer, strict=True):
        try:
            items = [(item, float(score)) for item, score in recs]
        except (TypeError, ValueError):
            raise UserError(f"recommend_fn returned {recs!r:.200} for user {user!r}; expected a list of "
                             "(item_id: str, finite score)") from None
        if len(items) > k:
            raise UserError(f"recommend_fn returned {len(items)} items for user {user!r}, more than k={k}")
        ids = {item for item, _ in items}
        if len(ids) != len(items):
            raise UserError(f"recommend_fn returned duplicate items for user {user!r}: {[i for i, _ in items]}")
        checked.append((user, items))
    flat_items = [item for _, recs in checked for item, _ in recs]
    flat_scores = np.fromiter((s for _, recs in checked for _, s in recs), dtype=np.float64, count=len(flat_items))
    if not all(type(item) is str for item in flat_items) or not np.isfinite(flat_scores).all():
        for user, recs in checked:  # slow path only to name the culprit
            for entry in recs:
                if not isinstance(entry[0], str) or not math.isfinite(entry[1]):
                    raise UserError(f"recommend_fn returned {entry!r} for user {user!r}; expected (item_id: str, "
                                     "finite score)")
    return [recs for _, recs in checked]


def chunk_users(path: str | os.PathLike | pa.NativeFile, name: str | None = None) -> dict[str, str] | None:
    """``{user_id: history_hash}`` stored in a chunk's footer (a path or an open file), or None if unreadable."""
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[USERS_META_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        logger.warning("cache chunk %s is unreadable (%s); it will be recomputed", name or path, exc)
        return None


@dataclass(frozen=True)
class ChunkColumns:
    """One chunk column-wise, for readers that work on whole arrays (a publish): the chunk's users in order and
    their rows back to back, best first."""

    users: list[str]
    hashes: list[str]  # history hash of each user
    offsets: np.ndarray  # [users + 1] int64: user u's rows are offsets[u]:offsets[u + 1]
    item_codes: np.ndarray  # [rows] int64: position in ``items``
    items: list[str]  # the chunk's distinct item ids
    scores: np.ndarray  # [rows] float64

    @property
    def num_rows(self) -> int:
        return len(self.scores)

    def recs(self) -> Iterator[tuple[str, str, Recs]]:
        """``(user_id, history_hash, [(item_id, score), ...])`` per user, as ``read_chunk`` yields them."""
        items, scores, bounds = self.items, self.scores.tolist(), self.offsets.tolist()
        codes = self.item_codes.tolist()
        for u, (user, hist_hash) in enumerate(zip(self.users, self.hashes, strict=True)):
            a, b = bounds[u], bounds[u + 1]
            yield user, hist_hash, [(items[c], s) for c, s in zip(codes[a:b], scores[a:b], strict=True)]


def read_chunk_columns(path: str | os.PathLike | pa.NativeFile, name: str | None = None) -> ChunkColumns:
    """A chunk's rows grouped by user in footer order, ranks checked (``UserError`` naming the first bad row)."""
    path_name = name or path
    table = pq.read_table(path, read_dictionary=["user_id", "item_id"])
    meta = json.loads(table.schema.metadata[USERS_META_KEY])
    users = list(meta)
    user_of, _ = _codes(table["user_id"], {u: i for i, u in enumerate(users)}.get, len(users))  # [rows]
    rank = table["rank"].fill_null(0).to_numpy().astype(np.int64)
    order = np.argsort(user_of, kind="stable")  # rows by user, file order kept within a user
    counts = np.bincount(user_of, minlength=len(users) + 1)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    expected = np.arange(len(order)) - offsets[user_of[order]] + 1  # a user's n-th row in the file has rank n
    bad = order[(rank[order] != expected) | (user_of[order] == len(users))]
    if len(bad):
        first = int(bad.min())  # the row a row-by-row reader stops at
        raise UserError(f"cache chunk {path_name} is corrupt: user {table['user_id'][first].as_py()!r} row rank "
                        f"{table['rank'][first].as_py()} out of order")
    if table["item_id"].null_count or table["score"].null_count:
        raise UserError(f"cache chunk {path_name} is corrupt: a row has no item_id or no score")
    item_codes, items = _codes(table["item_id"])
    scores = table["score"].to_numpy()
    sorted_already = bool((np.diff(user_of) >= 0).all())
    return ChunkColumns(users, list(meta.values()), offsets[: len(users) + 1],
                        item_codes if sorted_already else item_codes[order], items,
                        scores if sorted_already else scores[order])


def _codes(column: pa.ChunkedArray, lookup: Any = None, missing: int = -1) -> tuple[np.ndarray, list[str]]:
    """(per-row codes, the distinct values) of a dictionary column; with ``lookup`` (value -> code or None), the
    codes it gives, ``missing`` for a null or a value it does not know."""
    column = column.unify_dictionaries()
    values = column.chunk(0).dictionary.to_pylist() if column.num_chunks else []
    codes = np.concatenate([c.indices.fill_null(-1).to_numpy().astype(np.int64) for c in column.chunks] or
                           [np.empty(0, np.int64)])
    if lookup is None:
        return codes, values
    mapped = np.array([code if (code := lookup(v)) is not None else missing for v in values] + [missing], np.int64)
    return mapped[codes], values  # code -1 (null) takes the trailing ``missing``


def read_chunk(path: str | os.PathLike | pa.NativeFile, name: str | None = None) -> Iterator[tuple[str, str, Recs]]:
    """Yield ``(user_id, history_hash, [(item_id, score), ...])`` in the chunk's user order."""
    yield from read_chunk_columns(path, name).recs()


def read_manifest(cache_dir: str | os.PathLike | Location) -> dict[str, Any]:
    """The manifest of a finished build (a folder or URI); a missing one means the build is incomplete."""
    loc = open_location(cache_dir)
    if not loc.is_file(MANIFEST_NAME):
        raise InputFileError(
            f"{loc.display(MANIFEST_NAME)} not found: the cache build in {loc.uri} is missing or unfinished; run (or "
            "rerun, it resumes) `alignrec cache build` for every shard first"
        )
    return json.loads(loc.read_text(MANIFEST_NAME))


def manifest_files(manifest: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(path relative to the build folder, file entry)`` of every chunk the manifest lists, in order."""
    return [(f"{shard['dir']}/{f['name']}", f) for shard in manifest["shards"] for f in shard["files"]]


def verify_cache(cache_dir: str | os.PathLike | Location, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check every chunk file against the manifest's sha256; raise naming the first bad file."""
    loc = open_location(cache_dir)
    manifest = manifest or read_manifest(loc)
    for rel, entry in manifest_files(manifest):
        if not loc.is_file(rel):
            raise InputFileError(f"cache file {loc.display(rel)} listed in the manifest is missing; rebuild the cache")
        _check_digest(loc, rel, loc.sha256(rel), entry)
    return dict(manifest)


def _check_digest(loc: Location, rel: str, digest: str, entry: Mapping[str, Any]) -> None:
    if digest != entry["sha256"]:
        raise UserError(
            f"cache file {loc.display(rel)} has sha256 {digest[:12]}..., the manifest says "
            f"{entry['sha256'][:12]}...; the file was modified after the build; rebuild the cache "
            "(cache build --overwrite)"
        )


def iter_shards(cache_dir: str | os.PathLike | Location, shard_indices: Collection[int],
                manifest: Mapping[str, Any] | None = None) -> Iterator[tuple[str, str, Recs]]:
    """``iter_cache`` over only the listed shards of a finished build, each file read once and checked against
    the manifest's sha256 as it is read: an incremental refresh reads its own share of the base, not all of it."""
    loc = open_location(cache_dir)
    manifest = manifest or read_manifest(loc)
    for shard in manifest["shards"]:
        if shard["index"] not in shard_indices:
            continue
        for entry in shard["files"]:
            rel = f"{shard['dir']}/{entry['name']}"
            if not loc.is_file(rel):
                raise InputFileError(f"cache file {loc.display(rel)} listed in the manifest is missing; rebuild the "
                                     "cache")
            data = loc.read_bytes(rel)
            _check_digest(loc, rel, hashlib.sha256(data).hexdigest(), entry)
            yield from read_chunk(pa.BufferReader(data), name=loc.display(rel))


def iter_cache(cache_dir: str | os.PathLike | Location, verify: bool = True) -> Iterator[tuple[str, str, Recs]]:
    """Every ``(user_id, history_hash, recs)`` of a finished cache build (a folder or URI), shard by shard."""
    for chunk in iter_cache_columns(cache_dir, verify):
        yield from chunk.recs()


def iter_cache_columns(cache_dir: str | os.PathLike | Location, verify: bool = True) -> Iterator[ChunkColumns]:
    """``iter_cache`` a chunk at a time, column-wise (``ChunkColumns``), each chunk's row count checked against
    the manifest."""
    loc = open_location(cache_dir)
    manifest = verify_cache(loc) if verify else read_manifest(loc)
    for rel, entry in manifest_files(manifest):
        with loc.open_input_file(rel) as f:
            chunk = read_chunk_columns(f, name=loc.display(rel))
        if chunk.num_rows != entry["num_rows"]:
            raise UserError(f"cache file {loc.display(rel)} has {chunk.num_rows} rows, the manifest says "
                            f"{entry['num_rows']}")
        yield chunk


def scan_cache(cache_dir: str | os.PathLike | Location) -> tuple[list[str], float]:
    """(the distinct items of a finished build, sorted; the largest finite |score|): what a publish needs before it
    encodes rows (``inference.cache.rows``). Reads only those two columns of each chunk."""
    loc = open_location(cache_dir)
    items: set[str] = set()
    largest = 0.0
    for rel, _ in manifest_files(read_manifest(loc)):
        with loc.open_input_file(rel) as f:
            table = pq.read_table(f, columns=["item_id", "score"], read_dictionary=["item_id"])
        if table["item_id"].null_count:
            raise UserError(f"cache chunk {loc.display(rel)} is corrupt: a row has no item_id")
        codes, values = _codes(table["item_id"])  # the file's dictionary: its distinct items, hashed once
        items.update(itertools.compress(values, np.bincount(codes, minlength=len(values)).tolist()))
        scores = np.abs(table["score"].to_numpy())
        finite = scores[np.isfinite(scores)]
        if len(finite):
            largest = max(largest, float(finite.max()))
    return sorted(items), largest
