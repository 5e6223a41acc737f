"""Redis publish target: parity with the SQLite store, atomic switch, grace-period expiry, prefixes, errors."""

from __future__ import annotations

import json
import time

import pytest

from inference.cache import CacheReader, VersionGoneError, publish_cache
from inference.cache.cli import CachePublishConfig
from recdata.errors import UserError
from tests.inference.cache_fakes import expected_recs, make_histories
from tests.serve.conftest import SCENARIO_POPULARITY, build_scenario_cache, build_tagged

pytest.importorskip("redis", reason="the redis client is part of the serve extra: pip install 'alignrec[serve]'")
from inference.cache.redis_store import RedisStore, publish_cache_redis  # noqa: E402

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
        assert red.get("u0003").items == expected_recs("u0003", histories["u0003"], K)
        assert red.get("stranger").items == [("i2", 7.0), ("i4", 5.0)]
        assert (red.stats.hits, red.stats.misses) == (2 * 40 + 1, 2 * 2 + 1)
    # The documented key space is readable by services that talk to Redis directly.
    client = RedisStore(url).client
    assert client.get("parity:current").decode() == name
    raw = client.hget(f"parity:v:{name}:recs", "u0003")
    assert [tuple(x) for x in json.loads(raw)] == expected_recs("u0003", histories["u0003"], K)
    assert client.ttl(f"parity:v:{name}:recs") == -1  # the live version never expires


def test_switch_keeps_old_version_for_the_grace_period_then_expires_it(tmp_path, redis_url):
    histories = {"u1": ["i1"], "u2": []}
    url = _url(redis_url, "grace")
    old = publish_cache_redis(build_tagged(tmp_path / "a", histories, "old", 1), url, keep_versions=1, grace_s=3.0,
                              progress=False)
    pinned = CacheReader(url, refresh_interval_s=3600)  # would not look at the pointer for an hour by itself
    assert pinned.get("u1").items == [("old-u1-0", -0.0)]
    new = publish_cache_redis(build_tagged(tmp_path / "b", histories, "new", 1), url, keep_versions=1, grace_s=3.0,
                              progress=False)
    store = RedisStore(url)
    assert store.pointer() == new != old
    assert [v.decode() for v in store.client.zrange(store.versions_key, 0, -1)] == [new]
    assert all(0 < store.client.pttl(key) <= 3000 for key in store.version_keys(old))  # expiring, not deleted
    old_recs = store.version_keys(old)[0]
    assert json.loads(store.client.hget(old_recs, "u1")) == [["old-u1-0", -0.0]]  # direct readers: still there
    result = pinned.get("u1")  # the lookup's MULTI saw the pointer move: the reader followed it at once
    assert (result.items, result.fallback, result.version) == ([("new-u1-0", -0.0)], False, new)
    assert pinned.stats.reloads == 1
    with pytest.raises(VersionGoneError):
        store.open_version(old).lookup(["u1"])  # never answers from a version that is not the live one
    deadline = time.monotonic() + 20
    while store.client.exists(*store.version_keys(old)):
        assert time.monotonic() < deadline, "old version did not expire"
        time.sleep(0.05)
    with pytest.raises(VersionGoneError):
        store.open_version(old)
    assert store.client.ttl(store.version_keys(new)[0]) == -1


def test_keep_versions_and_prefixes_are_independent(tmp_path, redis_url):
    histories = make_histories(5)
    names = [publish_cache_redis(build_tagged(tmp_path / f"c{i}", histories, f"t{i}", K), _url(redis_url, "kv"),
                                 keep_versions=2, progress=False) for i in range(3)]
    other = publish_cache_redis(build_tagged(tmp_path / "o", histories, "other", K), _url(redis_url, "kv2"),
                                progress=False)
    store = RedisStore(_url(redis_url, "kv"))
    assert [v.decode() for v in store.client.zrange(store.versions_key, 0, -1)] == names[1:]
    assert store.client.pttl(store.version_keys(names[0])[0]) > 0 and store.client.ttl(store.version_keys(names[1])[0]) == -1
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
    assert [tuple(x) for x in line["items"]] == expected_recs("u0002", histories["u0002"], K)
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
    assert json.loads(store.client.get(store.scenario_fallback_key(name)))["kitchen"] == [["k8", 2.0], ["k9", 2.0]]
    assert store.client.ttl(store.scenario_fallback_key(name)) == -1  # persisted by the switch like the others
    store.close()
