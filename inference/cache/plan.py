"""The chunk plan of a cache build in Arrow form, for millions of users on one driver without Python dicts.

Same plan as ``layout.plan_shard`` (one shard): users sorted by id, cut into ``chunk_size`` chunks. The driver
holds only the sorted user ids and their 16-character history hashes (about 40 bytes a user: 4 GB at 100M
users), never the histories. From them come the manifest's ``histories_hash`` (the same value
``layout.histories_hash`` gives; the build identity is ``layout.users_hash``) and one ``users_digest`` per
chunk, which a Ray actor checks before it writes a chunk and a rerun checks before it trusts one, so a chunk
file can only ever hold its planned users.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recdata.errors import UserError

__all__ = ["ChunkPlan", "chunk_of"]

_HASH_BLOCK = 64 << 20


@dataclass(frozen=True)
class ChunkPlan:
    users: pa.LargeStringArray  # [num_users] sorted user ids
    hashes: pa.LargeStringArray  # [num_users] history hash of each user
    chunk_size: int
    histories_hash: str  # == layout.histories_hash({user: hash})
    digests: list[str]  # [num_chunks] layout.users_digest of each chunk

    @classmethod
    def from_arrays(cls, users: pa.Array | pa.ChunkedArray, hashes: pa.Array | pa.ChunkedArray, chunk_size: int,
                    source: str = "histories") -> ChunkPlan:
        """Sort, check ids (non-empty, unique) and hash; ``source`` names the input in error messages."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        users = _large_string(users)
        hashes = _large_string(hashes)
        if len(users) == 0:
            raise UserError(f"{source} is empty: there is no user to build a cache for")
        if users.null_count or pc.any(pc.equal(pc.binary_length(users), 0)).as_py():
            raise UserError(f"{source}: user ids must be non-empty strings; found a null or empty user_id")
        order = pc.sort_indices(users)
        users, hashes = users.take(order), hashes.take(order)
        if len(users) > 1:
            same = pc.equal(users[1:], users[:-1])
            if pc.any(same).as_py():
                first = int(np.flatnonzero(same.to_numpy(zero_copy_only=False))[0])
                raise UserError(f"{source}: user {users[first].as_py()!r} appears more than once; one row per user")
        tab, newline, empty = (pa.scalar(s, pa.large_string()) for s in ("\t", "\n", ""))
        lines = pc.binary_join_element_wise(users, tab, hashes, newline, empty)
        offsets, data = _offsets_and_data(lines)
        whole = hashlib.sha256()
        for start in range(int(offsets[0]), int(offsets[-1]), _HASH_BLOCK):
            whole.update(data[start : min(start + _HASH_BLOCK, int(offsets[-1]))])
        bounds = offsets[::chunk_size].tolist()  # byte offset where each chunk's lines start (+ the end)
        if len(users) % chunk_size:
            bounds.append(int(offsets[-1]))
        digests = [hashlib.sha256(data[a:b]).hexdigest()[:32] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return cls(users, hashes, chunk_size, whole.hexdigest(), digests)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_chunks(self) -> int:
        return len(self.digests)

    def chunk_len(self, chunk_index: int) -> int:
        return min(self.chunk_size, self.num_users - chunk_index * self.chunk_size)

    def chunk_users(self, chunk_index: int) -> list[str]:
        start = chunk_index * self.chunk_size
        return self.users[start : start + self.chunk_len(chunk_index)].to_pylist()

    def first_users(self) -> np.ndarray:
        """[num_chunks] the first (smallest) user id of every chunk: ``searchsorted`` maps a user to its chunk."""
        return self.users[:: self.chunk_size].to_numpy(zero_copy_only=False)


def chunk_of(first_users: np.ndarray, users: np.ndarray) -> np.ndarray:
    """[len(users)] chunk index of each (planned) user id, given ``ChunkPlan.first_users()``."""
    return np.searchsorted(first_users, users, side="right").astype(np.int64) - 1


def _large_string(arr: pa.Array | pa.ChunkedArray) -> pa.LargeStringArray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.large_string())
    return arr.cast(pa.large_string())


def _offsets_and_data(arr: pa.LargeStringArray) -> tuple[np.ndarray, memoryview]:
    """The int64 offsets (``len + 1``) and the data buffer of a large-string array, sliced or not."""
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = memoryview(buffers[2]) if buffers[2] is not None else memoryview(b"")
    return offsets, data
