"""The single-server Redis lookup path of the server: ``redis_conn.RoundTrips`` (packed commands on redis-py
connections, no pipeline objects) and the coalescing in front of it (``redis_store.AsyncRows``): the connection
stays in step after an error reply, a timeout or a cancellation; a connection the server dropped while idle is
reconnected; a full set of connections waits, then fails as a Redis error; a cancelled lookup never takes the
lookups that share its round trip with it; and the hot route over Redis answers the bytes it answers over SQLite."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from inference.cache import VersionGoneError
from tests.inference.cache_fakes import as_stored, expected_recs, make_histories
from tests.serve.conftest import build_tagged

pytest.importorskip("redis", reason="the redis client is part of the serve extra: pip install 'alignrec[serve]'")
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from inference.cache.redis_conn import RoundTrips  # noqa: E402
from inference.cache.redis_store import (  # noqa: E402
    MARKER,
    RedisStore,
    _RedisVersion,
    _ServerRows,
    pack_command,
    publish_cache_redis,
)


def _round_trips(url: str, max_connections: int = 1) -> RoundTrips:
    return RoundTrips(aioredis.ConnectionPool.from_url(url, socket_timeout=None), max_connections, 30.0, 30.0)


def _cmd(*args: str) -> bytes:
    return pack_command([a.encode() for a in args])


@pytest.mark.parametrize("commands", [
    [["GET", "p:current"]],
    [["GET", "p:current"], ["HMGET", "p:v:{v-1:3}:recs", MARKER, "u1", "ü \r\n$*"]],
    [["HMGET", "k", ""], ["SET", "x" * 70_000, "y"]],  # an empty argument; one past redis-py's buffer cutoff
])
def test_pack_command_equals_redis_pys_packing(commands):
    conn = aioredis.Connection()
    assert b"".join(pack_command([a.encode() for a in c]) for c in commands) == b"".join(conn.pack_commands(commands))


def test_round_trips_stay_in_step_after_an_error_reply_a_timeout_and_a_cancellation(redis_url):
    sync = redis.Redis.from_url(redis_url)
    sync.set("rt:k", "v1")
    sync.set("rt:string", "not a hash")

    async def scenario():
        trips = _round_trips(redis_url)  # one connection: every call below reuses it
        try:
            (first_id,) = await trips.call(_cmd("CLIENT", "ID"), 1)
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):  # the error reply is the 2nd of 3
                await trips.call(_cmd("GET", "rt:k") + _cmd("HMGET", "rt:string", "f") + _cmd("GET", "rt:k"), 3)
            assert await trips.call(_cmd("GET", "rt:k") + _cmd("CLIENT", "ID"), 2) == [b"v1", first_id]  # same socket

            trips.timeout_s = 0.2
            with pytest.raises(redis.TimeoutError, match="Redis did not answer within 0.2 s"):
                await trips.call(_cmd("BLPOP", "rt:empty", "3"), 1)  # would answer (nil) after 3 s
            trips.timeout_s = 30.0
            got, second_id = await trips.call(_cmd("GET", "rt:k") + _cmd("CLIENT", "ID"), 2)
            assert got == b"v1" and second_id != first_id  # a new connection: not the BLPOP's late nil

            task = asyncio.ensure_future(trips.call(_cmd("BLPOP", "rt:empty", "3"), 1))
            while sync.info("clients")["blocked_clients"] < 1:  # it is waiting in Redis
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            got, third_id = await trips.call(_cmd("GET", "rt:k") + _cmd("CLIENT", "ID"), 2)
            assert got == b"v1" and third_id != second_id
        finally:
            await trips.aclose()

    asyncio.run(scenario())


def test_a_connection_the_server_dropped_while_idle_is_reconnected(tmp_path, redis_url):
    """The server closes the lookup connection between two lookups (a restart, its idle timeout, CLIENT KILL): the
    next lookup connects again, with the handshake the URL asks for (here a client name), and answers exactly."""
    histories = make_histories(6)
    url = f"{redis_url}?prefix=dropped&client_name=dropped-test"
    name = publish_cache_redis(build_tagged(tmp_path / "c", histories, None, 3), url, progress=False)
    store = RedisStore(url)
    version = store.open_version(name)

    def kill_lookup_connections() -> int:
        own = store.client.client_id()
        ids = [c["id"] for c in store.client.client_list() if c["name"] == "dropped-test" and int(c["id"]) != own]
        return sum(store.client.client_kill_filter(_id=i) for i in ids)

    async def scenario():
        rows = store.async_rows(2)
        try:
            first = await version.lookup_rows_async(rows, ["u0002"])
            assert kill_lookup_connections() >= 1  # the lookup connection (and publish's, still open)
            await asyncio.sleep(0.1)
            return first, await version.lookup_rows_async(rows, ["u0002"])
        finally:
            await rows.aclose()

    (live, (row,)), (live2, (row2,)) = asyncio.run(scenario())
    assert live == live2 == name and row == row2
    assert version.decode(row2) == as_stored(expected_recs("u0002", histories["u0002"], 3))
    assert kill_lookup_connections() == 0  # aclose closed it
    store.close()


class _Gate:
    """A stand-in for redis-py's pool and connections: a round trip waits until ``release()``."""

    def __init__(self):
        self.open = asyncio.Event()
        self.sent: list[bytes] = []

    def get_encoder(self):
        return aioredis.ConnectionPool().get_encoder()

    def make_connection(self):
        gate = self

        class Conn:
            is_connected = True

            async def send_packed_command(self, packed):
                gate.sent.append(packed)
                await gate.open.wait()

            async def read_response(self, disable_decoding):
                return b"ok"

            async def disconnect(self, nowait=False):
                pass

        return Conn()

    async def aclose(self):
        pass


