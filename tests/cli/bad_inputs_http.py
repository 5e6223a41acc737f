"""The bad-input table, HTTP service: what a client sends `alignrec serve` by mistake, answered in-process.

The app is built by ``inference.serve.app.create_app`` over a store published from the table's tiny split (the
popularity cache, K=2), with the small limits a test can reach (3 users per batch, 1 KiB bodies), and once more
with a bearer token. A client mistake must be a 4xx with the JSON ``{"error": <message naming the parameter or
field and the fix>, "status": <code>}``; a 5xx is a ``traceback``, a 2xx where a 4xx belongs is ``silent``. Correct
accepts (``ok``) check the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cli.bad_inputs import Workspace, pop_cache, quiet_main

BATCH = "/v1/recommendations:batch"
TOKEN = "s3cret"


@dataclass
class HttpCase:
    id: str
    method: str
    path: str
    status: int  # expected status
    match: str = ""  # regex the JSON "error" must contain (4xx)
    body: bytes | None = None
    headers: dict[str, str] | None = None
    token: bool = False  # against the app started with --token
    check: Callable[[dict], None] | None = None  # on the JSON body of a 2xx


def _user(path_user: str, query: str = "") -> str:
    return f"/v1/users/{path_user}/recommendations{query}"


def _items(n: int) -> Callable[[dict], None]:
    def check(body: dict) -> None:
        assert len(body["items"]) == n and [r["rank"] for r in body["items"]] == list(range(1, n + 1)), body
    return check


def _fallback(body: dict) -> None:
    assert body["fallback"] is True and body["items"], body


def _batch_of(n: int) -> Callable[[dict], None]:
    def check(body: dict) -> None:
        assert len(body["results"]) == n and body["version"], body
    return check


def _bearer(value: str) -> dict[str, str]:
    return {"authorization": value}


HTTP_CASES: list[HttpCase] = [
    # ---- GET one user ---------------------------------------------------------------------------------------------
    HttpCase("http-user-ok", "GET", _user("u1", "?k=1"), 200, check=_items(1)),
    HttpCase("http-unknown-user-fallback", "GET", _user("ghost"), 200, check=_fallback),
    HttpCase("http-k-zero", "GET", _user("u1", "?k=0"), 422, r"query k: must be >= 1 \(got 0\)"),
    HttpCase("http-k-negative", "GET", _user("u1", "?k=-3"), 422, r"query k: must be >= 1"),
    HttpCase("http-k-not-a-number", "GET", _user("u1", "?k=ten"), 422, r"query k: must be an integer >= 1 \(got 'ten'\)"),
    HttpCase("http-k-above-cached", "GET", _user("u1", "?k=50"), 422, r"k=50 is above the cached K=2 .*ask for k <= 2"),
    HttpCase("http-k-huge", "GET", _user("u1", "?k=99999999999999999999999"), 422, r"is above the cached K=2"),
    HttpCase("http-k-repeated", "GET", _user("u1", "?k=1&k=2"), 422, r"a query parameter is given twice"),
    HttpCase("http-unknown-query-parameter", "GET", _user("u1", "?kk=1"), 422,
             r"unknown query parameter\(s\) \['kk'\]; this lookup takes k and scenario"),
    HttpCase("http-scenario-on-plain-store", "GET", _user("u1", "?scenario=lab"), 422,
             r"scenario 'lab' is not in the cache .*this store has no scenarios"),
    HttpCase("http-nul-user-id", "GET", _user("%00"), 200, check=_fallback),
    HttpCase("http-bidi-user-id", "GET", _user("%E2%80%AEu1"), 200, check=_fallback),
    HttpCase("http-long-user-id", "GET", _user("x" * 4000), 200, check=_fallback),
    HttpCase("http-post-to-user", "POST", _user("u1"), 405, r"Method Not Allowed"),
    # ---- POST a batch ---------------------------------------------------------------------------------------------
    HttpCase("http-batch-ok", "POST", BATCH, 200, body=b'{"user_ids": ["u1", "ghost"], "k": 1}', check=_batch_of(2)),
    HttpCase("http-batch-repeated-user", "POST", BATCH, 200, body=b'{"user_ids": ["u1", "u1"]}', check=_batch_of(2)),
    HttpCase("http-batch-not-json", "POST", BATCH, 422, r"malformed JSON body .*send \{\"user_ids\"", body=b"user_ids=u1"),
    HttpCase("http-batch-empty-body", "POST", BATCH, 422, r"empty request body", body=b""),
    HttpCase("http-batch-binary-body", "POST", BATCH, 422, r"malformed JSON body", body=b"\xff\xfe{\x00"),
    HttpCase("http-batch-json-list", "POST", BATCH, 422, r"body : Input should be an object", body=b"[1, 2]"),
    HttpCase("http-batch-ids-not-list", "POST", BATCH, 422, r"body user_ids: Input should be a valid array",
             body=b'{"user_ids": "u1"}'),
    HttpCase("http-batch-no-ids", "POST", BATCH, 422, r"body user_ids: List should have at least 1 item",
             body=b'{"user_ids": []}'),
    HttpCase("http-batch-ids-not-strings", "POST", BATCH, 422, r"body user_ids\.0: Input should be a valid string",
             body=b'{"user_ids": [1, null]}'),
    HttpCase("http-batch-misspelled-field", "POST", BATCH, 422, r"user_ids: Field required; body users: Extra inputs",
             body=b'{"users": ["u1"]}'),
    HttpCase("http-batch-extra-field", "POST", BATCH, 422, r"body extra: Extra inputs are not permitted",
             body=b'{"user_ids": ["u1"], "extra": 1}'),
    HttpCase("http-batch-k-string", "POST", BATCH, 422, r"body k: Input should be a valid integer",
             body=b'{"user_ids": ["u1"], "k": "two"}'),
    HttpCase("http-batch-k-zero", "POST", BATCH, 422, r"body k: Input should be greater than or equal to 1",
             body=b'{"user_ids": ["u1"], "k": 0}'),
    HttpCase("http-batch-too-many-users", "POST", BATCH, 413, r"batch of 4 users is above the limit of 3 "
             r"\(--max_batch_users\)", body=b'{"user_ids": ["a", "b", "c", "d"]}'),
    HttpCase("http-batch-body-too-large", "POST", BATCH, 413, r"above the limit of 1024 \(--max_body_bytes\)",
             body=json.dumps({"user_ids": ["x" * 2000]}).encode()),
    HttpCase("http-batch-get", "GET", BATCH, 405, r"Method Not Allowed"),
    # ---- other paths, the token -----------------------------------------------------------------------------------
    HttpCase("http-unknown-path", "GET", "/v2/users/u1", 404, r"Not Found"),
    HttpCase("http-docs-off-by-default", "GET", "/docs", 404, r"Not Found"),
    HttpCase("http-openapi-off-by-default", "GET", "/openapi.json", 404, r"Not Found"),
    HttpCase("http-healthz", "GET", "/healthz", 200, check=lambda b: _equal(b, {"status": "ok"})),
    HttpCase("http-readyz", "GET", "/readyz", 200, check=lambda b: _equal((b["status"], b["k"]), ("ready", 2))),
    HttpCase("http-token-missing", "GET", _user("u1"), 401, r"missing or wrong bearer token", token=True),
    HttpCase("http-token-wrong", "GET", _user("u1"), 401, r"missing or wrong bearer token", token=True,
             headers=_bearer("Bearer nope")),
    HttpCase("http-token-basic-scheme", "GET", _user("u1"), 401, r"Authorization: Bearer <token>", token=True,
             headers=_bearer(f"Basic {TOKEN}")),
    HttpCase("http-token-on-metrics", "GET", "/metrics", 401, r"missing or wrong bearer token", token=True),
    HttpCase("http-token-ok", "GET", _user("u1", "?k=1"), 200, token=True, headers=_bearer(f"Bearer {TOKEN}"),
             check=_items(1)),
    HttpCase("http-token-health-open", "GET", "/healthz", 200, token=True, check=lambda b: _equal(b["status"], "ok")),
]


def _equal(got: Any, want: Any) -> None:
    assert got == want, (got, want)


def build_store(ws: Workspace) -> Path:
    """The store every HTTP case reads: the popularity cache of the table's split, K=2, published once."""
    store = ws.root / "http_store"
    if not (store / "CURRENT").is_file():
        work = ws.fresh("http-store")
        quiet_main(["cache", "publish", "--cache_dir", str(pop_cache(work)), "--store_dir", str(store)])
    return store


