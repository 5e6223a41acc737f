"""``build_cache_ray``: the cache build on a Ray cluster, exactly once per user, same output as ``build_cache``.

Ray Data does the distribution; exactly-once comes from our deterministic chunk plan, not from Ray::

    histories (Parquet / Arrow) --map_batches(tasks)--> (user_id, history_hash) --driver--> ChunkPlan
        --> claim build_config.json; describe chunk files already there (rerun): keep those that hold their plan
    histories --map_batches(assign chunk, drop done chunks)--> repartition(keys=chunk) --> pack one row per chunk
        --> materialize --map_batches(ChunkWriter actors, batch_size=1)--> one description row per chunk
    driver: _SHARD_DONE.json + manifest.json (last)

A ``ChunkWriter`` actor loads the model once (``recommender_factory()``), checks a chunk against the plan
(user count + ``users_digest``), skips it if its file already holds exactly those users (a retried task after
an actor died), else computes it with the same ``recommend_columns`` as the local engine and commits it under its
write-once name (``Location.write_once``). A killed actor is restarted by Ray and its task retried
(``max_restarts``/``max_task_retries`` are -1 for Ray Data actor pools); a rerun after the whole job died
describes the chunks already committed and computes only the others. A lost node fails the compute stage fast
(the packed chunks it held are not rebuilt through the shuffle's lineage, whose re-run can deadlock on a busy
cluster) and the build resumes itself the same way on the surviving nodes, up to ``COMPUTE_ATTEMPTS`` times.
Chunk files are byte-identical to the local engine's (one shard) for the same model, so the two engines can resume
each other's builds.

Requires the ``ray`` extra (``pip install 'alignrec[ray]'``); imported only when ``--engine ray`` is used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from inference.cache import layout
from inference.cache.build import (
    BuildResult,
    RecommendFn,
    claim_config,
    finalize_cache,
    recommend_columns,
    write_shard_done,
)
from inference.cache.location import Location, open_location
from inference.cache.plan import ChunkPlan, chunk_of
from inference.cache.ray_losses import lost_to_the_cluster
from inference.cache.shards import chunk_users, encode_chunk
from recdata.errors import ConfigError, UserError

__all__ = ["RayOptions", "assign_batch", "build_cache_ray", "hash_batch", "histories_table", "pack_batch"]

logger = logging.getLogger(__name__)

SHARD_INDEX, NUM_SHARDS = 0, 1  # Ray spreads the chunks; the layout is the local engine's single shard
COMPUTE_ATTEMPTS = 3  # executions of the compute stage when a node (its actors, its blocks) is lost mid-build
RESULT_SCHEMA = pa.schema([("chunk", pa.int64()), ("name", pa.string()), ("num_users", pa.int64()),
                           ("num_rows", pa.int64()), ("sha256", pa.string()), ("computed", pa.bool_())])


@dataclass(frozen=True)
class RayOptions:
    """How the build uses the cluster (``alignrec cache build --engine ray`` flags of the same names)."""

    address: str = "local"  # 'local': start a cluster on this machine; 'auto': join the running one; or host:port
    num_actors: int = 1  # model replicas (one per GPU on a GPU cluster)
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0  # also torch's thread count inside each actor
    progress: bool = True

    def __post_init__(self) -> None:
        if self.num_actors < 1:
            raise ConfigError(f"num_actors must be >= 1, got {self.num_actors}")
        if self.gpus_per_actor < 0 or self.cpus_per_actor <= 0:
            raise ConfigError(f"gpus_per_actor must be >= 0 and cpus_per_actor > 0, got {self.gpus_per_actor}, "
                              f"{self.cpus_per_actor}")


def histories_table(histories: Mapping[str, Sequence[str]]) -> pa.Table:
    """``{user_id: [item_id, ...]}`` as the Arrow table the Ray engine reads (columns ``user_id``, ``history``)."""
    return pa.table({"user_id": pa.array(list(histories), pa.string()),
                     "history": pa.array([list(h) for h in histories.values()], pa.list_(pa.string()))})


def build_cache_ray(
    recommender_factory: Callable[[], RecommendFn],
    histories: str | os.PathLike | pa.Table | Mapping[str, Sequence[str]],
    out_dir: str | os.PathLike | Location,
    k: int,
    *,
    options: RayOptions | None = None,
    chunk_size: int = 256,
    model: str = "",
    adapter: str = "",
    item_tokenizer_hash: str = "",
    overwrite: bool = False,
    histories_filesystem: Any = None,
    filesystem: Any = None,
) -> BuildResult:
    """Build (or finish) the top-``k`` cache of every user in ``histories`` on Ray; returns the local engine's result.

    ``histories``: a Parquet file / folder / URI with columns ``user_id`` (string) and ``history`` (list of
    item-id strings), read in blocks by Ray tasks; or an Arrow table / dict already in memory (small builds).
    ``recommender_factory``: a picklable zero-argument callable run once in each actor, returning the
    ``recommend_fn(user_ids, histories)`` (e.g. ``ModelRecommenderFactory``). ``out_dir``: a folder or URI
    (``filesystem``: a ``pyarrow.fs.FileSystem`` it lives in, e.g. a ``SubTreeFileSystem``).
    """
    import ray

    options = options or RayOptions()
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    started = _connect(options.address)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = options.progress
        loc = open_location(out_dir, filesystem)
        source = _Source(histories, histories_filesystem)
        t0 = time.perf_counter()
        plan, users_hash = _plan(source, chunk_size)
        logger.info("plan: %d users in %d chunks of %d (%.1f s)", plan.num_users, plan.num_chunks, chunk_size,
                    time.perf_counter() - t0)
        config = {
            "format_version": layout.FORMAT_VERSION, "k": k, "model": model, "adapter": adapter,
            "item_tokenizer_hash": item_tokenizer_hash, "num_shards": NUM_SHARDS, "chunk_size": chunk_size,
            "num_users": plan.num_users, "users_hash": users_hash, "histories_hash": plan.histories_hash,
            "base_version": None,
            "scenarios": None,  # per-scenario caches are built by the local engine only (for now)
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        claim_config(loc, config, overwrite)
        shard = layout.shard_dir_name(SHARD_INDEX, NUM_SHARDS)
        done = _describe_existing(loc, shard, plan)
        todo = np.ones(plan.num_chunks, dtype=bool)
        todo[list(done)] = False
        result = BuildResult(Path(loc.uri) if loc.local_dir else loc.uri, SHARD_INDEX, NUM_SHARDS, plan.num_chunks,
                             len(done), 0, 0, None)
        for attempt in range(1, COMPUTE_ATTEMPTS + 1):
            if not todo.any():
                break
            logger.info("computing %d of %d chunks on %d actor(s)", int(todo.sum()), plan.num_chunks,
                        options.num_actors)
            try:
                rows = _compute(source, plan, todo, loc, shard, k, recommender_factory, options)
            except Exception as exc:
                if attempt == COMPUTE_ATTEMPTS or not lost_to_the_cluster(exc):
                    raise
                logger.warning("compute attempt %d of %d lost part of the cluster (%s); computing the chunks not "
                               "committed yet again", attempt, COMPUTE_ATTEMPTS, type(exc).__name__)
                done.update(_describe_existing(loc, shard, plan))  # what the lost attempt committed stays
                todo[list(done)] = False
                continue
            for row in rows:
                done[row["chunk"]] = row
                result.users_computed += row["num_users"] if row["computed"] else 0
            todo[:] = False
        missing = [i for i in range(plan.num_chunks) if i not in done]
        if missing:
            raise RuntimeError(f"cache {loc.uri}: chunks {missing[:5]} came back from no actor; rerun to finish them")
        files = [{key: done[i][key] for key in ("name", "num_users", "num_rows", "sha256")}
                 for i in range(plan.num_chunks)]
        write_shard_done(loc, SHARD_INDEX, NUM_SHARDS, files, plan.histories_hash)
        result.manifest = finalize_cache(loc)
        return result
    finally:
        if started:
            ray.shutdown()


class ChunkWriter:
    """Ray Data callable class: one model per actor; a batch of packed chunks in, one description row per chunk out."""

    def __init__(self, recommender_factory: Callable[[], RecommendFn], loc: Location, shard: str, k: int,
                 num_users: int, chunk_size: int, digests: np.ndarray, num_threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, num_threads))  # Ray sets OMP_NUM_THREADS too; torch may have read it earlier
        self.fn = recommender_factory()
        self.loc, self.shard, self.k = loc, shard, k
        self.num_users, self.chunk_size, self.digests = num_users, chunk_size, digests

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [self._chunk(int(c), u, h, s) for c, u, h, s in zip(
            batch["chunk"].to_pylist(), batch["user_ids"].to_pylist(), batch["histories"].to_pylist(),
            batch["history_hashes"].to_pylist(), strict=True)]
        return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)

    def _chunk(self, chunk: int, users: list[str], histories: list[list[str]], hashes: list[str]) -> dict[str, Any]:
        user_hashes = dict(zip(users, hashes, strict=True))
        want = min(self.chunk_size, self.num_users - chunk * self.chunk_size)
        if len(user_hashes) != want or layout.users_digest(user_hashes) != self.digests[chunk]:
            raise RuntimeError(f"chunk {chunk} arrived with {len(user_hashes)} users, the plan has {want} (or other "
                               "users/histories); the input changed during the build: rerun it")
        rel = f"{self.shard}/{layout.chunk_file_name(chunk)}"
        if self.loc.is_file(rel):  # committed by an earlier attempt of this task (its actor died after writing)
            with self.loc.open_input_file(rel) as f:
                if chunk_users(f, name=self.loc.display(rel)) == user_hashes:
                    return _description(chunk, rel, self.loc.read_bytes(rel), computed=False)
        data, _ = encode_chunk(users, user_hashes, recommend_columns(self.fn, users, histories, self.k))
        self.loc.write_once(rel, data)
        return _description(chunk, rel, data, computed=True)


def _description(chunk: int, rel: str, data: bytes, computed: bool) -> dict[str, Any]:
    meta = pq.read_metadata(pa.BufferReader(data))
    users = chunk_users(pa.BufferReader(data)) or {}
    return {"chunk": chunk, "name": rel.rsplit("/", 1)[-1], "num_users": len(users), "num_rows": meta.num_rows,
            "sha256": hashlib.sha256(data).hexdigest(), "computed": computed}


class _Source:
    """The histories input, re-readable as a Ray dataset (twice: plan, then work)."""

    def __init__(self, histories: Any, filesystem: Any) -> None:
        self.table: pa.Table | None = None
        self.loc: Location | None = None
        if isinstance(histories, Mapping):
            self.table = histories_table(histories)
        elif isinstance(histories, pa.Table):
            self.table = histories
        else:
            self.loc = open_location(histories, filesystem)
            if not (self.loc.is_file("") or self.loc.is_dir()):
                raise UserError(f"histories {self.loc.uri} not found: give a Parquet file or folder with columns "
                                "user_id (string) and history (list of item ids)")
        self.name = "histories" if self.loc is None else f"histories {self.loc.uri}"

    def dataset(self):
        import ray

        if self.table is not None:
            ds = ray.data.from_arrow(self.table.select(["user_id", "history"]))
        else:
            fs = None if self.loc.local_dir is not None else self.loc.fs
            ds = ray.data.read_parquet(self.loc.root, filesystem=fs, columns=["user_id", "history"])
        return ds


def _plan(source: _Source, chunk_size: int) -> tuple[ChunkPlan, str]:
    """The chunk plan and the build's ``users_hash`` (the identity the local engine computes too)."""
    import ray

    hashed = source.dataset().map_batches(hash_batch, batch_format="pyarrow", fn_kwargs={"source": source.name})
    tables = ray.get(hashed.to_arrow_refs())
    table = pa.concat_tables(tables) if tables else pa.table({"user_id": pa.array([], pa.string()),
                                                              "history_hash": pa.array([], pa.string()),
                                                              "user_key": pa.array([], pa.uint64())})
    plan = ChunkPlan.from_arrays(table["user_id"], table["history_hash"], chunk_size, source=source.name)
    return plan, layout.users_hash(table["user_key"].to_numpy())