def test_round_trips_beyond_the_connections_wait_then_fail_as_a_redis_error():
    async def scenario():
        gate = _Gate()
        trips = RoundTrips(gate, 1, wait_s=0.05, timeout_s=30.0)
        first = asyncio.ensure_future(trips.call(b"first", 1))
        await asyncio.sleep(0.01)  # holds the only connection
        with pytest.raises(redis.ConnectionError, match="no free Redis connection within 0.05 s"):
            await trips.call(b"second", 1)
        gate.open.set()
        assert await first == [b"ok"]
        assert await trips.call(b"third", 1) == [b"ok"]  # the connection was given back
        assert gate.sent == [b"first", b"third"]

    asyncio.run(scenario())


class _FakeRedis:
    """``RoundTrips`` in front of a fake Redis: parses each packed request (hiredis: the server's own reading of
    RESP) and answers GET with the pointer and HMGET with the marker and a row per field (None for ``ghost``, no
    marker for a bucket in ``dropped``), after ``gate`` opens."""

    def __init__(self, pointer: bytes = b"v1", dropped: frozenset[str] = frozenset()):
        self.pointer, self.dropped = pointer, dropped
        self.gate = asyncio.Event()
        self.gate.set()
        self.requests: list[list[list[bytes]]] = []

    encode = staticmethod(lambda text: text.encode("utf-8"))

    async def call(self, packed: bytes, replies: int) -> list:
        import hiredis  # the tests that use this fake skip without it

        reader = hiredis.Reader()
        reader.feed(packed)
        commands = []
        while (command := reader.gets()) is not False:
            commands.append(command)
        assert len(commands) == replies
        self.requests.append(commands)
        await self.gate.wait()
        out = []
        for name, *args in commands:
            if name == b"GET":
                out.append(self.pointer)
            else:
                bucket, marker, *fields = args
                assert marker == MARKER.encode()
                out.append([None if bucket.decode() in self.dropped else b"v",
                            *[None if f == b"ghost" else b"row-" + f for f in fields]])
        return out

    async def aclose(self):
        pass


def _version(name: str) -> _RedisVersion:
    return _RedisVersion(name, {"k": 1}, [], bucket_keys=(f"p:v:{{{name}:0}}:recs", f"p:v:{{{name}:1}}:recs"),
                         current_key="p:current")


def test_lookups_arriving_together_share_one_round_trip_each_with_its_own_answer():
    pytest.importorskip("hiredis", reason="the fake Redis reads requests with hiredis (redis[hiredis])")
    v1, v2 = _version("v1"), _version("v2")

    async def scenario():
        fake = _FakeRedis(dropped=frozenset(v2.bucket_keys))
        rows = _ServerRows(fake, "p:current")
        answers = await asyncio.gather(rows.rows(v1, ["u1", "ghost", "u3"]), rows.rows(v1, ["u4"]),
                                       rows.rows(v2, ["u5"]), return_exceptions=True)
        return fake, answers

    fake, answers = asyncio.run(scenario())
    assert len(fake.requests) == 1 and [c[0] for c in fake.requests[0]].count(b"GET") == 1
    assert answers[0] == ("v1", [b"row-u1", None, b"row-u3"]) and answers[1] == ("v1", [b"row-u4"])
    assert isinstance(answers[2], VersionGoneError)  # its bucket is gone: its own error, not the others'


