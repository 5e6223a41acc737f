"""`alignrec serve` as a real process over real HTTP, on a SQLite store (2 workers) and a Redis store (1 worker).

Every endpoint's success and error responses, the fallback flag, metrics summed across workers, publishes
during a stream of requests (each response old or new, never mixed, never failed), refusal to start on a
missing or corrupt store, graceful exit on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from inference.cache import publish_cache
from tests.inference.cache_fakes import as_stored, expected_recs, make_histories
from tests.serve.conftest import SCENARIO_POPULARITY, build_scenario_cache, build_tagged, serve_process

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the server is the serve extra: pip install 'alignrec[serve]'")

K, NUM_USERS, MAX_BATCH = 4, 30, 8
POPULARITY = {"i3": 9, "i5": 4, "i7": 4, "i1": 2, "i0": 1}
HISTORIES = make_histories(NUM_USERS)
FALLBACK = [("i3", 9.0), ("i5", 4.0), ("i7", 4.0), ("i1", 2.0)]


class Server:
    def __init__(self, base: str, kind: str, publish, metrics_dir: Path | None, toggle_pointer):
        self.base, self.kind, self.publish, self.metrics_dir = base, kind, publish, metrics_dir
        self.toggle_pointer = toggle_pointer  # (hide: bool): move the live-version pointer away / back
        self.http = httpx.Client(base_url=base, timeout=10)

    def metric(self, name: str, **labels: str) -> float:
        text = self.http.get("/metrics").text
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$"
        values = [float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE)]
        return sum(values)


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"serve-{request.param}")
    cache = build_tagged(tmp / "v1", HISTORIES, None, K)
    limits = ("--max_batch_users", str(MAX_BATCH), "--max_body_bytes", "4096")
    if request.param == "sqlite":
        store = tmp / "store"
        publish_cache(cache, store, popularity=POPULARITY, progress=False)
        metrics_dir = tmp / "metrics"
        metrics_dir.mkdir()

        def publish(path):
            return publish_cache(path, store, keep_versions=2, progress=False).stem

        def toggle(hide: bool) -> None:
            names = ("CURRENT", "CURRENT.hidden")
            os.replace(store / names[not hide], store / names[hide])

        ctx = serve_process(store, "--workers", "2", "--worker_healthcheck_timeout_s", "600", *limits,
                            env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, ready_files=(metrics_dir, 2))
    else:
        from inference.cache.redis_store import publish_cache_redis

        store = f"{request.getfixturevalue('redis_url')}?prefix=http"
        publish_cache_redis(cache, store, popularity=POPULARITY, progress=False)
        metrics_dir = None

        def publish(path):
            return publish_cache_redis(path, store, keep_versions=1, grace_s=30, progress=False)

        def toggle(hide: bool) -> None:
            from inference.cache.redis_store import RedisStore

            keys = ("http:current", "http:current-hidden")
            RedisStore(store).client.rename(keys[not hide], keys[hide])

        ctx = serve_process(store, *limits)
    with ctx as (base, _):
        yield Server(base, request.param, publish, metrics_dir, toggle)
    if metrics_dir is not None:  # each drained worker dropped its live-gauge file (its version stops counting)
        assert list(metrics_dir.glob("gauge_livemax_*.db")) == []


def _items(body):
    return [(x["item_id"], x["score"]) for x in body["items"]]


def test_user_lookup_exact_and_unknown_user_falls_back(server):
    version = server.http.get("/readyz").json()["version"]
    for user, history in HISTORIES.items():
        body = server.http.get(f"/v1/users/{user}/recommendations").json()
        assert body["user_id"] == user and body["fallback"] is False and body["version"] == version
        assert _items(body) == as_stored(expected_recs(user, history, K))
        assert [x["rank"] for x in body["items"]] == [1, 2, 3, 4]
    body = server.http.get("/v1/users/u0007/recommendations", params={"k": 2}).json()
    assert _items(body) == as_stored(expected_recs("u0007", HISTORIES["u0007"], K))[:2]
    body = server.http.get("/v1/users/nobody/recommendations", params={"k": 3}).json()
    assert body["fallback"] is True and _items(body) == FALLBACK[:3]


@pytest.mark.parametrize(("params", "message"), [
    ({"k": 0}, "query k: must be >= 1 (got 0)"),
    ({"k": -3}, "query k: must be >= 1 (got -3)"),
    ({"k": "ten"}, "query k: must be an integer >= 1 (got 'ten')"),
    ({"k": K + 1}, f"k={K + 1} is above the cached K={K}"),
    ({"scenario": "home"}, "this store has no scenarios"),
])
def test_user_lookup_bad_input_is_422_with_message(server, params, message):
    r = server.http.get("/v1/users/u0001/recommendations", params=params)
    assert r.status_code == 422 and message in r.json()["error"] and r.json()["status"] == 422


def test_batch_one_version_and_fallback_flags(server):
    users = ["u0003", "ghost", "u0011", "u0003"]
    r = server.http.post("/v1/recommendations:batch", json={"user_ids": users, "k": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["version"] == server.http.get("/readyz").json()["version"]
    assert [x["user_id"] for x in body["results"]] == users
    assert [x["fallback"] for x in body["results"]] == [False, True, False, False]
    assert _items(body["results"][0]) == as_stored(expected_recs("u0003", HISTORIES["u0003"], K))[:2]
    assert _items(body["results"][1]) == FALLBACK[:2]


@pytest.mark.parametrize(("content", "status", "message"), [
    ('{"user_ids": ["u1",', 422, "malformed JSON body"),
    ("", 422, "empty request body"),
    ('{"user_ids": []}', 422, "body user_ids: List should have at least 1 item"),
    ('{"user_ids": "u1"}', 422, "body user_ids: Input should be a valid array"),
    ('{"user_ids": ["u1"], "k": 0}', 422, "body k: Input should be greater than or equal to 1"),
    ('{"user_ids": ["u1"], "k": 99}', 422, f"k=99 is above the cached K={K}"),
    ('{"users": ["u1"]}', 422, "body users: Extra inputs are not permitted"),
    ('{"user_ids": ["u1"], "scenario": "home"}', 422, "this store has no scenarios"),
    (json.dumps({"user_ids": ["u1"] * (MAX_BATCH + 1)}), 413, f"above the limit of {MAX_BATCH}"),
    (json.dumps({"user_ids": ["x" * 5000]}), 413, "above the limit of 4096"),
])
def test_batch_bad_input(server, content, status, message):
    r = server.http.post("/v1/recommendations:batch", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["error"], r.text


def test_health_ready_unknown_route_and_metrics(server):
    assert server.http.get("/healthz").json() == {"status": "ok"}
    ready = server.http.get("/readyz").json()
    assert ready["status"] == "ready" and ready["k"] == K and ready["num_users"] == NUM_USERS
    assert server.http.get("/v1/nothing").status_code == 404
    before = {name: server.metric(name) for name in ("alignrec_serve_lookups_total", "alignrec_serve_fallbacks_total")}
    ok_before = server.metric("alignrec_serve_requests_total", endpoint="/v1/users/{user_id}/recommendations",
                              status="200")
    bad_before = server.metric("alignrec_serve_requests_total", endpoint="/v1/users/{user_id}/recommendations",
                               status="422")
    # Fresh connections so that, with several workers, the requests spread over them.
    for n in range(12):
        assert httpx.get(f"{server.base}/v1/users/{'u0001' if n % 3 else 'zz'}/recommendations").status_code == 200
    httpx.post(f"{server.base}/v1/recommendations:batch", json={"user_ids": ["u0001", "zz", "yy"]})
    httpx.get(f"{server.base}/v1/users/u0001/recommendations", params={"k": 0})
    assert server.metric("alignrec_serve_lookups_total") - before["alignrec_serve_lookups_total"] == 15
    assert server.metric("alignrec_serve_fallbacks_total") - before["alignrec_serve_fallbacks_total"] == 4 + 2
    assert server.metric("alignrec_serve_requests_total", endpoint="/v1/users/{user_id}/recommendations",
                         status="200") - ok_before == 12
    assert server.metric("alignrec_serve_requests_total", endpoint="/v1/users/{user_id}/recommendations",
                         status="422") - bad_before == 1
    assert server.metric("alignrec_serve_request_latency_seconds_count",
                         endpoint="/v1/users/{user_id}/recommendations") >= 13
    assert server.metric("alignrec_serve_cache_version_info", version=ready["version"]) == 1
    if server.metrics_dir is not None:  # two workers, each with its own sample files, one summed /metrics
        pids = {p.stem.rsplit("_", 1)[1] for p in server.metrics_dir.glob("gauge_livemax_*.db")}
        assert len(pids) == 2


def test_unreadable_store_is_503_not_500_and_recovers(server):
    server.toggle_pointer(True)
    try:
        for _ in range(4):  # fresh connections: every worker sees it
            r = httpx.get(f"{server.base}/v1/users/u0001/recommendations")
            assert r.status_code == 503 and "cache store unavailable" in r.json()["error"], r.text
            assert "no cache is published" in r.json()["error"]
        assert httpx.get(f"{server.base}/readyz").status_code == 503
        assert httpx.get(f"{server.base}/healthz").status_code == 200  # alive, just not ready
    finally:
        server.toggle_pointer(False)
    for _ in range(4):
        r = httpx.get(f"{server.base}/v1/users/u0001/recommendations")
        assert r.status_code == 200 and _items(r.json()) == as_stored(expected_recs("u0001", HISTORIES["u0001"], K))


def test_publishes_during_a_request_stream_give_old_or_new_never_mixed_never_failed(server, tmp_path):
    tags = ["t2", "t3"]
    builds = {tag: build_tagged(tmp_path / tag, HISTORIES, tag, K) for tag in tags}
    users = sorted(HISTORIES)
    failures: list[str] = []
    seen: dict[str, set[str]] = defaultdict(set)  # version -> build tags its responses carried
    counts = [0]
    stop = threading.Event()

    def tag_of(user: str, items: list[tuple[str, float]]) -> str:
        if items == as_stored(expected_recs(user, HISTORIES[user], K)):
            return "v1"
        found = {i.split("-")[0] for i, _ in items}
        want = [(f"{next(iter(found))}-{user}-{r}", -float(r)) for r in range(K)]
        return next(iter(found)) if len(found) == 1 and items == want else f"MIXED {items}"

    def stream(batch: bool) -> None:
        with httpx.Client(base_url=server.base, timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if batch:
                        group = [users[(n + j) % len(users)] for j in range(5)]
                        r = client.post("/v1/recommendations:batch", json={"user_ids": group})
                        body = r.json()
                        answers = [(x["user_id"], _items(x), x["fallback"]) for x in body.get("results", [])]
                    else:
                        group = [users[n % len(users)]]
                        r = client.get(f"/v1/users/{group[0]}/recommendations")
                        body = r.json()
                        answers = [(body.get("user_id"), _items(body) if "items" in body else [], body.get("fallback"))]
                except httpx.HTTPError as exc:
                    failures.append(f"transport error {exc!r}")
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text}")
                    continue
                row_tags = {tag_of(u, items) for u, items, fallback in answers if not fallback}
                if len(row_tags) != 1 or any(fb for _, _, fb in answers) or [u for u, _, _ in answers] != group:
                    failures.append(f"mixed or wrong response {body}")
                seen[body["version"]].update(row_tags)
                counts[0] += 1

    threads = [threading.Thread(target=stream, args=(b,)) for b in (False, False, True)]
    for t in threads:
        t.start()
    published = []
    try:
        for tag in tags:
            start = counts[0]
            deadline = time.monotonic() + 60
            while counts[0] < start + 60:
                assert time.monotonic() < deadline and not failures, failures[:3]
                time.sleep(0.01)
            published.append(server.publish(builds[tag]))
        start = counts[0]
        deadline = time.monotonic() + 60
        while counts[0] < start + 60:
            assert time.monotonic() < deadline and not failures, failures[:3]
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert all(len(t) == 1 for t in seen.values()), dict(seen)  # each version served exactly one build
    assert seen[published[-1]] == {"t3"} and seen[published[0]] == {"t2"}
    assert sorted(next(iter(t)) for t in seen.values()) == ["t2", "t3", "v1"]
    assert server.http.get("/readyz").json()["version"] == published[-1]
    assert server.metric("alignrec_serve_cache_version_info", version=published[-1]) == 1


def _serve_rc(store: str, capsys) -> tuple[int, str]:
    from alignrec.cli import main

    rc = main(["serve", "--store_dir", store, "--port", "1"])
    return rc, capsys.readouterr().err


def test_refuses_to_start_on_missing_or_corrupt_store(tmp_path, capsys):
    rc, err = _serve_rc(str(tmp_path / "nowhere"), capsys)
    assert rc == 1 and f"cannot serve {tmp_path / 'nowhere'}" in err and "CURRENT not found" in err
    assert "run `alignrec cache publish`" in err
    store = tmp_path / "store"
    publish_cache(build_tagged(tmp_path / "c", make_histories(3), None, K), store, progress=False)
    live = next((store / "versions").glob("*.sqlite"))
    live.write_bytes(b"this is not a sqlite file" * 100)
    rc, err = _serve_rc(str(store), capsys)
    assert rc == 1 and live.name in err and "is not a readable cache version" in err
    live.unlink()
    rc, err = _serve_rc(str(store), capsys)
    assert rc == 1 and "could not open the live cache version" in err and live.name in err


def test_refuses_to_start_on_empty_or_unreachable_redis(redis_url, capsys):
    rc, err = _serve_rc(f"{redis_url}?prefix=never", capsys)
    assert rc == 1 and "no cache is published" in err and "prefix=never" in err
    from tests.serve.conftest import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    rc, err = _serve_rc(dead, capsys)
    assert rc == 1 and f"cannot serve {dead}" in err and "onnect" in err


def test_per_scenario_store_answers_only_that_scenarios_items(tmp_path):
    """`?scenario=kitchen` on a per-scenario store: that scenario's cached list, its own fallback; a missing or
    unknown scenario is a 422 naming the store's scenarios."""
    store = tmp_path / "store"
    publish_cache(build_scenario_cache(tmp_path / "c", 3), store, scenario_popularity=SCENARIO_POPULARITY,
                  fallback_k=2, progress=False)
    with serve_process(store) as (base, _):
        http = httpx.Client(base_url=base, timeout=10)
        body = http.get("/v1/users/u1/recommendations", params={"scenario": "kitchen"}).json()
        assert body["scenario"] == "kitchen" and body["fallback"] is False
        assert _items(body) == [("kitchen-u1-0", -0.0), ("kitchen-u1-1", -1.0), ("kitchen-u1-2", -2.0)]
        body = http.get("/v1/users/u1/recommendations", params={"scenario": "food", "k": 1}).json()
        assert _items(body) == [("food-u1-0", -0.0)]
        body = http.get("/v1/users/u3/recommendations", params={"scenario": "kitchen"}).json()  # u3: food only
        assert body["fallback"] is True and _items(body) == [("k8", 2.0), ("k9", 2.0)]  # the kitchen fallback
        batch = http.post("/v1/recommendations:batch", json={"user_ids": ["u2", "u3"], "scenario": "kitchen"}).json()
        assert [(r["user_id"], r["fallback"], r["scenario"]) for r in batch["results"]] == [
            ("u2", False, "kitchen"), ("u3", True, "kitchen")]
        assert all(i.startswith("kitchen-") or i in ("k8", "k9") for r in batch["results"] for i, _ in _items(r))
        for params, message in (({}, "per scenario; pass a scenario, one of ['food', 'kitchen']"),
                                ({"scenario": "toys"}, "its scenarios are ['food', 'kitchen']")):
            r = http.get("/v1/users/u1/recommendations", params=params)
            assert r.status_code == 422 and message in r.json()["error"], r.text