def hash_batch(batch: pa.Table, source: str) -> pa.Table:
    """(user_id, history_hash, user_key) of a block (``layout.user_keys``: the users' identity, computed in the
    Ray tasks, not on the driver); refuses histories that are not lists of item-id strings."""
    histories = batch["history"]
    if not (pa.types.is_list(histories.type) or pa.types.is_large_list(histories.type)) or not pa.types.is_string(
            histories.type.value_type) and not pa.types.is_large_string(histories.type.value_type):
        raise UserError(f"{source}: column history must be a list of item-id strings, got {histories.type}")
    if histories.null_count or pc.list_flatten(histories).null_count:
        raise UserError(f"{source}: a history (or an item id in one) is null; use an empty list for no history")
    hashes = [layout.history_hash(h) for h in histories.to_pylist()]
    users = batch["user_id"].cast(pa.string())
    keys = layout.user_keys([u or "" for u in users.to_pylist()])  # null/empty ids: refused by the plan
    return pa.table({"user_id": users, "history_hash": pa.array(hashes, pa.string()),
                     "user_key": pa.array(keys, pa.uint64())})


def assign_batch(batch: pa.Table, first_users: np.ndarray, todo: np.ndarray) -> pa.Table:
    """Add each user's chunk (and history hash) and keep only the chunks still to compute."""
    chunks = chunk_of(first_users, batch["user_id"].to_numpy(zero_copy_only=False))
    keep = todo[chunks]
    batch = batch.filter(pa.array(keep))
    hashes = [layout.history_hash(h) for h in batch["history"].to_pylist()]
    return batch.append_column("chunk", pa.array(chunks[keep], pa.int64())).append_column(
        "history_hash", pa.array(hashes, pa.string()))


