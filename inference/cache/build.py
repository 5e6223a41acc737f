"""``build_cache``: top-K for every user, sharded across processes, resumable, incrementally refreshable.

Work is cut into chunks of users (see ``layout``); each chunk is one Parquet file written atomically, so a
process killed at any instant leaves only whole chunks behind and a rerun computes just the missing ones.
A shard writes its ``_SHARD_DONE.json`` (row counts + sha256 per file) when all its chunks exist; whichever
process completes the last shard writes ``manifest.json``. The manifest is what ``publish_cache`` trusts.

Cost per shard at millions of users (issue 34): one sha256 per user id to find its users (``layout.user_keys``),
then validation, history hashes and recommendations for its own users only; an incremental refresh reads only
the base shards that hold its users (with as many shards as the base: one). An answer goes to its file as arrays
(``shards.RecColumns``; a ``RecommendFn`` may return one, e.g. ``RecColumns.from_positions``: no tuple per row), and
the histories are kept out of the garbage collector's scans (``_gc_frozen``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from inference.cache import layout
from inference.cache.location import Location, open_location
from inference.cache.shards import RecColumns, Recs, chunk_users, iter_shards, read_manifest, write_chunk
from recdata.errors import UserError
from recdata.io import sha256_file, sha256_json

logger = logging.getLogger(__name__)

RecommendFn = Callable[[list[str], list[list[str]]], list[Recs] | RecColumns]  # per user, or as arrays (no tuples)

# Build-config keys that must match for a rerun to resume (everything except the creation time).
IDENTITY_KEYS = (
    "format_version", "k", "model", "adapter", "item_tokenizer_hash", "num_shards", "chunk_size",
    "num_users", "users_hash", "base_version", "scenarios",
)
# Keys a base cache must share with a refresh for its rows to be reusable.
REUSE_KEYS = ("k", "model", "adapter", "item_tokenizer_hash", "scenarios")


class CacheMismatchError(UserError):
    """An existing cache folder (or ``--base_cache``) was built with different settings or inputs than this run: one
    line naming the differences and the fix (a ``ValueError`` as before)."""


@dataclass
class BuildResult:
    out_dir: Path
    shard_index: int
    num_shards: int
    chunks_total: int
    chunks_skipped: int  # already present from an earlier (killed) run
    users_computed: int  # sent to recommend_fn
    users_reused: int  # copied from the base cache (incremental refresh)
    manifest: dict[str, Any] | None  # set when this call completed the last shard


@contextlib.contextmanager
def _gc_frozen() -> Iterator[None]:
    """Keep the objects that exist when a build starts (the histories: a list per user) out of the garbage
    collector's scans while it runs: every full collection would walk them all, a cost per chunk that grows with the
    number of users (issue 34). What the build makes is collected as usual; nothing changes if something else froze
    objects already (``gc.freeze`` is process-wide)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@_gc_frozen()
