"""Redis as a publish target: a versioned key space in buckets, an atomic pointer switch, old versions unlinked.

For teams whose services already read Redis, one server or a Redis Cluster (``?cluster=true`` in the URL,
``parse_location``). Key space (``P`` = the ``prefix`` query parameter of the URL, default ``alignrec``; several
caches can share one Redis under different prefixes; ``{...}`` is a Redis Cluster hash tag, so a version's small
keys share one slot and its buckets spread over the cluster)::

    P:current                      the live version name, e.g. v-20261201T101010123456Z-<build version>
    P:versions                     sorted set of the published versions still kept (score: publish time)
    P:retired                      sorted set of versions past keep_versions (score: when their grace ends)
    P:v:{<version>}:meta           JSON metadata of the build (the SQLite ``meta`` table, ``row_format`` included)
    P:v:{<version>}:layout         JSON {"buckets": B}
    P:v:{<version>}:catalogue      list of catalogue parts: the items' JSON strings (``inference.cache.rows``)
    P:v:{<version>}:fallback       JSON [[item_id, score], ...]: the popular-items fallback for unknown users
    P:v:{<version>}:scenario_fallback  per-scenario versions only: JSON {scenario: [[item_id, score], ...]}
    P:v:{<version>:<b>}:recs       bucket b < B: hash user_id -> binary row (catalogue indices + float16 scores),
                                   plus the field "\\x00version" (the version name) that marks the bucket present

A user's bucket is ``crc32(user_id) % B`` (``bucket_of``), with about ``BUCKET_USERS`` users per bucket, so no key
is big: writing, reading and dropping a version never stalls Redis on one huge hash. A per-scenario version
keys its hash fields ``user + "\\x1f" + scenario``, like SQLite.

A publish writes the new version's keys with a 24 h TTL (a killed publish cleans up after itself; a failed one
unlinks them at once), makes them persistent, then points ``P:current`` at the version (one ``SET``: readers
see the old or the new version, never a mix). Versions beyond ``keep_versions`` are retired: out of
``P:versions``, into ``P:retired`` with the time their ``grace_s`` ends, so a service that read the old pointer a
moment ago still finds its version; every later publish drops retired versions whose grace is over with
``UNLINK`` (freed off Redis's main thread), and a TTL of ``grace_s`` + ``RETIRE_SAFETY_S`` removes them if no
publish comes. Lookups are one pipelined round trip: ``GET P:current`` and one ``HMGET`` per bucket touched (each
asking for the marker field too), so every row comes from the one version the reader holds, and a bucket that
is gone (its marker missing) raises ``VersionGoneError`` instead of looking like unknown users; the server's
async lookups (``AsyncRows``) share that round trip between the requests that arrive together.

On a Redis Cluster nothing changes but the client (``redis.cluster.RedisCluster``, and
``redis.asyncio.cluster.RedisCluster`` for the server): no command names two keys, no pipeline is a ``MULTI``,
and the cluster client splits each pipeline per node (one round trip per node touched, in parallel). The swap
stays atomic because it never relied on a transaction: a version's keys are written completely before the
pointer names it and never change afterwards, a lookup reads only the keys of the version it holds, and the
pointer is one key (one ``SET``, on one node). The pointer read with the rows only tells the reader to move on;
a bucket dropped under it (its marker missing) raises ``VersionGoneError``, so a batch answer comes whole from one
version on a cluster as on one server.

Over 400 lines because the writer (publish, pointer switch, retire and unlink) and the reader of the same key
layout are one protocol; split, the layout would be written twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from inference.cache.backends import CacheStore, StoreVersion, VersionGoneError
from inference.cache.publish_rows import RowEncoder, encoded_chunks
from inference.cache.rows import ROW_FORMAT_KEY, RowFormat, decode_catalogue, encode_catalogue
from inference.cache.shards import scan_cache, verify_cache
from inference.cache.store import fallback_items, scenario_fallbacks, version_meta, version_name
from recdata.errors import ConfigError, InputFileError, UserError

__all__ = ["AsyncRows", "RedisLocation", "RedisStore", "bucket_of", "parse_location", "publish_cache_redis"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "alignrec"
PENDING_TTL_MS = 24 * 3600 * 1000  # an unfinished version expires by itself if its publish dies
RETIRE_SAFETY_S = 600.0  # a retired version's TTL past its grace, for when no later publish unlinks it
WRITE_BATCH = 5_000
BUCKET_USERS = 2_048  # users per bucket (about 200 KB at K = 20)
MAX_BUCKETS = 16_384  # one per Redis Cluster slot at most
MARKER = "\x00version"  # field present in every bucket of a version (never a user id: publish checks)
URL_FORM = "redis://host:port/db[?prefix=P] (a Redis Cluster: redis://any-node:port/0?cluster=true[&prefix=P])"
FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def bucket_count(num_rows: int) -> int:
    return max(1, min(MAX_BUCKETS, -(-num_rows // BUCKET_USERS)))


def bucket_of(key: str, buckets: int) -> int:
    """The bucket of a row key (stable across processes and machines)."""
    return zlib.crc32(key.encode("utf-8")) % buckets


def pack_command(args: Sequence[bytes]) -> bytes:
    """One command in the Redis protocol (RESP): ``*<n>``, then ``$<length>`` and each argument."""
    return b"".join([b"*%d\r\n" % len(args), *[b"$%d\r\n%s\r\n" % (len(a), a) for a in args]])


@dataclass(frozen=True)
class VersionKeys:
    """The keys of one version."""

    meta: str
    layout: str
    catalogue: str
    fallback: str
    scenario_fallback: str
    buckets: tuple[str, ...]

    def all(self) -> tuple[str, ...]:
        return (self.meta, self.layout, self.catalogue, self.fallback, self.scenario_fallback, *self.buckets)


@dataclass(frozen=True)
class RedisLocation:
    """A store URL taken apart: what redis-py connects to, and the two parameters that are ours."""

    server_url: str  # the URL without ``prefix`` and ``cluster`` (redis-py's ``from_url`` reads every other one)
    prefix: str
    cluster: bool


def parse_location(url: str) -> RedisLocation:
    """``redis://host:port/db`` (also ``rediss://``, ``unix://``) with our query parameters: ``prefix=P`` (the key
    prefix, default ``alignrec``) and ``cluster=true`` (a Redis Cluster: the host is any one node, or the cluster's
    configuration endpoint; the client discovers the others; db must be 0, TCP only). ``UserError`` naming the
    URL and the form otherwise."""
    base, _, query_text = url.partition("?")
    query = parse_qsl(query_text)
    own: dict[str, str] = {}
    for key, value in query:  # the first of a repeated parameter counts
        if key in ("prefix", "cluster"):
            own.setdefault(key, value)
    flag = own.get("cluster", "false").lower()
    if flag not in FLAGS:
        raise UserError(f"{url}: cluster={own['cluster']!r} is not a boolean; write cluster=true or leave it out "
                        f"({URL_FORM})")
    rest = urlencode([(k, v) for k, v in query if k not in own])
    server_url = f"{base}?{rest}" if rest else base  # not urlunsplit: it would turn unix:///path into unix:/path
    location = RedisLocation(server_url, own.get("prefix", DEFAULT_PREFIX), FLAGS[flag])
    from redis.connection import parse_url

    try:  # no host, a bad port or db number: the URL, not the server
        options = parse_url(server_url)
        if not options.get("host") and not options.get("path"):  # redis-py would quietly take localhost:6379
            raise ValueError("no host")
    except ValueError as exc:
        raise UserError(f"{url} is not a usable Redis URL ({exc}); write it as {URL_FORM}") from None
    if location.cluster:
        if "path" in options:
            raise UserError(f"{url}: a Redis Cluster is reached over TCP, not a unix socket; write it as {URL_FORM}")
        if options.get("db", 0) != 0:
            raise UserError(f"{url}: a Redis Cluster has only database 0 (got {options['db']}); keep several caches "
                            f"apart with prefix=P instead: {URL_FORM}")
    return location


class RedisStore(CacheStore):
    """A store URL (``parse_location``: one server or a Redis Cluster): the key space described above."""

    lookup_checks_pointer = True

    def __init__(self, url: str, socket_timeout_s: float = 5.0):
        try:
            import redis
            import redis.cluster
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(f"reading {url} needs the redis client: pip install 'alignrec[serve]'") from exc
        parsed = parse_location(url)
        self.prefix, self.server_url, self.cluster = parsed.prefix, parsed.server_url, parsed.cluster
        self.location = url
        self.socket_timeout_s = socket_timeout_s
        timeouts = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": socket_timeout_s}
        # The cluster client asks the node for the slot map now: an unreachable cluster fails here.
        client_class = redis.cluster.RedisCluster if self.cluster else redis.Redis
        self.client = client_class.from_url(self.server_url, **timeouts)
        self.current_key = f"{self.prefix}:current"
        self.versions_key = f"{self.prefix}:versions"
        self.retired_key = f"{self.prefix}:retired"
        self.lock_key = f"{self.prefix}:publish-lock"

    def keys(self, name: str, buckets: int = 0) -> VersionKeys:
        """The keys of version ``name`` (``buckets`` of them holding rows)."""
        base = f"{self.prefix}:v:{{{name}}}"
        return VersionKeys(f"{base}:meta", f"{base}:layout", f"{base}:catalogue", f"{base}:fallback",
                           f"{base}:scenario_fallback",
                           tuple(f"{self.prefix}:v:{{{name}:{b}}}:recs" for b in range(buckets)))

    def legacy_keys(self, name: str) -> tuple[str, ...]:
        """Keys of a version published by an earlier alignrec (one JSON hash), dropped like the others."""
        base = f"{self.prefix}:v:{name}"
        return f"{base}:recs", f"{base}:meta", f"{base}:fallback", f"{base}:scenario_fallback"

    def version_keys(self, name: str) -> VersionKeys:
        """Every key of a stored version (its bucket count read from its layout; none when it has no layout)."""
        layout = self.client.get(self.keys(name).layout)
        return self.keys(name, json.loads(layout)["buckets"] if layout else 0)

    def async_rows(self, max_connections: int = 64) -> AsyncRows:
        """Coalescing async row lookups (``AsyncRows``) over at most ``max_connections`` connections (per node on a
        cluster; a lookup beyond them waits for a free one, at most the socket timeout). Create and use it on one
        loop."""
        import redis.asyncio as aioredis

        if self.cluster:  # its pools per node raise when full instead of waiting: AsyncRows bounds the pipelines
            from redis.asyncio.cluster import RedisCluster

            client = RedisCluster.from_url(self.server_url, max_connections=max_connections,
                                           socket_timeout=self.socket_timeout_s,
                                           socket_connect_timeout=self.socket_timeout_s)
            return AsyncRows(client, self.current_key, max_pipelines=max_connections, wait_s=self.socket_timeout_s)
        from inference.cache.redis_conn import RoundTrips

        # The pool only makes the URL's connections; RoundTrips bounds them and times each round trip as a whole.
        pool = aioredis.ConnectionPool.from_url(self.server_url, socket_timeout=None,
                                                socket_connect_timeout=self.socket_timeout_s)
        return _ServerRows(RoundTrips(pool, max_connections, wait_s=self.socket_timeout_s,
                                      timeout_s=self.socket_timeout_s), self.current_key)

    def pointer(self) -> str:
        value = self.client.get(self.current_key)
        if value is None:
            raise self.no_pointer()
        return value.decode("utf-8")

    def no_pointer(self) -> InputFileError:
        return InputFileError(f"no cache is published in {self.location} (key {self.current_key!r} is missing); "
                              f"run `alignrec cache publish --target {self.location}`")

    def resolve(self, token: str) -> str:
        return token

    def open_version(self, name: str) -> _RedisVersion:
        keys = self.keys(name)
        pipe = self.client.pipeline(transaction=False)  # a version's keys never change once published
        pipe.get(keys.meta).get(keys.layout).get(keys.fallback).get(keys.scenario_fallback)
        pipe.lrange(keys.catalogue, 0, -1)
        meta, layout, fallback, scenario_fallback, parts = pipe.execute()
        fix = f"`alignrec cache publish --cache_dir C --target {self.location}`"
        if meta is None or layout is None or fallback is None:
            if meta is None and self.client.exists(self.legacy_keys(name)[1]):
                raise UserError(f"version {name} in {self.location} holds rows in the older JSON format (published "
                                f"by an earlier alignrec), which this version no longer reads; republish it: {fix}")
            raise VersionGoneError(f"version {name} is not (or no longer) in {self.location}")
        try:
            meta_dict = json.loads(meta)
            meta_dict["k"]  # noqa: B018 - every version records its k
            buckets = int(json.loads(layout)["buckets"])
            fallback_list = [(str(i), float(s)) for i, s in json.loads(fallback)]
            per_scenario = {str(scenario): [(str(i), float(s)) for i, s in ranked]
                            for scenario, ranked in json.loads(scenario_fallback or "{}").items()}
            if meta_dict.get("scenarios") and scenario_fallback is None:
                raise KeyError(f"{keys.scenario_fallback} is missing for a per-scenario version")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise UserError(f"{keys.meta} / {keys.fallback} in {self.location} are not a cache version's metadata "
                            f"({exc!r}); republish it: {fix}") from exc
        row_format = RowFormat.from_meta(meta_dict, f"version {name} in {self.location}", fix)
        catalogue = decode_catalogue(parts)
        if len(catalogue) != meta_dict[ROW_FORMAT_KEY].get("num_items"):
            raise VersionGoneError(f"version {name} in {self.location}: catalogue of {len(catalogue)} items, its meta "
                                   f"says {meta_dict[ROW_FORMAT_KEY].get('num_items')} (being dropped?)")
        return _RedisVersion(name, meta_dict, fallback_list, per_scenario, catalogue, row_format, self.client,
                             self.keys(name, buckets).buckets, self.current_key)

    def close(self) -> None:
        self.client.close()


@dataclass
class _RedisVersion(StoreVersion):
    client: Any = None
    bucket_keys: tuple[str, ...] = ()
    current_key: str = ""

    def lookup_rows(self, user_ids: Sequence[str], scenario: str | None = None) -> list[bytes | None]:
        # One round trip: the pointer and the rows; rows only while this version is the live one (else the reader
        # follows the pointer and asks again), so a batch comes whole from one version.
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.current_key)
        plan = self._queue(pipe, self.row_keys(user_ids, scenario))
        current, *replies = pipe.execute()
        if current is None or current.decode("utf-8") != self.name:
            raise VersionGoneError(f"version {self.name} is no longer the live one of {self.current_key}")
        return self._collect(plan, replies, len(user_ids))

    async def lookup_rows_async(self, reader: AsyncRows, user_ids: Sequence[str],
                                scenario: str | None = None) -> tuple[str | None, list[bytes | None]]:
        """(the live version's name or None, the rows of this version) in one pipelined round trip of ``reader``
        (``RedisStore.async_rows``). Rows come from this version even when the pointer has moved on (it stays
        readable for its grace period); a dropped bucket raises ``VersionGoneError``."""
        return await reader.rows(self, self.row_keys(user_ids, scenario))

    def _buckets(self, keys: list[str]) -> dict[int, list[int]]:
        """The buckets ``keys`` touch, each with the positions (in ``keys``) of its rows."""
        if len(keys) == 1:  # one lookup: no grouping to do
            return {bucket_of(keys[0], len(self.bucket_keys)): [0]}
        by_bucket: dict[int, list[int]] = defaultdict(list)
        for pos, key in enumerate(keys):
            by_bucket[bucket_of(key, len(self.bucket_keys))].append(pos)
        return by_bucket

    def _queue(self, pipe: Any, keys: list[str]) -> list[list[int]]:
        """Queue one ``HMGET`` per bucket touched (the marker field first) on ``pipe``; the row positions per bucket."""
        plan = []
        for bucket, positions in self._buckets(keys).items():
            pipe.hmget(self.bucket_keys[bucket], [MARKER, *(keys[p] for p in positions)])
            plan.append(positions)
        return plan

    def _collect(self, plan: list[list[int]], replies: list[list[bytes | None]], n: int) -> list[bytes | None]:
        rows: list[bytes | None] = [None] * n
        for positions, values in zip(plan, replies, strict=True):
            if values[0] is None:
                raise VersionGoneError(f"version {self.name} is being dropped (a bucket of it is gone)")
            for pos, value in zip(positions, values[1:], strict=True):
                rows[pos] = value
        return rows

    def close(self) -> None:
        pass  # the connection pool belongs to the store


class AsyncRows:
    """Row lookups of one event loop, coalesced: the lookups that arrive in the same loop iteration share one
    pipelined round trip (one ``GET`` of the pointer and each lookup's ``HMGET``s), so under load a round trip
    carries many requests, and a lookup alone is one round trip of its own. The first lookup of an iteration sends
    it from its own task one iteration later (no task of ours per round trip); each caller gets its own rows, the
    pointer as read in that round trip, or its own error, and a caller cancelled meanwhile never takes the others'
    answers with it (they are sent again without it).

    This class sends through a redis-py pipeline of ``client`` (a Redis Cluster client splits it per node); with
    ``max_pipelines`` (a cluster client, whose pools do not wait), at most that many pipelines are in flight and one
    more waits at most ``wait_s`` for its turn. On one server ``RedisStore.async_rows`` gives ``_ServerRows``: the
    same lookups packed here and sent with ``redis_conn.RoundTrips`` (no pipeline objects; a fraction of the CPU)."""

    def __init__(self, client: Any, current_key: str, max_pipelines: int | None = None, wait_s: float = 5.0):
        self.client, self.current_key, self.wait_s = client, current_key, wait_s
        self._turns = asyncio.Semaphore(max_pipelines) if max_pipelines else None
        self._pending: list[tuple[_RedisVersion, list[str], asyncio.Future]] = []
        self._inflight: set[asyncio.Task] = set()

    async def rows(self, version: _RedisVersion, keys: list[str]) -> tuple[str | None, list[bytes | None]]:
        entry = (version, keys, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        if len(self._pending) > 1:  # the first lookup of this loop iteration sends the round trip: wait for it
            return await entry[2]
        try:  # the first: let the lookups of this loop iteration join, then send them all from this task
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            entry[2].cancel()
            self._pending = [other for other in self._pending if other is not entry]
            if self._pending:  # the others still get their round trip
                asyncio.get_running_loop().call_soon(self._flush)
            raise
        batch, self._pending = self._pending, []
        await self._send(batch, own=entry[2])
        return entry[2].result()

    def _flush(self) -> None:
        """A round trip, on a task of its own, for lookups whose first one was cancelled."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send(self, batch: list[tuple[_RedisVersion, list[str], asyncio.Future]],
                    own: asyncio.Future | None = None) -> None:
        """One round trip for ``batch``: each lookup's future gets its rows or its error. ``own``: the future of the
        lookup whose task sends it; if that task is cancelled, the others are sent again without it."""
        try:
            current, replies, plans = await self._round_trip(batch)
        except asyncio.CancelledError:
            others = [entry for entry in batch if entry[2] is not own and not entry[2].done()]
            if own is None:  # a task of ours, cancelled by aclose
                for *_, future in others:
                    future.cancel()
            elif others:
                if not self._pending:
                    asyncio.get_running_loop().call_soon(self._flush)
                self._pending.extend(others)
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting lookup gets the failure (the caller maps it to 503)
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        name = None if current is None else current.decode("utf-8")
        at = 0
        for (version, keys, future), plan in zip(batch, plans, strict=True):
            part, at = replies[at : at + len(plan)], at + len(plan)
            if future.done():  # its request went away
                continue
            try:
                future.set_result((name, version._collect(plan, part, len(keys))))
            except Exception as exc:  # noqa: BLE001 - VersionGoneError, or a reply this version cannot read: its own
                future.set_exception(exc)

    async def _round_trip(self, batch: list[tuple[_RedisVersion, list[str], asyncio.Future]]
                          ) -> tuple[bytes | None, list[Any], list[list[list[int]]]]:
        """(the pointer, the ``HMGET`` replies in order, each lookup's plan) of one round trip for ``batch``."""
        if self._turns is not None:
            await self._wait_turn()
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.current_key)
            plans = [version._queue(pipe, keys) for version, keys, _ in batch]
            current, *replies = await pipe.execute()
        finally:
            if self._turns is not None:
                self._turns.release()
        return current, replies, plans

    async def _wait_turn(self) -> None:
        if not self._turns.locked():
            await self._turns.acquire()  # a free turn: returns at once (no task for wait_for)
            return
        try:
            await asyncio.wait_for(self._turns.acquire(), self.wait_s)
        except asyncio.TimeoutError:
            from redis.exceptions import ConnectionError as RedisConnectionError

            raise RedisConnectionError(f"no free Redis connection within {self.wait_s:g} s (all busy)") from None

    async def aclose(self) -> None:
        for task in list(self._inflight):
            task.cancel()
        await self.client.aclose()


