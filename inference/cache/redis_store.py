"""Redis as a publish target: a versioned key space, an atomic pointer switch, old versions expired after a grace.

For teams whose services already read Redis. Key space (``P`` = the ``prefix`` query parameter of the URL,
default ``alignrec``; several caches can share one Redis under different prefixes)::

    P:current                 the live version name, e.g. v-20261201T101010123456Z-<build version>
    P:versions                sorted set of the published versions still kept (score: publish time)
    P:v:<version>:recs        hash user_id -> JSON [[item_id, score], ...] (best first), like the SQLite store
    P:v:<version>:meta        JSON metadata of the build (the same keys as the SQLite ``meta`` table)
    P:v:<version>:fallback    JSON [[item_id, score], ...]: the popular-items fallback for unknown users
    P:v:<version>:scenario_fallback  per-scenario versions only: JSON {scenario: [[item_id, score], ...]}

A per-scenario version (meta ``scenarios``) keys its hash fields ``user + "\x1f" + scenario``, like SQLite.

A publish writes the new version's keys with a 24 h TTL (a killed publish cleans up after itself), then in one
``MULTI`` lifts the TTL and points ``P:current`` at it. Versions beyond ``keep_versions`` get a TTL of
``grace_s`` instead of being deleted, so a service reading the key space directly that read the old pointer a
moment ago still finds its version. ``CacheReader`` lookups are one ``MULTI`` of ``GET P:current`` + ``EXISTS``
+ ``HMGET`` on the held version's hash: rows are returned only while that version is the live one (else the
reader follows the pointer and asks again), so a batch comes whole from one version, in one round trip.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tqdm.auto import tqdm

from inference.cache.backends import CacheStore, Recs, StoreVersion, VersionGoneError
from inference.cache.scenarios import split_scenario_key
from inference.cache.shards import iter_cache, verify_cache
from inference.cache.store import fallback_items, scenario_fallbacks, version_meta, version_name
from recdata.errors import ConfigError, InputFileError, UserError

__all__ = ["RedisStore", "publish_cache_redis"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "alignrec"
PENDING_TTL_MS = 24 * 3600 * 1000  # an unfinished version expires by itself if its publish dies
WRITE_BATCH = 5_000


class RedisStore(CacheStore):
    """``redis://host:port/db[?prefix=P]`` (also ``rediss://``, ``unix://``): the key space described above."""

    lookup_checks_pointer = True

    def __init__(self, url: str, socket_timeout_s: float = 5.0):
        try:
            import redis
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(f"reading {url} needs the redis client: pip install 'alignrec[serve]'") from exc
        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        self.prefix = next((v for k, v in query if k == "prefix"), DEFAULT_PREFIX)
        clean = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "prefix"])))
        self.location = url
        self.client = redis.Redis.from_url(clean, socket_timeout=socket_timeout_s,
                                           socket_connect_timeout=socket_timeout_s)
        self.current_key = f"{self.prefix}:current"
        self.versions_key = f"{self.prefix}:versions"
        self.lock_key = f"{self.prefix}:publish-lock"

    def version_keys(self, name: str) -> tuple[str, str, str]:
        """(recs, meta, fallback) keys of version ``name``."""
        base = f"{self.prefix}:v:{name}"
        return f"{base}:recs", f"{base}:meta", f"{base}:fallback"

    def scenario_fallback_key(self, name: str) -> str:
        """The per-scenario fallbacks of version ``name`` (present for per-scenario versions only)."""
        return f"{self.prefix}:v:{name}:scenario_fallback"

    def all_version_keys(self, name: str) -> tuple[str, ...]:
        """Every key a version may have (what a publish persists and a retirement expires)."""
        return (*self.version_keys(name), self.scenario_fallback_key(name))

    def pointer(self) -> str:
        value = self.client.get(self.current_key)
        if value is None:
            raise InputFileError(f"no cache is published in {self.location} (key {self.current_key!r} is missing); "
                                    f"run `alignrec cache publish --target {self.location}`")
        return value.decode("utf-8")

    def resolve(self, token: str) -> str:
        return token

    def open_version(self, name: str) -> _RedisVersion:
        recs_key, meta_key, fallback_key = self.version_keys(name)
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(recs_key).get(meta_key).get(fallback_key).get(self.scenario_fallback_key(name))
        exists, meta, fallback, scenario_fallback = pipe.execute()
        if not exists or meta is None or fallback is None:
            raise VersionGoneError(f"version {name} is not (or no longer) in {self.location}")
        try:
            meta_dict = json.loads(meta)
            fallback_list = [(str(i), float(s)) for i, s in json.loads(fallback)]
            meta_dict["k"]  # noqa: B018 - every version records its k
            per_scenario = {str(scenario): [(str(i), float(s)) for i, s in ranked]
                            for scenario, ranked in json.loads(scenario_fallback or "{}").items()}
            if meta_dict.get("scenarios") and scenario_fallback is None:
                raise KeyError(f"{self.scenario_fallback_key(name)} is missing for a per-scenario version")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise UserError(f"{meta_key} / {fallback_key} in {self.location} are not a cache version's metadata "
                             f"({exc!r}); republish with `alignrec cache publish --target {self.location}`") from exc
        return _RedisVersion(name, meta_dict, fallback_list, per_scenario, self.client, recs_key, self.current_key)

    def close(self) -> None:
        self.client.close()


