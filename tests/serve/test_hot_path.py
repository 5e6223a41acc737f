"""The raw ASGI lookup path in process: byte-identical JSON against the old route's rendering, the bearer token,
docs off by default, one Redis round trip per batch, and swaps prepared off the request path."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import quote

import pytest

from inference.cache import CacheReader, build_cache, publish_cache
from inference.cache.reader import CacheResult
from tests.inference.cache_fakes import make_histories
from tests.serve.conftest import SCENARIO_POPULARITY, build_scenario_cache, build_tagged

pytest.importorskip("fastapi", reason="the server is the serve extra: pip install 'alignrec[serve]'")
from starlette.testclient import TestClient  # noqa: E402

from inference.serve.app import create_app  # noqa: E402
from inference.serve.config import TOKEN_ENV, ServeConfig  # noqa: E402

K = 5
ITEMS = ["plain", 'quote"d', "back\\slash", "日本語", "tab\tand\nnewline", "🙂", "</script>", "x" * 40, "é"]
USERS = ["u1", 'u"2', "ü 3", "a+b", "back\\slash", "日本"]
SCORES = [12.375, 0.0, -0.0, -1.0e-3, -3.14159, -60_000.0, 1.0e-7]


def _reference(result: CacheResult, k: int) -> dict:
    """The old FastAPI route's body: dicts, then json.dumps (what the hot path must reproduce byte for byte)."""
    scenario = {} if result.scenario is None else {"scenario": result.scenario}
    return {"user_id": result.user_id, **scenario, "fallback": result.fallback,
            "items": [{"item_id": i, "score": s, "rank": r} for r, (i, s) in enumerate(result.items[:k], start=1)]}


def _dumps(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@pytest.fixture
def odd_store(tmp_path):
    recs = {u: [(ITEMS[(n + r) % len(ITEMS)], SCORES[r]) for r in range(K)] for n, u in enumerate(USERS)}
    build_cache(lambda users, hists: [recs[u] for u in users], {u: [] for u in recs}, tmp_path / "c", k=K,
                progress=False)
    publish_cache(tmp_path / "c", tmp_path / "store", popularity={"é": 3, "🙂": 11, "p": 2**40}, progress=False)
    return tmp_path / "store"


def test_hot_route_bytes_equal_the_old_routes_rendering(odd_store):
    with TestClient(create_app(ServeConfig(store_dir=str(odd_store)))) as http, CacheReader(odd_store) as reader:
        for user in [*USERS, "nobody"]:
            for k in (None, 1, 3, K):
                r = http.get(f"/v1/users/{quote(user, safe='')}/recommendations", params={} if k is None else {"k": k})
                result = reader.get(user)
                assert r.status_code == 200 and r.headers["content-type"] == "application/json"
                assert r.content == _dumps({**_reference(result, k or K), "version": result.version}), user
        users = [*USERS, "nobody", "u1"]
        for k in (None, 2):
            r = http.post("/v1/recommendations:batch", json={"user_ids": users, **({} if k is None else {"k": k})})
            results = reader.get_many(users)
            assert r.content == _dumps({"version": results[0].version,
                                        "results": [_reference(x, k or K) for x in results]})


def test_hot_route_bytes_equal_the_reference_on_a_per_scenario_store(tmp_path):
    store = tmp_path / "store"
    publish_cache(build_scenario_cache(tmp_path / "c", 3), store, scenario_popularity=SCENARIO_POPULARITY,
                  fallback_k=2, progress=False)
    with TestClient(create_app(ServeConfig(store_dir=str(store)))) as http, CacheReader(store) as reader:
        for user in ("u1", "u3", "ghost"):
            r = http.get(f"/v1/users/{user}/recommendations", params={"scenario": "kitchen", "k": 2})
            result = reader.get(user, "kitchen")
            assert r.content == _dumps({**_reference(result, 2), "version": result.version})
        r = http.post("/v1/recommendations:batch", json={"user_ids": ["u2", "u3"], "scenario": "food"})
        results = reader.get_many(["u2", "u3"], "food")
        assert r.content == _dumps({"version": results[0].version, "results": [_reference(x, 3) for x in results]})


def test_bearer_token_guards_every_endpoint_but_the_health_checks(tmp_path, monkeypatch):
    store = tmp_path / "store"
    publish_cache(build_tagged(tmp_path / "c", make_histories(4), None, 3), store, progress=False)
    monkeypatch.setenv(TOKEN_ENV, "s3cret")  # the variable is the default when --token is not given
    with TestClient(create_app(ServeConfig(store_dir=str(store), docs=True))) as http:
        good = {"Authorization": "Bearer s3cret"}
        for method, path, body in [("GET", "/v1/users/u0001/recommendations", None), ("GET", "/metrics", None),
                                   ("POST", "/v1/recommendations:batch", {"user_ids": ["u0001"]}),
                                   ("GET", "/openapi.json", None), ("GET", "/docs", None), ("GET", "/nowhere", None)]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                            {"Authorization": "Basic s3cret"}):
                r = http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, headers)
                assert r.json() == {"error": r.json()["error"], "status": 401}
                assert "Authorization: Bearer <token>" in r.json()["error"]
            r = http.request(method, path, json=body, headers=good)
            assert r.status_code == (404 if path == "/nowhere" else 200), (path, r.text)
        assert http.get("/v1/users/u0001/recommendations", headers={"authorization": "bearer s3cret"}).status_code == 200
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200  # probes: no token
        metrics = http.get("/metrics", headers=good).text
        assert 'alignrec_serve_requests_total{endpoint="/v1/users/{user_id}/recommendations",status="401"} 4.0' in metrics
    cli = ServeConfig(store_dir=str(store), token="flag-wins")
    assert cli.resolved_token() == "flag-wins"
    with pytest.raises(ValueError, match="token must be a non-empty string without spaces"):
        ServeConfig(store_dir=str(store), token="two words")