def pack_batch(block: pa.Table) -> pa.Table:
    """A block holding whole chunks -> one row per chunk: users sorted (the local engine's order)."""
    block = block.take(pc.sort_indices(block, sort_keys=[("chunk", "ascending"), ("user_id", "ascending")]))
    chunks = block["chunk"].to_numpy()
    starts = np.flatnonzero(np.r_[True, chunks[1:] != chunks[:-1]]) if len(chunks) else np.empty(0, np.int64)
    offsets = pa.array(np.r_[starts, len(chunks)].astype(np.int32))
    history = block["history"].combine_chunks()
    return pa.table({
        "chunk": pa.array(chunks[starts], pa.int64()),
        "user_ids": pa.ListArray.from_arrays(offsets, block["user_id"].combine_chunks()),
        "histories": pa.ListArray.from_arrays(offsets, history),
        "history_hashes": pa.ListArray.from_arrays(offsets, block["history_hash"].combine_chunks()),
    })


def _compute(source: _Source, plan: ChunkPlan, todo: np.ndarray, loc: Location, shard: str, k: int,
             factory: Callable[[], RecommendFn], options: RayOptions) -> list[dict[str, Any]]:
    import ray

    num_todo = int(todo.sum())
    packed = (source.dataset()
              .map_batches(assign_batch, batch_format="pyarrow",
                           fn_kwargs={"first_users": plan.first_users(), "todo": todo})
              .repartition(_num_partitions(num_todo, options.num_actors), keys=["chunk"], sort=True)
              # max_retries=0: a packed block lost with its node fails the actors' task (ObjectLostError) rather
              # than being rebuilt through the shuffle's lineage, whose re-run can deadlock when the actors hold
              # the surviving CPUs (a reduce task blocks in ray.get holding one while the map task it waits for
              # queues for another); build_cache_ray then computes the chunks not committed yet again.
              .map_batches(pack_batch, batch_size=None, batch_format="pyarrow", max_retries=0)
              .materialize())  # the shuffle finishes (and frees its CPUs) before the actors take theirs
    described = packed.map_batches(
        ChunkWriter, batch_size=1, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=options.num_actors),
        num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None,
        fn_constructor_kwargs={"recommender_factory": factory, "loc": loc, "shard": shard, "k": k,
                               "num_users": plan.num_users, "chunk_size": plan.chunk_size,
                               "digests": np.asarray(plan.digests), "num_threads": int(options.cpus_per_actor)})
    tables = ray.get(described.to_arrow_refs())
    rows = pa.concat_tables(tables).to_pylist() if tables else []
    seen: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["chunk"] in seen and seen[row["chunk"]]["sha256"] != row["sha256"]:
            rel = f"{shard}/{row['name']}"  # two attempts committed different bytes: describe what is stored
            row = _description(row["chunk"], rel, loc.read_bytes(rel), computed=True)
        seen[row["chunk"]] = row
    return list(seen.values())


