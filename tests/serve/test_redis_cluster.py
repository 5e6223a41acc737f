"""The Redis store on a real Redis Cluster (three masters started by the ``redis_cluster_url`` fixture): publish,
sync and async lookups, a version's keys spread over the nodes, the swap (each answer from one version, also
over real HTTP during publishes) and the old version unlinked from every node; the cluster URL's errors."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import defaultdict

import pytest

from inference.cache import CacheReader, VersionGoneError
from recdata.errors import UserError
from tests.inference.cache_fakes import as_stored, expected_recs, make_histories
from tests.serve.conftest import build_tagged, free_cluster_port, serve_process

pytest.importorskip("redis", reason="the redis client is part of the serve extra: pip install 'alignrec[serve]'")
import redis  # noqa: E402

from inference.cache import redis_store  # noqa: E402
from inference.cache.redis_store import RedisStore, bucket_of, parse_location, publish_cache_redis  # noqa: E402

K = 3


def _nodes(store: RedisStore) -> list[redis.Redis]:
    """A plain client on each master: SCAN and INFO there see only that node's own keys and commands."""
    return [redis.Redis(host=n.host, port=n.port) for n in store.client.get_primaries()]


def _keys_by_node(store: RedisStore) -> dict[str, set[str]]:
    return {f"{c.connection_pool.connection_kwargs['port']}": {k.decode() for k in c.scan_iter(f"{store.prefix}:*")}
            for c in _nodes(store)}


def _calls(store: RedisStore) -> dict[str, int]:
    """Command counts summed over the masters."""
    total: dict[str, int] = defaultdict(int)
    for client in _nodes(store):
        stats = client.info("commandstats")
        for cmd in ("get", "hmget", "multi", "exec"):
            total[cmd] += stats.get(f"cmdstat_{cmd}", {}).get("calls", 0)
    return dict(total)


def test_cluster_publish_lookups_swap_and_unlink(tmp_path, redis_cluster_url, monkeypatch):
    histories = make_histories(60)
    url = f"{redis_cluster_url}&prefix=clu"
    monkeypatch.setattr(redis_store, "BUCKET_USERS", 8)  # 60 users -> 8 buckets
    old = publish_cache_redis(build_tagged(tmp_path / "a", histories, None, K), url, keep_versions=1, grace_s=1.0,
                              progress=False)
    store = RedisStore(url)
    assert store.cluster and isinstance(store.client, redis.cluster.RedisCluster)
    old_keys = [k for k in store.version_keys(old).all() if not k.endswith(":scenario_fallback")]  # per user
    assert len(store.version_keys(old).buckets) == 8
    # The version's keys really live on several nodes, and exactly where the cluster's slot map says.
    by_node = _keys_by_node(store)
    assert set().union(*by_node.values()) >= set(old_keys)
    assert sum(1 for keys in by_node.values() if keys & set(old_keys)) >= 2, by_node
    for key in old_keys:
        assert key in by_node[str(store.client.get_node_from_key(key).port)]
    small = {store.client.keyslot(k) for k in old_keys if not k.endswith(":recs")}
    assert len(small) == 1  # meta, layout, catalogue, fallback: one slot, so one node reads a version's header

    users = sorted(histories)
    with CacheReader(url) as reader:  # sync reader
        assert reader.version == old
        assert reader.get("u0003").items == as_stored(expected_recs("u0003", histories["u0003"], K))
        got = reader.get_many([*users, "stranger"])
        assert [r.items for r in got[:-1]] == [as_stored(expected_recs(u, histories[u], K)) for u in users]
        assert got[-1].fallback and {r.version for r in got} == {old}

    version = store.open_version(old)

    async def lookup(groups: list[list[str]]):
        reader = store.async_rows(4)
        try:  # concurrent lookups share one pipeline, split per node by the cluster client
            return await asyncio.gather(*(version.lookup_rows_async(reader, group) for group in groups))
        finally:
            await reader.aclose()

    asyncio.run(lookup([["u0001"]]))  # the async client learns the slot map first
    batch = users[:20] + ["ghost"]
    before = _calls(store)
    ((live, rows), (live2, rows2)) = asyncio.run(lookup([batch, ["u0005"]]))
    after = _calls(store)
    assert live == live2 == old and rows[-1] is None
    assert [version.decode(r) for r in rows[:-1]] == [as_stored(expected_recs(u, histories[u], K)) for u in batch[:-1]]
    assert version.decode(rows2[0]) == as_stored(expected_recs("u0005", histories["u0005"], K))
    touched = len({bucket_of(u, 8) for u in batch}) + 1
    assert {c: after[c] - before[c] for c in after} == {"get": 1, "hmget": touched, "multi": 0, "exec": 0}

    pinned = CacheReader(url, refresh_interval_s=3600)
    new = publish_cache_redis(build_tagged(tmp_path / "b", histories, "new", K), url, keep_versions=1, grace_s=1.0,
                              progress=False)
    assert store.pointer() == new != old
    result = pinned.get_many(users)  # the lookup's round trip saw the pointer move: the whole batch is the new one
    assert {r.version for r in result} == {new} and all(i.startswith("new-") for r in result for i, _ in r.items)
    with pytest.raises(VersionGoneError):
        version.lookup(["u0001"])  # the sync lookup never answers from a version that is not the live one
    (live, rows), = asyncio.run(lookup([["u0001"]]))  # the async one answers from the version it holds (grace)
    assert live == new and version.decode(rows[0]) == as_stored(expected_recs("u0001", histories["u0001"], K))
    time.sleep(1.2)  # the grace is over: the next publish unlinks the old version from every node
    publish_cache_redis(build_tagged(tmp_path / "c", histories, "newer", K), url, keep_versions=1, grace_s=30.0,
                        progress=False)
    assert set().union(*_keys_by_node(store).values()).isdisjoint(old_keys)
    with pytest.raises(VersionGoneError):
        store.open_version(old)
    pinned.close()
    store.close()