def test_docs_and_openapi_are_off_by_default_and_describe_the_lookups_when_on(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    store = tmp_path / "store"
    publish_cache(build_tagged(tmp_path / "c", make_histories(4), None, 3), store, progress=False)
    with TestClient(create_app(ServeConfig(store_dir=str(store)))) as http:
        for path in ("/docs", "/openapi.json", "/redoc"):
            r = http.get(path)
            assert r.status_code == 404 and r.json() == {"error": "Not Found", "status": 404}
        assert http.get("/v1/users/u0001/recommendations").status_code == 200  # no token configured: open
    with TestClient(create_app(ServeConfig(store_dir=str(store), docs=True))) as http:
        assert http.get("/docs").status_code == 200
        paths = http.get("/openapi.json").json()["paths"]
        assert {"/v1/users/{user_id}/recommendations", "/v1/recommendations:batch", "/readyz"} <= set(paths)
        body = paths["/v1/recommendations:batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert set(body["properties"]) == {"user_ids", "k", "scenario"}


def test_redis_batch_is_one_pipelined_round_trip(tmp_path, redis_url, monkeypatch):
    """Counted on both ends: the server's command statistics (GET + one HMGET per bucket, no MULTI) and the
    client's socket writes (one send for the whole pipeline)."""
    from redis.asyncio.connection import AbstractConnection

    from inference.cache import redis_store
    from inference.cache.redis_store import RedisStore, bucket_of, publish_cache_redis

    histories = make_histories(40)
    url = f"{redis_url}?prefix=roundtrip"
    monkeypatch.setattr(redis_store, "BUCKET_USERS", 8)  # 40 users -> 5 buckets
    publish_cache_redis(build_tagged(tmp_path / "c", histories, None, 3), url, progress=False)
    sync = RedisStore(url).client
    sends = [0]
    original = AbstractConnection.send_packed_command

    async def counting(self, command, check_health=True):
        sends[0] += 1
        return await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)

    def calls() -> dict[str, int]:
        stats = sync.info("commandstats")
        return {c: stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("get", "hmget", "multi", "exec", "exists")}

    users = sorted(histories)[:12] + ["ghost"]
    with TestClient(create_app(ServeConfig(store_dir=url))) as http:
        http.get("/v1/users/u0001/recommendations")  # warm the connection pool (its handshake is not a lookup)
        before, sends[0] = calls(), 0
        r = http.post("/v1/recommendations:batch", json={"user_ids": users, "k": 2})
        after = calls()
    assert r.status_code == 200 and [x["fallback"] for x in r.json()["results"]] == [False] * 12 + [True]
    assert sends[0] == 1  # one round trip
    touched = len({bucket_of(u, 5) for u in users})
    assert {c: after[c] - before[c] for c in after} == {"get": 1, "hmget": touched, "multi": 0, "exec": 0, "exists": 0}


def test_a_publish_is_prepared_off_the_request_path(tmp_path, monkeypatch):
    """While the new version is being prepared (held here), requests keep being answered, whole, from the old one;
    then the reference swaps and every answer names the new version."""
    from inference.serve import live as live_module

    histories = make_histories(6)
    store = tmp_path / "store"
    old = publish_cache(build_tagged(tmp_path / "a", histories, "old", 2), store, progress=False).stem
    release, entered = threading.Event(), threading.Event()
    real = live_module.prepare_version

    def held(store_, name, token):
        if name != old:
            entered.set()
            assert release.wait(60)
        return real(store_, name, token)

    monkeypatch.setattr(live_module, "prepare_version", held)
    with TestClient(create_app(ServeConfig(store_dir=str(store)))) as http:
        assert http.get("/v1/users/u0001/recommendations").json()["version"] == old
        new = publish_cache(build_tagged(tmp_path / "b", histories, "new", 2), store, progress=False).stem
        for _ in range(20):  # the first of these starts the preparation, none waits for it
            started = time.monotonic()
            body = http.get("/v1/users/u0002/recommendations").json()
            assert time.monotonic() - started < 5
            assert body["version"] == old and {i["item_id"].split("-")[0] for i in body["items"]} == {"old"}
        assert entered.wait(30)
        release.set()
        deadline = time.monotonic() + 30
        while (body := http.get("/v1/users/u0002/recommendations").json())["version"] != new:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert {i["item_id"].split("-")[0] for i in body["items"]} == {"new"}
        assert http.get("/readyz").json()["version"] == new


@pytest.mark.parametrize("raw", [b"", b"k=10", b"k=10&scenario=kitchen", b"k=1&k=2", b"scenario=a%20b+c", b"k",
                                 b"k=&x=1", b"&&k=3&", b"sc%C3%A9n=%E6%97%A5", b"a=%ZZ", "é=ü".encode("latin-1"),
                                 b"a==b", b"%2B=%2b+"])
def test_query_parser_reads_what_starlette_reads(raw):
    from urllib.parse import parse_qsl

    from inference.serve.lookups import query_params

    assert query_params(raw) == dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


def test_workers_zero_means_one_per_core(tmp_path):
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert ServeConfig(store_dir=str(tmp_path), workers=0).resolved_workers() == cores
    assert ServeConfig(store_dir=str(tmp_path), workers=3).resolved_workers() == 3
    with pytest.raises(ValueError, match="workers must be >= 1, or 0 for one per CPU core"):
        ServeConfig(store_dir=str(tmp_path), workers=-1)