def classify_http(case: HttpCase, status: int, body: bytes) -> tuple[str, str]:
    """(kind, detail): clear / accepted / unclear / traceback / silent, as the CLI table counts them."""
    text = body.decode("utf-8", "replace")
    if status >= 500:
        return "traceback", f"{status} {text[:200]}"
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return ("unclear", f"{status} not JSON: {text[:120]}") if status >= 400 else ("silent", text[:120])
    if status != case.status:
        return ("silent" if status < 400 else "unclear"), f"{status} (expected {case.status}) {text[:200]}"
    if status >= 400:
        named = isinstance(data, dict) and data.get("status") == status and re.search(case.match, str(data.get("error")))
        return ("clear" if named else "unclear"), str(data)[:200]
    try:
        if case.check is not None:
            case.check(data)
    except AssertionError as exc:
        return "silent", f"check failed: {exc}"[:200]
    return "accepted", text[:120]


class Clients:
    """``TestClient``s of the plain and the token app (context manager: both lifespans run)."""

    def __init__(self, store: Path) -> None:
        from starlette.testclient import TestClient

        from inference.serve.app import create_app
        from inference.serve.config import ServeConfig

        limits = {"max_batch_users": 3, "max_body_bytes": 1024}
        self.plain = TestClient(create_app(ServeConfig(store_dir=str(store), **limits)))
        self.token = TestClient(create_app(ServeConfig(store_dir=str(store), token=TOKEN, **limits)))

    def __enter__(self) -> Clients:
        self.plain.__enter__()
        self.token.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.token.__exit__(*exc)
        self.plain.__exit__(*exc)

    def send(self, case: HttpCase) -> tuple[int, bytes]:
        client = self.token if case.token else self.plain
        response = client.request(case.method, case.path, content=case.body, headers=case.headers or {})
        return response.status_code, response.content


def run_http_census(ws: Workspace, only: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(case id, kind, detail) for every HTTP case (none when the serve extra is not installed)."""
    try:
        import fastapi  # noqa: F401
    except ModuleNotFoundError:
        return
    with Clients(build_store(ws)) as clients:
        for case in HTTP_CASES:
            if only and only not in case.id:
                continue
            yield case.id, *classify_http(case, *clients.send(case))