def test_cluster_http_server_answers_each_batch_from_one_version_during_publishes(tmp_path, redis_cluster_url):
    """`alignrec serve` on the cluster as a real process: lookups and batches while two publishes land; every
    answer whole from one version, and each version served exactly one build."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi", reason="the server is the serve extra: pip install 'alignrec[serve]'")
    histories = make_histories(24)
    users = sorted(histories)
    url = f"{redis_cluster_url}&prefix=http"
    first = publish_cache_redis(build_tagged(tmp_path / "t1", histories, "t1", K), url, progress=False)
    builds = {tag: build_tagged(tmp_path / tag, histories, tag, K) for tag in ("t2", "t3")}
    seen: dict[str, set[str]] = defaultdict(set)  # version -> build tags its answers carried
    failures: list[str] = []
    with serve_process(url) as (base, _), httpx.Client(base_url=base, timeout=10) as http:
        body = http.get("/v1/users/u0002/recommendations").json()
        assert body["version"] == first and [x["item_id"] for x in body["items"]] == [f"t1-u0002-{r}" for r in
                                                                                     range(K)]
        done = threading.Event()
        published: list[str] = []

        def publish() -> None:
            try:
                for path in builds.values():
                    time.sleep(0.3)
                    published.append(publish_cache_redis(path, url, keep_versions=1, grace_s=30, progress=False))
            except Exception as exc:  # noqa: BLE001 - reported by the test's own assertion
                failures.append(f"publish failed: {exc!r}")
            finally:
                done.set()

        thread = threading.Thread(target=publish)
        thread.start()
        n, after_done = 0, 0
        while after_done < 20:
            n += 1
            group = [users[(n + j) % len(users)] for j in range(6)] + ["ghost"]
            r = http.post("/v1/recommendations:batch", json={"user_ids": group})
            if r.status_code != 200:
                failures.append(f"{r.status_code}: {r.text}")
                continue
            body = r.json()
            tags = {x["item_id"].split("-")[0] for res in body["results"] if not res["fallback"]
                    for x in res["items"]}
            tag = next(iter(tags), None)
            rows_ok = all([x["item_id"] for x in res["items"]] == [f"{tag}-{res['user_id']}-{i}" for i in range(K)]
                          for res in body["results"] if not res["fallback"])
            if len(tags) != 1 or not rows_ok or [x["fallback"] for x in body["results"]] != [False] * 6 + [True]:
                failures.append(f"mixed or wrong answer {body}")
            seen[body["version"]].update(tags)
            after_done += done.is_set()
        thread.join()
        final = http.get("/readyz").json()["version"]
    assert failures == []
    assert all(len(tags) == 1 for tags in seen.values()), dict(seen)
    assert seen[first] == {"t1"} and final == published[-1] and seen[published[-1]] == {"t3"}


@pytest.mark.parametrize(("url", "message"), [
    ("redis://127.0.0.1:7000/0?cluster=maybe", "cluster='maybe' is not a boolean"),
    ("unix:///tmp/redis.sock?cluster=true", "reached over TCP, not a unix socket"),
    ("redis://127.0.0.1:7000/3?cluster=true", r"only database 0 \(got 3\)"),
    ("redis://127.0.0.1:notaport/0?cluster=true", "is not a usable Redis URL"),
    ("redis://?cluster=true", r"is not a usable Redis URL \(no host\)"),
])
def test_cluster_url_mistakes_are_one_line_naming_the_form(url, message):
    with pytest.raises(UserError, match=message) as info:
        RedisStore(url)
    assert "redis://any-node:port/0?cluster=true" in str(info.value) and "\n" not in str(info.value)


def test_cluster_url_keeps_redis_py_parameters_and_unreachable_cluster_is_one_line():
    parsed = parse_location("rediss://:pw@h:7001/0?cluster=TRUE&prefix=p&socket_keepalive=true&prefix=q")
    assert (parsed.cluster, parsed.prefix) == (True, "p")
    assert parsed.server_url == "rediss://:pw@h:7001/0?socket_keepalive=true"
    assert not parse_location("redis://h:6379/2?cluster=false").cluster
    assert parse_location("unix:///run/redis.sock?db=1&prefix=p").server_url == "unix:///run/redis.sock?db=1"
    from tests.inference.test_cache_cli import _cli

    dead = f"redis://127.0.0.1:{free_cluster_port()}/0?cluster=true"
    with pytest.raises(UserError, match=rf"cannot read from Redis at {re.escape(dead)} \(RedisClusterException: "
                                        r"Redis Cluster cannot be connected.*nothing was changed"):
        _cli(["cache", "get", "u1", "--store_dir", dead])


def test_cluster_lookups_wait_for_a_turn_then_fail_as_a_redis_error():
    """A cluster client's pools raise when full instead of waiting, so ``AsyncRows`` bounds the pipelines in flight:
    one more waits for a turn, at most ``wait_s``, then fails as a Redis ``ConnectionError`` (the server's 503)."""
    from inference.cache.redis_store import AsyncRows

    class SlowPipeline:
        def __init__(self):
            self.commands = 0

        def get(self, key):
            self.commands += 1

        async def execute(self):
            await asyncio.sleep(0.3)
            return [b"v1"] + [[b"v1", b"row"]] * (self.commands - 1)

    class Client:
        def pipeline(self, transaction):
            assert transaction is False
            return SlowPipeline()

        async def aclose(self):
            pass

    class Version:
        def _queue(self, pipe, keys):
            pipe.commands += 1
            return [[0]]

        def _collect(self, plan, replies, n):
            return [replies[0][1]]

    async def scenario():
        rows = AsyncRows(Client(), "p:current", max_pipelines=1, wait_s=0.05)
        first = asyncio.ensure_future(rows.rows(Version(), ["u1"]))
        await asyncio.sleep(0.01)  # its own pipeline, in flight
        with pytest.raises(redis.exceptions.ConnectionError, match="no free Redis connection within 0.05 s"):
            await rows.rows(Version(), ["u2"])
        assert await first == ("v1", [b"row"])
        assert await rows.rows(Version(), ["u3"]) == ("v1", [b"row"])  # the turn was given back
        await rows.aclose()

    asyncio.run(scenario())
