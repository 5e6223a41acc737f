"""Redis publish target: parity with the SQLite store, atomic switch, grace-period expiry, prefixes, errors."""

from __future__ import annotations

import json
import re
import time

import pytest

from inference.cache import CacheReader, VersionGoneError, publish_cache
from inference.cache.cli import CachePublishConfig
from recdata.errors import UserError
from tests.inference.cache_fakes import as_stored, expected_recs, make_histories
from tests.serve.conftest import SCENARIO_POPULARITY, build_scenario_cache, build_tagged

pytest.importorskip("redis", reason="the redis client is part of the serve extra: pip install 'alignrec[serve]'")
from inference.cache.redis_store import RedisStore, bucket_of, publish_cache_redis  # noqa: E402
from inference.cache.rows import RowFormat, catalogue_ids, decode_catalogue  # noqa: E402

K = 3
POPULARITY = {"i9": 5, "i2": 7, "i4": 5, "i1": 1}


def _url(redis_url: str, prefix: str) -> str:
    return f"{redis_url}?prefix={prefix}"


def test_redis_answers_equal_sqlite_for_every_user(tmp_path, redis_url):
    histories = make_histories(40)
    cache = build_tagged(tmp_path / "c", histories, None, K)
    publish_cache(cache, tmp_path / "store", popularity=POPULARITY, fallback_k=2, progress=False)
    url = _url(redis_url, "parity")
    name = publish_cache_redis(cache, url, popularity=POPULARITY, fallback_k=2, progress=False)
    users = sorted(histories) + ["stranger", "u9999"]
    with CacheReader(tmp_path / "store") as lite, CacheReader(url) as red:
        assert red.version == name
        for user in users:
            a, b = lite.get(user), red.get(user)
            assert (a.items, a.fallback, a.k) == (b.items, b.fallback, b.k)
        assert [r.items for r in lite.get_many(users)] == [r.items for r in red.get_many(users)]
        assert lite.metadata == red.metadata
        assert red.get("u0003").items == as_stored(expected_recs("u0003", histories["u0003"], K))
        assert red.get("stranger").items == [("i2", 7.0), ("i4", 5.0)]
        assert (red.stats.hits, red.stats.misses) == (2 * 40 + 1, 2 * 2 + 1)
    # The documented key space is readable by services that talk to Redis directly.
    client = RedisStore(url).client
    assert client.get("parity:current").decode() == name
    buckets = json.loads(client.get(f"parity:v:{{{name}}}:layout"))["buckets"]
    raw = client.hget(f"parity:v:{{{name}:{bucket_of('u0003', buckets)}}}:recs", "u0003")
    catalogue = catalogue_ids(decode_catalogue(client.lrange(f"parity:v:{{{name}}}:catalogue", 0, -1)))
    indices, scores = RowFormat(2, "float16").decode(raw)
    assert [(catalogue[i], s) for i, s in zip(indices, scores, strict=True)] == as_stored(
        expected_recs("u0003", histories["u0003"], K))
    assert all(client.ttl(key) == -1 for key in RedisStore(url).version_keys(name).all()
               if key.endswith((":recs", ":meta", ":catalogue")))  # the live version never expires


def test_switch_keeps_old_version_for_the_grace_period_then_unlinks_it(tmp_path, redis_url):
    histories = {"u1": ["i1"], "u2": []}
    url = _url(redis_url, "grace")
    old = publish_cache_redis(build_tagged(tmp_path / "a", histories, "old", 1), url, keep_versions=1, grace_s=1.0,
                              progress=False)
    pinned = CacheReader(url, refresh_interval_s=3600)  # would not look at the pointer for an hour by itself
    assert pinned.get("u1").items == [("old-u1-0", -0.0)]
    new = publish_cache_redis(build_tagged(tmp_path / "b", histories, "new", 1), url, keep_versions=1, grace_s=1.0,
                              progress=False)
    store = RedisStore(url)
    old_keys = store.version_keys(old).all()
    assert store.pointer() == new != old
    assert [v.decode() for v in store.client.zrange(store.versions_key, 0, -1)] == [new]
    assert [v.decode() for v in store.client.zrange(store.retired_key, 0, -1)] == [old]  # retired, still readable
    assert all(0 < store.client.pttl(key) for key in old_keys if store.client.exists(key))  # a TTL as safety net
    assert store.open_version(old).decode(store.client.hget(store.version_keys(old).buckets[0], "u1")) == [
        ("old-u1-0", -0.0)]  # direct readers: still there
    result = pinned.get("u1")  # the lookup's round trip saw the pointer move: the reader followed it at once
    assert (result.items, result.fallback, result.version) == ([("new-u1-0", -0.0)], False, new)
    assert pinned.stats.reloads == 1
    with pytest.raises(VersionGoneError):
        store.open_version(old).lookup(["u1"])  # never answers from a version that is not the live one
    time.sleep(1.2)  # the grace is over: the next publish unlinks the old version
    newer = publish_cache_redis(build_tagged(tmp_path / "c", histories, "newer", 1), url, keep_versions=1,
                                grace_s=30.0, progress=False)
    assert store.client.exists(*old_keys) == 0
    assert [v.decode() for v in store.client.zrange(store.retired_key, 0, -1)] == [new]
    with pytest.raises(VersionGoneError):
        store.open_version(old)
    assert store.client.ttl(store.version_keys(newer).meta) == -1 and pinned.get("u1").version == newer