class _ServerRows(AsyncRows):
    """``AsyncRows`` on one Redis server: the round trip's commands packed here and sent with
    ``redis_conn.RoundTrips`` (``client``), which bounds the connections in flight itself."""

    def __init__(self, client: Any, current_key: str):
        super().__init__(client, current_key)
        self._get_pointer = pack_command([b"GET", client.encode(current_key)])
        self._marker = client.encode(MARKER)

    async def _round_trip(self, batch: list[tuple[_RedisVersion, list[str], asyncio.Future]]
                          ) -> tuple[bytes | None, list[Any], list[list[list[int]]]]:
        encode, marker = self.client.encode, self._marker
        commands, plans = [self._get_pointer], []
        for version, keys, _ in batch:
            plan = []
            for bucket, positions in version._buckets(keys).items():
                commands.append(pack_command([b"HMGET", encode(version.bucket_keys[bucket]), marker,
                                              *[encode(keys[p]) for p in positions]]))
                plan.append(positions)
            plans.append(plan)
        current, *replies = await self.client.call(b"".join(commands), len(commands))
        return current, replies, plans


def publish_cache_redis(
    cache_dir: str | Path,
    url: str,
    popularity: Mapping[str, int] | None = None,
    fallback_k: int | None = None,
    keep_versions: int = 2,
    grace_s: float = 300.0,
    progress: bool = True,
    scenario_popularity: Mapping[str, Mapping[str, int]] | None = None,
    score_dtype: str = "float16",
) -> str:
    """Publish ``cache_dir`` as the live version of the Redis key space at ``url``; returns the version name.

    Same fallback rules and row format as ``publish_cache`` (one fallback per scenario for a per-scenario build).
    Versions beyond ``keep_versions`` (live one included) stay readable ``grace_s`` seconds after the switch; the
    first publish after that unlinks them.
    """
    if keep_versions < 1:
        raise ConfigError(f"keep_versions must be >= 1 (the live version), got {keep_versions}")
    if grace_s <= 0:
        raise ConfigError(f"grace_s must be > 0 (seconds an old version stays readable), got {grace_s}")
    manifest = verify_cache(cache_dir)
    catalogue, largest = scan_cache(cache_dir)
    row_format = RowFormat.choose(len(catalogue), score_dtype, largest)
    store = RedisStore(url)
    client = store.client
    name = version_name(manifest)
    keys = store.keys(name, bucket_count(manifest["num_users"]))
    nb = len(keys.buckets)
    switched = False
    try:
        pipe = client.pipeline(transaction=False)
        for bucket in keys.buckets:  # every bucket exists (and is marked) even when no user hashes to it
            pipe.hset(bucket, MARKER, name).pexpire(bucket, PENDING_TTL_MS)
        pipe.execute()
        scenario_names = manifest.get("scenarios")
        # fallbacks without training popularity: the items most often cached (overall, per scenario)
        encoder = RowEncoder(catalogue, row_format, count_items=popularity is None,
                             count_scenarios=bool(scenario_names) and scenario_popularity is None)
        batch: dict[int, dict[str, bytes]] = defaultdict(dict)
        pending = 0
        for users, rows in encoded_chunks(cache_dir, encoder, manifest["num_users"], progress):
            if MARKER in users:
                raise UserError(f"cache {cache_dir} has a user id equal to Redis's bucket marker {MARKER!r}")
            for user, row in zip(users, rows, strict=True):
                batch[bucket_of(user, nb)][user] = row
            pending += len(users)
            if pending >= WRITE_BATCH:
                _write_buckets(client, keys, batch)
                pending = 0
        _write_buckets(client, keys, batch)
        pipe = client.pipeline(transaction=False)
        for bucket in keys.buckets:
            pipe.hlen(bucket)
        stored = sum(pipe.execute()) - nb
        if stored != manifest["num_users"]:
            raise RuntimeError(f"version {name} holds {stored} users, the manifest of {cache_dir} says "
                               f"{manifest['num_users']}")
        fallback_k = fallback_k or manifest["k"]
        fallback, source = fallback_items(popularity, encoder.item_counts() if popularity is None else {}, fallback_k)
        meta = {**version_meta(manifest, source, cache_dir), ROW_FORMAT_KEY: row_format.to_meta(len(catalogue))}
        pipe = client.pipeline(transaction=False)
        pipe.delete(keys.catalogue)
        for part in encode_catalogue(catalogue):
            pipe.rpush(keys.catalogue, part)
        pipe.pexpire(keys.catalogue, PENDING_TTL_MS)
        pipe.set(keys.meta, json.dumps(meta), px=PENDING_TTL_MS)
        pipe.set(keys.layout, json.dumps({"buckets": nb}), px=PENDING_TTL_MS)
        pipe.set(keys.fallback, json.dumps(fallback), px=PENDING_TTL_MS)
        if scenario_names:
            per_scenario = encoder.scenario_counts() if scenario_popularity is None else {}
            fallbacks = scenario_fallbacks(scenario_names, scenario_popularity, per_scenario, fallback_k)
            pipe.set(keys.scenario_fallback, json.dumps(fallbacks), px=PENDING_TTL_MS)
        pipe.execute()
        present = [key for key in keys.all() if key != keys.scenario_fallback or scenario_names]
        if not catalogue:
            present.remove(keys.catalogue)  # an empty list is no key in Redis

        with client.lock(store.lock_key, timeout=120, blocking_timeout=300):  # one switch + clean-up at a time
            pipe = client.pipeline(transaction=False)
            for key in present:
                pipe.persist(key).exists(key)
            if not all(pipe.execute()[1::2]):
                raise RuntimeError(f"some keys of version {name} vanished before the switch (evicted? check Redis's "
                                   "maxmemory policy)")
            client.set(store.current_key, name)  # the switch: one command
            switched = True
            client.zadd(store.versions_key, {name: time.time()})
            logger.info("published %s as the live cache version of %s (%d users, %d buckets, fallback: %s)", name,
                        url, manifest["num_users"], nb, source)
            _retire(store, keep_versions, grace_s, live=name)
    except BaseException:
        if not switched:  # drop what this publish wrote (non-blocking) instead of waiting for the pending TTL
            pipe = client.pipeline(transaction=False)
            for key in keys.all():
                pipe.unlink(key)
            pipe.execute()
        raise
    return name


