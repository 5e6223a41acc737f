"""On-disk layout of a cache build: shard/chunk naming, user-to-shard assignment, history hashes.

Everything here is deterministic so that any process (a rerun after a crash, another rank) computes the
same plan from the same histories: users are assigned to shards by a stable hash of their id, sorted
within a shard, and cut into fixed-size chunks. A chunk is the unit of work and of resume.

At millions of users a shard hashes every user *id* once (``user_keys``: one sha256 per id, no more Python per
user) to find its own users; only those are validated and history-hashed (issue 34). The identity all shards
share is the user set (``users_hash``); each shard's histories are pinned by its own ``_SHARD_DONE.json``
(``histories_hash`` of its users) and by every chunk's footer. Format 2: format-1 build folders (one global
``histories_hash``, computed by every shard over every user) are refused on resume; pass --overwrite.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from pathlib import Path

import numpy as np

from recdata.errors import UserError

FORMAT_VERSION = 2
BUILD_CONFIG_NAME = "build_config.json"
MANIFEST_NAME = "manifest.json"
SHARD_DONE_NAME = "_SHARD_DONE.json"
RESOLVED_CONFIG_NAME = "resolved_config.json"  # the CLI's resolved flags, one per shard folder
# Parquet schema-metadata key holding {user_id: history_hash} of every user in a chunk (users with zero
# recommendations included, so "done" never depends on having rows).
USERS_META_KEY = b"alignrec.users"


def history_hash(history: Sequence[str]) -> str:
    """Short content hash of one user's history; a change means the cached top-K is stale.

    The sha256 of ``json.dumps(list(history), ensure_ascii=False)``; a list of strings is encoded item by item with
    the encoder ``json.dumps`` itself uses (the same text, about half the time: once per user at millions)."""
    items = list(history)
    if not items:
        return _EMPTY_HISTORY_HASH
    try:
        text = f"[{', '.join(map(encode_basestring, items))}]"
    except TypeError:  # an item that is not a string (``build_cache`` refuses those): json.dumps's own text
        text = json.dumps(items, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_EMPTY_HISTORY_HASH = hashlib.sha256(b"[]").hexdigest()[:16]


def histories_hash(user_hashes: Mapping[str, str]) -> str:
    """Hash of the whole input (every user and their history hash), order independent."""
    digest = hashlib.sha256()
    users = sorted(user_hashes)
    for start in range(0, len(users), 1 << 16):  # the lines of many users per update: the same digest, less Python
        digest.update(b"".join([user_line(u, user_hashes[u]) for u in users[start : start + (1 << 16)]]))
    return digest.hexdigest()


def user_line(user_id: str, hist_hash: str) -> bytes:
    """The bytes one user adds to ``histories_hash`` and ``users_digest`` (``inference.cache.plan`` builds the
    same bytes with Arrow for millions of users at once)."""
    return f"{user_id}\t{hist_hash}\n".encode()


def users_digest(user_hashes: Mapping[str, str]) -> str:
    """Short hash of one chunk's ``{user_id: history_hash}`` (users sorted): what the plan expects a chunk to hold."""
    digest = hashlib.sha256()
    for user in sorted(user_hashes):
        digest.update(user_line(user, user_hashes[user]))
    return digest.hexdigest()[:32]


def shard_of(user_id: str, num_shards: int) -> int:
    """Stable shard of a user: independent of the other users, of Python's hash seed and of the machine."""
    return int.from_bytes(hashlib.sha256(user_id.encode("utf-8")).digest()[:8], "big") % num_shards


def user_keys(user_ids: Sequence[str]) -> np.ndarray:
    """[U] uint64 key of each user id: the first 8 bytes of its sha256 (big-endian), so ``key % num_shards`` is
    ``shard_of``. One C-level hash per id: the only work a shard does for users that are not its own."""
    digests = b"".join([hashlib.sha256(u.encode("utf-8")).digest()[:8] for u in user_ids])
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def users_hash(keys: np.ndarray) -> str:
    """Order-independent hash of a user set from its ``user_keys``: what every shard of one build must agree on."""
    return hashlib.sha256(np.sort(np.asarray(keys, dtype=np.uint64)).astype("<u8").tobytes()).hexdigest()