def build_cache(
    recommend_fn: RecommendFn,
    histories: Mapping[str, Sequence[str]],
    out_dir: str | Path,
    k: int,
    shard_index: int | None = None,
    num_shards: int | None = None,
    *,
    chunk_size: int = 256,
    model: str = "",
    adapter: str = "",
    item_tokenizer_hash: str = "",
    base_cache: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    scenario_users: Mapping[str, Sequence[str]] | None = None,
    split_fingerprint: str = "",
) -> BuildResult:
    """Compute and store the top-``k`` of this shard's users; finish the manifest if this was the last shard.

    ``shard_index``/``num_shards`` default to ``RANK``/``WORLD_SIZE`` (torchrun, deepspeed), else 0/1.
    ``base_cache``: a finished earlier build; users whose history hash is unchanged are copied from it
    instead of recomputed (incremental refresh), new users are computed, users absent from ``histories``
    are dropped. ``overwrite`` replaces a folder built with other settings instead of refusing.

    ``scenario_users`` (``{user: scenarios to serve}``, see ``inference.cache.scenarios``): a per-scenario cache,
    one top-K per (user, scenario) from the scenario-aware ``recommend_fn(user_ids, histories, scenarios=...)``;
    ``num_users`` then counts (user, scenario) pairs and the manifest lists the scenarios.
    ``split_fingerprint``: the dataset fingerprint of the split the histories came from, recorded in the manifest.
    """
    scenario_names = None
    if scenario_users is not None:
        from inference.cache.scenarios import expand_scenarios

        scenario_names = sorted({s for names in scenario_users.values() for s in names})
        histories, recommend_fn = expand_scenarios(histories, scenario_users, recommend_fn)
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    if chunk_size < 1:
        raise UserError(f"chunk_size must be >= 1, got {chunk_size}")
    shard_index, num_shards = layout.resolve_shard(shard_index, num_shards)
    user_ids, keys = _user_keys(histories)
    mine = layout.select_shard(user_ids, keys, shard_index, num_shards)  # sorted
    user_hashes = _validate_histories(histories, mine)  # this shard's users only
    out_dir = Path(out_dir)

    base_manifest = read_manifest(base_cache) if base_cache is not None else None
    config = {
        "format_version": layout.FORMAT_VERSION, "k": k, "model": model, "adapter": adapter,
        "item_tokenizer_hash": item_tokenizer_hash, "num_shards": num_shards, "chunk_size": chunk_size,
        "num_users": len(user_ids), "users_hash": layout.users_hash(keys),
        "base_version": base_manifest["version"] if base_manifest else None,
        "scenarios": scenario_names,
        "split_fingerprint": split_fingerprint,  # provenance: `cache publish --split_dir` must name the same data
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if base_manifest is not None:
        _check_reusable(base_cache, base_manifest, config)
    config = claim_config(open_location(out_dir), config, overwrite)

    chunks = [mine[i : i + chunk_size] for i in range(0, len(mine), chunk_size)]  # == layout.plan_shard
    shard_dir = out_dir / layout.shard_dir_name(shard_index, num_shards)
    shard_hash = layout.histories_hash(user_hashes)
    _check_shard_inputs(out_dir, shard_dir, shard_hash, overwrite)
    shard_dir.mkdir(parents=True, exist_ok=True)
    for stale in shard_dir.glob(".chunk-*.tmp"):  # temp files of a killed run: never renamed, never valid
        stale.unlink(missing_ok=True)
    reuse = {}
    if base_manifest is not None:
        own_keys = keys[keys % np.uint64(num_shards) == shard_index]
        base_shards = {int(s) for s in np.unique(own_keys % np.uint64(base_manifest["num_shards"]))}
        reuse = _load_reusable(base_cache, base_manifest, base_shards, user_hashes)

    result = BuildResult(out_dir, shard_index, num_shards, len(chunks), 0, 0, 0, None)
    bar = tqdm(chunks, desc=f"cache shard {shard_index}/{num_shards}", unit="chunk", disable=not progress)
    for chunk_index, users in enumerate(bar):
        path = shard_dir / layout.chunk_file_name(chunk_index)
        if path.is_file() and chunk_users(path) == {u: user_hashes[u] for u in users}:
            result.chunks_skipped += 1
            continue
        todo = [u for u in users if u not in reuse] if reuse else users
        if len(todo) == len(users):  # all computed: column-wise from the recommender's answer to the file
            recs: RecColumns | list[Recs] = recommend_columns(recommend_fn, users, [list(histories[u]) for u in users], k)
        else:
            computed = recommend_batch(recommend_fn, todo, [list(histories[u]) for u in todo], k) if todo else {}
            recs = [reuse[u] if u in reuse else computed[u] for u in users]
        write_chunk(path, users, user_hashes, recs)
        result.users_computed += len(todo)
        result.users_reused += len(users) - len(todo)
    if result.chunks_skipped:
        logger.info("shard %d: resumed, %d of %d chunks were already done", shard_index, result.chunks_skipped,
                    len(chunks))
    _mark_shard_done(shard_dir, shard_index, num_shards, chunks, shard_hash)
    result.manifest = finalize_cache(out_dir)
    return result


def finalize_cache(out_dir: str | Path | Location) -> dict[str, Any] | None:
    """Write ``manifest.json`` once every shard is done (idempotent); None while shards are missing."""
    loc = open_location(out_dir)
    config = json.loads(loc.read_text(layout.BUILD_CONFIG_NAME))
    shards = []
    for index in range(config["num_shards"]):
        done = f"{layout.shard_dir_name(index, config['num_shards'])}/{layout.SHARD_DONE_NAME}"
        if not loc.is_file(done):
            return None
        shards.append(json.loads(loc.read_text(done)))
    num_users = sum(s["num_users"] for s in shards)
    if num_users != config["num_users"]:
        raise RuntimeError(f"cache {loc.uri}: shards hold {num_users} users, the build expects {config['num_users']}")
    shard_hashes = [s.pop("histories_hash", None) for s in shards]  # each shard's own guard; the manifest has one
    if "histories_hash" not in config:  # the local engine's shards each hash their own users' histories
        if None in shard_hashes:
            raise UserError(f"cache {loc.uri}: {shards[shard_hashes.index(None)]['dir']}/{layout.SHARD_DONE_NAME} has "
                            "no histories_hash (an older build format); rebuild the cache (cache build --overwrite)")
        config = {**config, "histories_hash": layout.combined_histories_hash(shard_hashes)}
    manifest = {
        **config,
        "version": sha256_json(config)[:16],
        "num_rows": sum(s["num_rows"] for s in shards),
        "shards": shards,
    }
    write_json(loc, layout.MANIFEST_NAME, manifest)
    logger.info("cache %s complete: %d users, %d rows, version %s", loc.uri, num_users, manifest["num_rows"],
                manifest["version"])
    return manifest


def write_json(loc: Location, rel: str, obj: Any) -> None:
    """``recdata.io.atomic_write_json``'s format, committed with the location's protocol."""
    loc.write_once(rel, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))