def test_rows_are_spread_over_buckets_and_a_batch_is_one_round_trip(tmp_path, redis_url):
    """Many buckets (hash-tagged keys), and every lookup of a batch is one pipeline: one GET of the pointer plus
    one HMGET per bucket touched, counted by the server's own command statistics."""
    import asyncio

    from inference.cache import redis_store

    histories = make_histories(60)
    url = _url(redis_url, "buckets")
    old_size = redis_store.BUCKET_USERS
    redis_store.BUCKET_USERS = 8  # 60 users -> 8 buckets
    try:
        name = publish_cache_redis(build_tagged(tmp_path / "c", histories, None, K), url, progress=False)
    finally:
        redis_store.BUCKET_USERS = old_size
    store = RedisStore(url)
    keys = store.version_keys(name)
    assert len(keys.buckets) == 8 and all(re.search(r"\{v-[^}]+:\d+\}", key) for key in keys.buckets)
    assert sum(store.client.hlen(key) - 1 for key in keys.buckets) == 60  # minus each bucket's marker field
    version = store.open_version(name)
    users = sorted(histories)[:20] + ["stranger"]
    touched = {bucket_of(u, 8) for u in users}

    def calls() -> dict[str, int]:
        stats = store.client.info("commandstats")
        return {cmd: stats.get(f"cmdstat_{cmd}", {}).get("calls", 0) for cmd in ("get", "hmget", "exec", "multi")}

    async def lookup(groups: list[list[str]]):
        reader = store.async_rows(4)
        try:  # concurrent lookups, as concurrent requests make them
            return await asyncio.gather(*(version.lookup_rows_async(reader, group) for group in groups))
        finally:
            await reader.aclose()

    before = calls()
    ((live, rows),) = asyncio.run(lookup([users]))
    after = calls()
    assert live == name and rows[-1] is None
    assert [version.decode(r) for r in rows[:-1]] == [as_stored(expected_recs(u, histories[u], K)) for u in users[:-1]]
    assert {c: after[c] - before[c] for c in after} == {"get": 1, "hmget": len(touched), "exec": 0, "multi": 0}
    # Lookups that arrive together share one round trip: one GET of the pointer, each its own HMGETs and rows.
    groups = [[u] for u in users[:-1]]
    before = calls()
    answers = asyncio.run(lookup(groups))
    after = calls()
    assert [version.decode(r[0]) for _, r in answers] == [version.decode(r) for r in rows[:-1]]
    assert {c: after[c] - before[c] for c in after} == {"get": 1, "hmget": len(groups), "exec": 0, "multi": 0}


def test_keep_versions_and_prefixes_are_independent(tmp_path, redis_url):
    histories = make_histories(5)
    names = [publish_cache_redis(build_tagged(tmp_path / f"c{i}", histories, f"t{i}", K), _url(redis_url, "kv"),
                                 keep_versions=2, progress=False) for i in range(3)]
    other = publish_cache_redis(build_tagged(tmp_path / "o", histories, "other", K), _url(redis_url, "kv2"),
                                progress=False)
    store = RedisStore(_url(redis_url, "kv"))
    assert [v.decode() for v in store.client.zrange(store.versions_key, 0, -1)] == names[1:]
    assert store.client.pttl(store.version_keys(names[0]).meta) > 0 and store.client.ttl(store.version_keys(names[1]).meta) == -1
    with CacheReader(_url(redis_url, "kv")) as a, CacheReader(_url(redis_url, "kv2")) as b:
        assert (a.version, b.version) == (names[2], other)
        assert a.get("u0001").items[0][0] == "t2-u0001-0" and b.get("u0001").items[0][0] == "other-u0001-0"