def select_shard(user_ids: Sequence[str], keys: np.ndarray, shard_index: int, num_shards: int) -> list[str]:
    """The users of ``shard_index`` (those with ``shard_of == shard_index``), sorted: ``plan_shard``'s users."""
    mine = np.flatnonzero(np.asarray(keys, dtype=np.uint64) % np.uint64(num_shards) == shard_index)
    return sorted(user_ids[i] for i in mine.tolist())


def combined_histories_hash(shard_hashes: Sequence[str]) -> str:
    """The build's ``histories_hash`` from its shards' (in shard order): with one shard, that shard's own (=
    ``histories_hash`` of every user, as the Ray engine computes it); else a hash of the shards' hashes."""
    if len(shard_hashes) == 1:
        return shard_hashes[0]
    return hashlib.sha256("\n".join(shard_hashes).encode()).hexdigest()


def shard_dir_name(shard_index: int, num_shards: int) -> str:
    return f"shard-{shard_index:05d}-of-{num_shards:05d}"


def chunk_file_name(chunk_index: int) -> str:
    return f"chunk-{chunk_index:06d}.parquet"


def plan_shard(users: Sequence[str], shard_index: int, num_shards: int, chunk_size: int) -> list[list[str]]:
    """The chunks (lists of user ids, sorted) this shard owns (``build_cache`` selects with ``user_keys``: same)."""
    mine = sorted(u for u in users if shard_of(u, num_shards) == shard_index)
    return [mine[i : i + chunk_size] for i in range(0, len(mine), chunk_size)]


def resolve_shard(shard_index: int | None, num_shards: int | None) -> tuple[int, int]:
    """Explicit values win; otherwise the ``RANK``/``WORLD_SIZE`` of torchrun/deepspeed; otherwise 0 of 1."""
    if num_shards is None:
        num_shards = int(os.environ.get("WORLD_SIZE", "1"))
    if shard_index is None:
        if "RANK" in os.environ:
            shard_index = int(os.environ["RANK"])
        elif num_shards == 1:
            shard_index = 0
        else:
            raise UserError(
                f"num_shards is {num_shards} but no shard index was given: pass --shard_index 0..{num_shards - 1} "
                "in each process (or launch with torchrun/deepspeed, which set RANK)"
            )
    if num_shards < 1:
        raise UserError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise UserError(
            f"shard_index {shard_index} is outside [0, {num_shards}); pass --shard_index in 0..{num_shards - 1} "
            "(or check the RANK / WORLD_SIZE environment variables)"
        )
    return shard_index, num_shards


def list_shard_dirs(cache_dir: Path, num_shards: int) -> list[Path]:
    return [cache_dir / shard_dir_name(i, num_shards) for i in range(num_shards)]


# What a build writes (``is_build_file``): only these are ever deleted by --overwrite; a user's other files stay.
_SHARD_DIR_RE = re.compile(r"shard-\d{5,}-of-\d{5,}")
_CHUNK_RE = r"chunk-\d{6,}\.parquet"  # chunk_file_name
_TOP_FILES_RE = re.compile(rf"(?:{re.escape(BUILD_CONFIG_NAME)}|{re.escape(MANIFEST_NAME)})")
_SHARD_FILES_RE = re.compile(rf"(?:{_CHUNK_RE}|{re.escape(SHARD_DONE_NAME)}|{re.escape(RESOLVED_CONFIG_NAME)})")
_TEMP_RE = re.compile(r"\.(?P<name>.+)\.\w+\.tmp")  # recdata.io.atomic_path's and claim_config's temp names


def is_shard_dir_name(name: str) -> bool:
    """True for a shard folder's name (``shard_dir_name``)."""
    return _SHARD_DIR_RE.fullmatch(name) is not None


def is_build_file(name: str, in_shard: bool) -> bool:
    """True when a file named ``name`` (in the cache folder, or in one of its shard folders: ``in_shard``) is one a
    build writes: config, manifest, chunks, done markers, resolved flags, or a temp file of one of them."""
    pattern = _SHARD_FILES_RE if in_shard else _TOP_FILES_RE
    temp = _TEMP_RE.fullmatch(name)
    return pattern.fullmatch(temp["name"] if temp else name) is not None