def _write_buckets(client: Any, keys: VersionKeys, batch: dict[int, dict[str, bytes]]) -> None:
    """One pipelined ``HSET`` per bucket of ``batch`` (bucket -> {key: row}); empties ``batch``."""
    pipe = client.pipeline(transaction=False)
    for bucket, mapping in batch.items():
        pipe.hset(keys.buckets[bucket], mapping=mapping)
    pipe.execute()
    batch.clear()


def _retire(store: RedisStore, keep_versions: int, grace_s: float, live: str) -> None:
    """Versions beyond ``keep_versions`` -> ``P:retired`` (readable for ``grace_s`` more); unlink those whose grace
    is over."""
    client, now = store.client, time.time()
    kept = [v.decode("utf-8") for v in client.zrange(store.versions_key, 0, -1)]
    retire = [v for v in kept[:-keep_versions] if v != live] if len(kept) > keep_versions else []
    for old in retire:
        pipe = client.pipeline(transaction=False)
        for key in (*store.version_keys(old).all(), *store.legacy_keys(old)):
            pipe.pexpire(key, int((grace_s + RETIRE_SAFETY_S) * 1000))
        pipe.zrem(store.versions_key, old).zadd(store.retired_key, {old: now + grace_s})
        pipe.execute()
    if retire:
        logger.info("old version(s) %s stay readable for %.0f s", ", ".join(retire), grace_s)
    for old in [v.decode("utf-8") for v in client.zrangebyscore(store.retired_key, "-inf", now)]:
        pipe = client.pipeline(transaction=False)
        for key in (*store.version_keys(old).all(), *store.legacy_keys(old)):
            pipe.unlink(key)
        pipe.zrem(store.retired_key, old)
        pipe.execute()
        logger.info("dropped old version %s (UNLINK)", old)