@pytest.mark.parametrize("when", ["before sending", "during the round trip"])
def test_a_cancelled_lookup_never_takes_the_others_sharing_its_round_trip_with_it(when):
    pytest.importorskip("hiredis", reason="the fake Redis reads requests with hiredis (redis[hiredis])")
    version = _version("v1")

    async def scenario():
        fake = _FakeRedis()
        rows = _ServerRows(fake, "p:current")
        if when == "during the round trip":
            fake.gate.clear()
        first, *others = [asyncio.ensure_future(rows.rows(version, [u])) for u in ("u1", "u2", "u3")]
        await asyncio.sleep(0)  # all three queued; the first (the one that sends) waits one loop iteration
        if when == "during the round trip":
            while not fake.requests:
                await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        fake.gate.set()
        return fake, await asyncio.wait_for(asyncio.gather(*others), 30)  # a lost lookup fails, never hangs

    fake, answers = asyncio.run(scenario())
    assert answers == [("v1", [b"row-u2"]), ("v1", [b"row-u3"])]
    fields = [[args[2:] for name, *args in request if name == b"HMGET"] for request in fake.requests]
    if when == "before sending":  # sent without it
        assert fields == [[[b"u2"], [b"u3"]]]
    else:  # sent with it, then again without it
        assert fields == [[[b"u1"], [b"u2"], [b"u3"]], [[b"u2"], [b"u3"]]]


def test_a_failed_round_trip_fails_every_lookup_in_it():
    version = _version("v1")

    class Down(_FakeRedis):
        async def call(self, packed, replies):
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    async def scenario():
        rows = _ServerRows(Down(), "p:current")
        return await asyncio.gather(*(rows.rows(version, [u]) for u in ("u1", "u2")), return_exceptions=True)

    assert [type(x) for x in asyncio.run(scenario())] == [redis.ConnectionError] * 2


def test_redis_hot_route_answers_the_bytes_sqlite_answers_for_odd_ids_and_scenarios(tmp_path, redis_url):
    """User ids and items that need escaping or are not ASCII, unknown users, k, batches and a per-scenario store
    (``user\\x1fscenario`` hash fields): the Redis store's hot route answers byte for byte what the SQLite one does
    (the version name aside)."""
    pytest.importorskip("fastapi", reason="the server is the serve extra: pip install 'alignrec[serve]'")
    from starlette.testclient import TestClient

    from inference.cache import build_cache, publish_cache
    from inference.serve.app import create_app
    from inference.serve.config import ServeConfig
    from tests.serve.conftest import SCENARIO_POPULARITY, build_scenario_cache
    from tests.serve.test_hot_path import ITEMS, SCORES, USERS, K

    recs = {u: [(ITEMS[(n + r) % len(ITEMS)], SCORES[r]) for r in range(K)] for n, u in enumerate(USERS)}
    build_cache(lambda users, hists: [recs[u] for u in users], {u: [] for u in recs}, tmp_path / "c", k=K,
                progress=False)
    scenario_cache = build_scenario_cache(tmp_path / "s", 3)
    popularity = {"é": 3, "🙂": 11, "p": 2**40}
    cases = [("GET", f"/v1/users/{quote(u, safe='')}/recommendations", {"k": k} if k else {}, None)
             for u in [*USERS, "nobody"] for k in (None, 1, K)]
    cases.append(("POST", "/v1/recommendations:batch", {}, {"user_ids": [*USERS, "nobody", USERS[0]], "k": 2}))
    scenario_cases = [("GET", f"/v1/users/{u}/recommendations", {"scenario": s}, None)
                      for u in ("u1", "u2", "u3", "ghost") for s in ("food", "kitchen")]
    scenario_cases.append(("POST", "/v1/recommendations:batch", {}, {"user_ids": ["u1", "u3", "x"],
                                                                     "scenario": "kitchen"}))
    for name, cache, requests, options in [
            ("plain", tmp_path / "c", cases, {"popularity": popularity}),
            ("scen", scenario_cache, scenario_cases, {"scenario_popularity": SCENARIO_POPULARITY, "fallback_k": 2})]:
        url = f"{redis_url}?prefix=bytes-{name}"
        publish_cache(cache, tmp_path / f"store-{name}", progress=False, **options)
        publish_cache_redis(cache, url, progress=False, **options)
        answers = []
        for store in (str(tmp_path / f"store-{name}"), url):
            with TestClient(create_app(ServeConfig(store_dir=store))) as http:
                version = http.get("/readyz").json()["version"]
                bodies = [http.request(method, path, params=params, json=body) for method, path, params, body in requests]
            assert all(r.status_code == 200 for r in bodies), [r.text for r in bodies if r.status_code != 200]
            answers.append([r.content.replace(f'"{version}"'.encode(), b'"V"') for r in bodies])
        assert answers[0] == answers[1], name
