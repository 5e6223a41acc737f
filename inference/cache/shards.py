"""Reading and writing cache chunk files (Parquet) and the manifest that certifies a finished build.

A chunk holds rows ``(user_id, rank, item_id, score)`` (rank 1 = best) for a fixed list of users, plus the
``{user_id: history_hash}`` of those users in the Parquet schema metadata, so users with no recommendation
still count as done and an incremental refresh knows which histories each row set came from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inference.cache.layout import MANIFEST_NAME, USERS_META_KEY
from recdata.errors import InputFileError, UserError
from recdata.io import atomic_write_bytes, sha256_file

logger = logging.getLogger(__name__)

Recs = list[tuple[str, float]]

CHUNK_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float64())]
)


def write_chunk(path: Path, users: Sequence[str], user_hashes: Mapping[str, str], recs: Sequence[Recs]) -> int:
    """Write one chunk atomically (temp file + rename); returns its row count."""
    lengths = np.fromiter((len(r) for r in recs), dtype=np.int64, count=len(recs))
    columns = [
        pa.array(np.repeat(np.asarray(users, dtype=object), lengths), pa.string()),
        pa.array(np.concatenate([np.arange(1, n + 1, dtype=np.int32) for n in lengths] or [np.empty(0, np.int32)])),
        pa.array([item for r in recs for item, _ in r], pa.string()),
        pa.array([score for r in recs for _, score in r], pa.float64()),
    ]
    meta = {USERS_META_KEY: json.dumps({u: user_hashes[u] for u in users}, ensure_ascii=False).encode("utf-8")}
    table = pa.table(columns, schema=CHUNK_SCHEMA.with_metadata(meta))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return int(lengths.sum())


def chunk_users(path: Path) -> dict[str, str] | None:
    """``{user_id: history_hash}`` stored in a chunk's footer, or None if the file is unreadable."""
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[USERS_META_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        logger.warning("cache chunk %s is unreadable (%s); it will be recomputed", path, exc)
        return None


def read_chunk(path: Path) -> Iterator[tuple[str, str, Recs]]:
    """Yield ``(user_id, history_hash, [(item_id, score), ...])`` in the chunk's user order."""
    table = pq.read_table(path)
    users = json.loads(table.schema.metadata[USERS_META_KEY])
    by_user: dict[str, Recs] = {u: [] for u in users}
    cols = table.to_pydict()
    for user, rank, item, score in zip(cols["user_id"], cols["rank"], cols["item_id"], cols["score"], strict=True):
        recs = by_user.get(user)
        if recs is None or rank != len(recs) + 1:
            raise UserError(f"cache chunk {path} is corrupt: user {user!r} row rank {rank} out of order")
        recs.append((item, score))
    for user, hist_hash in users.items():
        yield user, hist_hash, by_user[user]


def read_manifest(cache_dir: str | Path) -> dict[str, Any]:
    """The manifest of a finished build; a missing one means the build is incomplete."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        raise InputFileError(
            f"{path} not found: the cache build in {cache_dir} is missing or unfinished; run (or rerun, it resumes) "
            "`alignrec cache build` for every shard first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def manifest_files(cache_dir: str | Path, manifest: Mapping[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    cache_dir = Path(cache_dir)
    return [(cache_dir / shard["dir"] / f["name"], f) for shard in manifest["shards"] for f in shard["files"]]


def verify_cache(cache_dir: str | Path, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check every chunk file against the manifest's sha256; raise naming the first bad file."""
    manifest = manifest or read_manifest(cache_dir)
    for path, entry in manifest_files(cache_dir, manifest):
        if not path.is_file():
            raise InputFileError(f"cache file {path} listed in the manifest is missing; rebuild the cache")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise UserError(
                f"cache file {path} has sha256 {digest[:12]}..., the manifest says {entry['sha256'][:12]}...; "
                "the file was modified after the build; rebuild the cache (cache build --overwrite)"
            )
    return dict(manifest)


def iter_cache(cache_dir: str | Path, verify: bool = True) -> Iterator[tuple[str, str, Recs]]:
    """Every ``(user_id, history_hash, recs)`` of a finished cache build, shard by shard."""
    manifest = verify_cache(cache_dir) if verify else read_manifest(cache_dir)
    for path, entry in manifest_files(cache_dir, manifest):
        n_rows = 0
        for user, hist_hash, recs in read_chunk(path):
            n_rows += len(recs)
            yield user, hist_hash, recs
        if n_rows != entry["num_rows"]:
            raise UserError(f"cache file {path} has {n_rows} rows, the manifest says {entry['num_rows']}")