def write_shard_done(loc: Location, shard_index: int, num_shards: int, files: list[dict[str, Any]],
                     histories_hash: str | None = None) -> None:
    """``_SHARD_DONE.json`` of a shard whose chunk ``files`` (name, num_users, num_rows, sha256, in order) exist;
    ``histories_hash``: ``layout.histories_hash`` of the shard's users, what a rerun of the shard checks."""
    shard = layout.shard_dir_name(shard_index, num_shards)
    done = {"index": shard_index, "dir": shard, "num_users": sum(f["num_users"] for f in files),
            "num_rows": sum(f["num_rows"] for f in files), "files": files}
    if histories_hash is not None:
        done["histories_hash"] = histories_hash
    write_json(loc, f"{shard}/{layout.SHARD_DONE_NAME}", done)


def _user_keys(histories: Mapping[str, Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """Every user id (checked: non-empty strings) and its ``layout.user_keys``: the one pass over all users."""
    if not histories:
        raise UserError("histories is empty: there is no user to build a cache for")
    user_ids = list(histories)
    try:
        if "" in histories:
            raise TypeError
        return user_ids, layout.user_keys(user_ids)
    except (AttributeError, TypeError):
        bad = next(u for u in user_ids if not isinstance(u, str) or not u)
        raise UserError(f"user ids must be non-empty strings, got {bad!r}") from None


def _validate_histories(histories: Mapping[str, Sequence[str]], users: Sequence[str]) -> dict[str, str]:
    """``{user: history_hash}`` of ``users`` (this shard's), refusing a history that is not a list of item ids."""
    hashes = {}
    for user in users:
        history = histories[user]
        if isinstance(history, str) or not all(map(isinstance, history, itertools.repeat(str))):
            raise UserError(f"history of user {user!r} must be a list of item id strings, got {history!r:.80}")
        hashes[user] = layout.history_hash(history)
    return hashes


def _check_shard_inputs(out_dir: Path, shard_dir: Path, shard_hash: str, overwrite: bool) -> None:
    """A finished shard whose users had other histories is refused (or, with ``overwrite``, recomputed): the
    shards share only the user set, so each one pins its own users' histories in its ``_SHARD_DONE.json``."""
    done = shard_dir / layout.SHARD_DONE_NAME
    if not done.is_file():
        return  # unfinished: every chunk is checked against its users' history hashes before it is kept
    stored = json.loads(done.read_text(encoding="utf-8")).get("histories_hash")
    if stored == shard_hash:
        return
    if not overwrite:
        raise CacheMismatchError(
            f"{shard_dir} holds a shard built from other histories of its users (histories_hash: cached "
            f"{stored!r} vs now {shard_hash!r}); pass --overwrite to recompute it (with several shard processes, "
            "delete the folder before launching instead) or choose another out_dir")
    logger.warning("overwriting shard %s (its users' histories changed)", shard_dir)
    remove_build_files(open_location(out_dir), shard_dir.name)


def recommend_batch(recommend_fn: RecommendFn, users: list[str], histories: list[list[str]], k: int) -> dict[str, Recs]:
    """Call ``recommend_fn`` and validate its answer, so a bad recommender never writes a bad cache."""
    return dict(zip(users, recommend_columns(recommend_fn, users, histories, k).recs(), strict=True))


def recommend_columns(recommend_fn: RecommendFn, users: list[str], histories: list[list[str]], k: int) -> RecColumns:
    """``recommend_batch`` column-wise, what a chunk file is written from: no Python list per user."""
    return RecColumns.from_answer(users, recommend_fn(users, histories), k)


def claim_config(loc: Location, config: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """Create ``build_config.json`` exactly once, or check that the existing one matches (else refuse/overwrite).

    Local folders use an atomic no-replace link, so concurrent shard processes agree on one config; other
    filesystems (one Ray driver per build) read, compare and write once.
    """
    local = loc.local_dir
    if local is not None:
        return _claim_local_config(local, config, overwrite)
    if loc.is_file(layout.BUILD_CONFIG_NAME):
        stored = json.loads(loc.read_text(layout.BUILD_CONFIG_NAME))
        if _config_diffs(stored, config, loc.uri, overwrite) is None:
            return stored
        remove_build_files(loc)
    elif loc.has_entries():
        raise UserError(f"{loc.uri} is not empty and holds no cache build; choose an empty or new out_dir")
    write_json(loc, layout.BUILD_CONFIG_NAME, config)
    return config


def remove_build_files(loc: Location, shard: str | None = None) -> None:
    """Delete what cache builds wrote in ``loc`` (``layout.is_build_file``), never a user's other files: the
    manifest first (the folder is no longer a finished cache), then the files of ``shard`` (a shard folder's name)
    only, or else of every shard folder (removing those left empty) and the build config. Local folders and URIs."""
    fs = loc.fs

    def entries(rel: str) -> list[pafs.FileInfo]:
        return fs.get_file_info(pafs.FileSelector(loc.path(rel), allow_not_found=True, recursive=False))

    def remove_files(rel: str, in_shard: bool) -> None:
        for info in entries(rel):
            if info.type == pafs.FileType.File and layout.is_build_file(info.base_name, in_shard):
                fs.delete_file(info.path)

    if loc.is_file(layout.MANIFEST_NAME):
        fs.delete_file(loc.path(layout.MANIFEST_NAME))
    if shard is not None:
        remove_files(shard, in_shard=True)
        return
    for info in entries(""):
        if info.type == pafs.FileType.Directory and layout.is_shard_dir_name(info.base_name):
            remove_files(info.base_name, in_shard=True)
            if not entries(info.base_name):
                fs.delete_dir(info.path)
    remove_files("", in_shard=False)


def _config_diffs(stored: dict[str, Any], config: dict[str, Any], where: str, overwrite: bool) -> dict | None:
    """None when ``stored`` has the same identity; raise unless ``overwrite``; else the differences."""
    diffs = {key: (stored.get(key), config[key]) for key in IDENTITY_KEYS if stored.get(key) != config[key]}
    if not diffs:
        return None
    if not overwrite:
        detail = ", ".join(f"{key}: cached {old!r} vs now {new!r}" for key, (old, new) in diffs.items())
        raise CacheMismatchError(
            f"{where} holds a cache built with other settings or inputs ({detail}); pass --overwrite to "
            "replace it (with several shard processes, delete the folder before launching instead) or "
            "choose another out_dir"
        )
    logger.warning("overwriting cache %s (%s)", where, ", ".join(diffs))
    return diffs


def _claim_local_config(out_dir: Path, config: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    path = out_dir / layout.BUILD_CONFIG_NAME
    for _ in range(3):
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if _config_diffs(stored, config, str(out_dir), overwrite) is None:
                return stored
            remove_build_files(open_location(out_dir))
        elif out_dir.is_dir() and any(not p.name.startswith(".") for p in out_dir.iterdir()):
            raise UserError(f"{out_dir} is not empty and holds no cache build; choose an empty or new out_dir")
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".{layout.BUILD_CONFIG_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        try:
            os.link(tmp, path)  # fails if another process created it first: then compare with theirs
            return config
        except FileExistsError:
            continue
        finally:
            tmp.unlink(missing_ok=True)
    raise RuntimeError(f"could not claim {path}: it keeps changing under concurrent writers")


def _check_reusable(base_cache: str | Path, base: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    diffs = [f"{key}: base {base.get(key)!r} vs now {config[key]!r}" for key in REUSE_KEYS if base.get(key) != config[key]]
    if diffs:
        raise CacheMismatchError(
            f"base cache {base_cache} cannot be refreshed incrementally ({'; '.join(diffs)}): its rows come from "
            "another model or setting; run a full build without --base_cache"
        )


def _load_reusable(base_cache: str | Path, base_manifest: Mapping[str, Any], base_shards: set[int],
                   user_hashes: Mapping[str, str]) -> dict[str, Recs]:
    """Row sets of the base cache for this shard's users (``user_hashes``) whose history is unchanged, read from
    ``base_shards`` only: the base shards that can hold them (``shard_of`` with the base's shard count)."""
    reuse = {}
    for user, hist_hash, recs in iter_shards(base_cache, base_shards, base_manifest):
        if user_hashes.get(user) == hist_hash:
            reuse[user] = recs
    logger.info("refresh from %s (%d of its %d shards read): %d of %d users unchanged", base_cache, len(base_shards),
                base_manifest["num_shards"], len(reuse), len(user_hashes))
    return reuse


def _mark_shard_done(shard_dir: Path, shard_index: int, num_shards: int, chunks: list[list[str]],
                     shard_hash: str) -> None:
    files = []
    for chunk_index, users in enumerate(chunks):
        path = shard_dir / layout.chunk_file_name(chunk_index)
        files.append({"name": path.name, "num_users": len(users), "num_rows": pq.read_metadata(path).num_rows,
                      "sha256": sha256_file(path)})
    write_shard_done(open_location(shard_dir.parent), shard_index, num_shards, files, shard_hash)