def _num_partitions(num_chunks: int, num_actors: int) -> int:
    """Enough partitions to feed every actor, each a block of at most ~64 whole chunks (well under Ray's 128 MB)."""
    return max(1, min(num_chunks, max(4 * num_actors, -(-num_chunks // 64))))


def _describe_existing(loc: Location, shard: str, plan: ChunkPlan) -> dict[int, dict[str, Any]]:
    """Chunk files a killed run committed, described in Ray tasks; only those holding their planned users count."""
    import ray

    names = loc.list_names(shard, prefix="chunk-", suffix=".parquet")
    if not names:
        return {}
    ds = ray.data.from_items([{"name": n} for n in names]).map_batches(
        _describe_batch, batch_format="pyarrow", fn_kwargs={"loc": loc, "shard": shard})
    done = {}
    for row in pa.concat_tables(ray.get(ds.to_arrow_refs())).to_pylist():
        index = int(row["name"][len("chunk-"):-len(".parquet")])
        if index < plan.num_chunks and row["digest"] == plan.digests[index]:
            done[index] = {**row, "chunk": index, "computed": False}
    logger.info("resume: %d of %d chunks already committed in %s", len(done), plan.num_chunks, loc.uri)
    return done


def _describe_batch(batch: pa.Table, loc: Location, shard: str) -> pa.Table:
    rows = []
    for name in batch["name"].to_pylist():
        data = loc.read_bytes(f"{shard}/{name}")
        users = chunk_users(pa.BufferReader(data), name=loc.display(f"{shard}/{name}"))
        rows.append({"name": name, "digest": layout.users_digest(users) if users is not None else None,
                     "num_users": len(users or {}), "sha256": hashlib.sha256(data).hexdigest(),
                     "num_rows": pq.read_metadata(pa.BufferReader(data)).num_rows if users is not None else 0})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("name", pa.string()), ("digest", pa.string()), ("num_users", pa.int64()), ("sha256", pa.string()),
        ("num_rows", pa.int64())]))


def _connect(address: str | None) -> bool:
    """Join or start a cluster unless this process already did; True when we started it (and stop it after)."""
    import ray

    if ray.is_initialized():
        return False
    if address in (None, "", "local"):
        ray.init(address="local", include_dashboard=False, log_to_driver=True)
    else:
        check_reachable(address)
        ray.init(address=address)
    return True


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ``host:port`` / ``ray://host:port`` address must accept a TCP connection within ``timeout_s``: a dead
    address is one line naming ``--ray_address`` in seconds, not minutes of Ray's own retries. ``auto`` is left to
    Ray (it reads the local cluster file and fails fast)."""
    import socket

    if address == "auto":
        return
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray_address {address!r} is not 'local', 'auto', host:port or ray://host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise UserError(f"--ray_address {address}: nothing answers at {host}:{port} ({exc.strerror or exc}); start "
                        "the cluster (`ray start --head`), fix the address, or use --ray_address local") from exc