@dataclass
class _RedisVersion(StoreVersion):
    client: Any = None
    recs_key: str = ""
    current_key: str = ""

    def lookup(self, user_ids: Sequence[str], scenario: str | None = None) -> list[Recs | None]:
        # One MULTI (one round trip): the pointer, the version's presence and the rows, all at the same moment.
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.current_key).exists(self.recs_key).hmget(self.recs_key, self.row_keys(user_ids, scenario))
        current, exists, values = pipe.execute()
        if current is None or current.decode("utf-8") != self.name or not exists:
            raise VersionGoneError(f"version {self.name} is no longer the live one of {self.current_key}")
        return [None if v is None else [(i, s) for i, s in json.loads(v)] for v in values]

    def close(self) -> None:
        pass  # the connection pool belongs to the store


def publish_cache_redis(
    cache_dir: str | Path,
    url: str,
    popularity: Mapping[str, int] | None = None,
    fallback_k: int | None = None,
    keep_versions: int = 2,
    grace_s: float = 300.0,
    progress: bool = True,
    scenario_popularity: Mapping[str, Mapping[str, int]] | None = None,
) -> str:
    """Publish ``cache_dir`` as the live version of the Redis key space at ``url``; returns the version name.

    Same fallback rules as ``publish_cache`` (one per scenario for a per-scenario build). Versions beyond ``keep_versions`` (live one included) expire
    ``grace_s`` seconds after the switch.
    """
    if keep_versions < 1:
        raise ConfigError(f"keep_versions must be >= 1 (the live version), got {keep_versions}")
    if grace_s <= 0:
        raise ConfigError(f"grace_s must be > 0 (seconds an old version stays readable), got {grace_s}")
    manifest = verify_cache(cache_dir)
    store = RedisStore(url)
    client = store.client
    name = version_name(manifest)
    recs_key, meta_key, fallback_key = store.version_keys(name)
    counts: Counter[str] = Counter()
    scenario_names = manifest.get("scenarios")
    per_scenario: dict[str, Counter[str]] = {}
    batch: dict[str, str] = {}

    def flush() -> None:
        client.pipeline(transaction=False).hset(recs_key, mapping=batch).pexpire(recs_key, PENDING_TTL_MS).execute()
        batch.clear()

    bar = tqdm(iter_cache(cache_dir, verify=False), total=manifest["num_users"], desc="publish", unit="user",
               disable=not progress)
    for user, _, recs in bar:  # checksums were verified above
        batch[user] = json.dumps(recs, separators=(",", ":"), ensure_ascii=False)
        if popularity is None:
            counts.update(item for item, _ in recs)
        if scenario_names and scenario_popularity is None:  # fallback: items most often cached per scenario
            per_scenario.setdefault(split_scenario_key(user)[1], Counter()).update(item for item, _ in recs)
        if len(batch) >= WRITE_BATCH:
            flush()
    if batch:
        flush()
    stored = client.hlen(recs_key)
    if stored != manifest["num_users"]:
        raise RuntimeError(f"{recs_key} holds {stored} users, the manifest of {cache_dir} says {manifest['num_users']}")
    fallback_k = fallback_k or manifest["k"]
    fallback, source = fallback_items(popularity, counts, fallback_k)
    meta = version_meta(manifest, source, cache_dir)
    client.set(meta_key, json.dumps(meta), px=PENDING_TTL_MS)
    client.set(fallback_key, json.dumps(fallback), px=PENDING_TTL_MS)
    if scenario_names:
        fallbacks = scenario_fallbacks(scenario_names, scenario_popularity, per_scenario, fallback_k)
        client.set(store.scenario_fallback_key(name), json.dumps(fallbacks), px=PENDING_TTL_MS)

    with client.lock(store.lock_key, timeout=120, blocking_timeout=300):  # one switch + expiry at a time
        switch = client.pipeline(transaction=True)
        for key in store.all_version_keys(name):
            switch.persist(key)
        switch.set(store.current_key, name).zadd(store.versions_key, {name: time.time()})
        switch.execute()
        logger.info("published %s as the live cache version of %s (%d users, fallback: %s)", name, url,
                    manifest["num_users"], source)
        kept = [v.decode("utf-8") for v in client.zrange(store.versions_key, 0, -1)]
        retire = [v for v in kept[:-keep_versions] if v != name] if len(kept) > keep_versions else []
        if retire:
            expire = client.pipeline(transaction=True)
            for old in retire:
                for key in store.all_version_keys(old):
                    expire.pexpire(key, int(grace_s * 1000))
                expire.zrem(store.versions_key, old)
            expire.execute()
            logger.info("old version(s) %s expire in %.0f s", ", ".join(retire), grace_s)
    return name