def test_errors_name_the_store_and_the_fix(tmp_path, redis_url):
    with pytest.raises(FileNotFoundError, match=r"no cache is published in .*prefix=empty.*cache publish --target"):
        CacheReader(_url(redis_url, "empty"))
    with pytest.raises(ValueError, match="grace_s"):
        publish_cache_redis(tmp_path, _url(redis_url, "x"), grace_s=0)
    with pytest.raises(ValueError, match="exactly one of --store_dir"):
        CachePublishConfig(cache_dir="c")
    with pytest.raises(ValueError, match="exactly one of --store_dir"):
        CachePublishConfig(cache_dir="c", store_dir="s", target=redis_url)
    with pytest.raises(ValueError, match="redis://"):
        CachePublishConfig(cache_dir="c", target="http://127.0.0.1:6379")


def test_cli_publish_target_redis(tmp_path, redis_url, capsys):
    from tests.inference.test_cache_cli import _cli

    histories = make_histories(6)
    cache = build_tagged(tmp_path / "c", histories, None, K)
    url = _url(redis_url, "cli")
    assert _cli(["cache", "publish", "--cache_dir", str(cache), "--target", url]) == 0
    capsys.readouterr()
    assert _cli(["cache", "get", "u0002", "--store_dir", url]) == 0
    line = json.loads(capsys.readouterr().out)
    assert [tuple(x) for x in line["items"]] == as_stored(expected_recs("u0002", histories["u0002"], K))
    assert line["version"] == RedisStore(url).pointer()


def test_redis_per_scenario_store_equals_sqlite(tmp_path, redis_url):
    """Scenario-keyed rows and one fallback per scenario survive the Redis store exactly as the SQLite one."""
    cache = build_scenario_cache(tmp_path / "c", K)
    publish_cache(cache, tmp_path / "store", scenario_popularity=SCENARIO_POPULARITY, fallback_k=2, progress=False)
    url = _url(redis_url, "scen")
    name = publish_cache_redis(cache, url, scenario_popularity=SCENARIO_POPULARITY, fallback_k=2, progress=False)
    with CacheReader(tmp_path / "store") as lite, CacheReader(url) as red:
        assert red.scenarios == lite.scenarios == ["food", "kitchen"]
        got = red.get("u1", "kitchen")
        assert got.items == [("kitchen-u1-0", -0.0), ("kitchen-u1-1", -1.0), ("kitchen-u1-2", -2.0)]
        assert not got.fallback and got.scenario == "kitchen" and got.version == name
        cold = red.get_many(["u2", "nobody"], scenario="food")  # u2 is served in kitchen only: the food fallback
        assert [(r.items, r.fallback) for r in cold] == [([("f9", 3.0), ("f8", 1.0)], True)] * 2
        assert red.get("nobody", "kitchen").items == [("k8", 2.0), ("k9", 2.0)]  # ties by item id
        for user in ["u1", "u2", "u3", "nobody"]:
            for scenario in ["food", "kitchen"]:
                a, b = lite.get(user, scenario), red.get(user, scenario)
                assert (a.items, a.fallback, a.k, a.scenario) == (b.items, b.fallback, b.k, b.scenario)
        with pytest.raises(UserError, match="per scenario; pass a scenario"):
            red.get("u1")
    store = RedisStore(url)
    assert json.loads(store.client.get(store.keys(name).scenario_fallback))["kitchen"] == [["k8", 2.0], ["k9", 2.0]]
    assert store.client.ttl(store.keys(name).scenario_fallback) == -1  # persisted by the switch like the others
    store.close()


def test_a_version_in_the_older_json_layout_is_refused_naming_it_and_the_fix(redis_url):
    store = RedisStore(_url(redis_url, "legacy"))
    store.client.set("legacy:current", "v-old")
    store.client.set("legacy:v:v-old:meta", json.dumps({"k": 3}))  # what an earlier alignrec wrote
    store.client.hset("legacy:v:v-old:recs", "u1", json.dumps([["i1", 1.0]]))
    with pytest.raises(UserError, match=r"version v-old in redis://.*prefix=legacy holds rows in the older JSON "
                                        r"format.*republish it: `alignrec cache publish --cache_dir C --target"):
        CacheReader(_url(redis_url, "legacy"))
    store.close()
