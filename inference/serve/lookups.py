"""The two lookup endpoints, answered on raw ASGI: one read, then a byte join (no FastAPI on this path).

    GET  /v1/users/{user_id}/recommendations?k=K[&scenario=S]
    POST /v1/recommendations:batch   {"user_ids": [...], "k": K, "scenario": S}

A profile of the FastAPI routes put its per-request work (parameter solving, Request/Response objects, the
middleware stack) at about 580 us against about 43 us for the store read; this path parses the few inputs
itself, validates the batch body with the same pydantic model (so its error messages are unchanged), reads the
rows (``live.LiveVersion.rows``) and renders them from the version's pre-encoded fragments (``render``). Errors
are ``{"error": <message>, "status": <code>}`` as everywhere else in the server; a query parameter the user lookup
does not read (``?kk=5``) or one given twice is a 422, never silently ignored.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.cache.reader import ScenarioError, check_scenario
from inference.serve.config import ServeConfig
from inference.serve.live import LiveVersion
from inference.serve.metrics import ServeMetrics
from inference.serve.render import PreparedVersion, json_str
from recdata.errors import InputFileError, UserError

__all__ = ["ApiError", "BATCH_PATH", "BatchRequest", "Lookups", "error_body", "json_body"]

logger = logging.getLogger(__name__)

USER_PREFIX, USER_SUFFIX = "/v1/users/", "/recommendations"
BATCH_PATH = "/v1/recommendations:batch"
JSON_HEADERS = [(b"content-type", b"application/json")]


def _store_errors() -> tuple[type[BaseException], ...]:
    # Store-side failures (unreachable Redis, a version that cannot be opened) answer 503, never 500.
    errors: tuple[type[BaseException], ...] = (InputFileError, OSError, RuntimeError, ValueError, sqlite3.Error)
    try:  # a Redis Cluster client's own errors (no node reachable, a slot not covered) are not RedisErrors
        from redis.exceptions import RedisClusterException, RedisError
    except ModuleNotFoundError:
        return errors
    return (*errors, RedisError, RedisClusterException)


STORE_ERRORS = _store_errors()


class ApiError(Exception):
    """An error answered as ``{"error": message, "status": code}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[str] = Field(min_length=1, description="Users to look up (at most --max_batch_users).")
    k: int | None = Field(default=None, ge=1, description="Items per user; default the cached K.")
    scenario: str | None = Field(default=None, description="Scenario of a multi-scenario store.")


def json_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_body(status: int, message: str) -> bytes:
    return json_body({"error": message, "status": status})


async def send_bytes(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = JSON_HEADERS) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def user_path_id(path: str) -> str | None:
    """The ``user_id`` of ``/v1/users/{user_id}/recommendations`` (None for any other path)."""
    if path.startswith(USER_PREFIX) and path.endswith(USER_SUFFIX):
        user = path[len(USER_PREFIX) : -len(USER_SUFFIX)]
        if user and "/" not in user:
            return user
    return None


class Lookups:
    """The lookup endpoints over one worker's ``LiveVersion``."""

    def __init__(self, cfg: ServeConfig, live: LiveVersion, metrics: ServeMetrics):
        self.cfg, self.live, self.metrics = cfg, live, metrics

    def route(self, scope: dict) -> str | None:
        """``"user"`` / ``"batch"`` when this path and method are a lookup, else None (FastAPI answers)."""
        if scope["method"] == "GET" and user_path_id(scope["path"]) is not None:
            return "user"
        if scope["method"] == "POST" and scope["path"] == BATCH_PATH:
            return "batch"
        return None

    async def respond(self, route: str, scope: dict, receive: Any) -> tuple[int, bytes]:
        """(status, JSON body) of one lookup request; a client mistake is a 4xx, the store's a 503, never a 500."""
        try:
            if route == "user":
                return 200, await self.user(scope)
            return 200, await self.batch(scope, receive)
        except ApiError as exc:
            return exc.status, error_body(exc.status, exc.message)

    async def user(self, scope: dict) -> bytes:
        user = user_path_id(scope["path"])
        raw = scope.get("query_string") or b""
        params = query_params(raw)
        check_user_query(raw, params)
        k, scenario = query_k(params.get("k")), params.get("scenario")
        current, (row,) = await self._rows([user], k, scenario)
        return (self._user(current, user, row, k or current.k, scenario)
                + b',"version":' + current.version_json + b"}")

    async def batch(self, scope: dict, receive: Any) -> bytes:
        req = parse_batch(await read_body(scope, receive, self.cfg.max_body_bytes))
        if len(req.user_ids) > self.cfg.max_batch_users:
            raise ApiError(413, f"batch of {len(req.user_ids)} users is above the limit of {self.cfg.max_batch_users} "
                                "(--max_batch_users); split it")
        current, rows = await self._rows(req.user_ids, req.k, req.scenario)
        k = req.k or current.k
        users = [self._user(current, user, row, k, req.scenario) + b"}"
                 for user, row in zip(req.user_ids, rows, strict=True)]
        return b'{"version":' + current.version_json + b',"results":[' + b",".join(users) + b"]}"

    @staticmethod
    def _user(current: PreparedVersion, user: str, row: bytes | None, k: int, scenario: str | None) -> bytes:
        """One user's object, left open for a trailing member (``"version"``) or a closing brace."""
        head = b'{"user_id":' + json_str(user) + (b"" if scenario is None else b',"scenario":' + json_str(scenario))
        if row is None:
            return head + b',"fallback":true,"items":[' + current.fallback_json(scenario, k) + b"]"
        return head + b',"fallback":false,"items":[' + current.items_json(row, k) + b"]"

    async def _rows(self, user_ids: list[str], k: int | None,
                    scenario: str | None) -> tuple[PreparedVersion, list[bytes | None]]:
        def check(current: PreparedVersion) -> None:
            try:
                check_scenario(current.scenarios, scenario, self.cfg.store_dir)
            except ScenarioError as exc:
                raise ApiError(422, str(exc)) from exc
            if k is not None and k > current.k:
                raise ApiError(422, f"k={k} is above the cached K={current.k} of version {current.name}; "
                                    f"ask for k <= {current.k}")

        try:
            current, rows = await self.live.rows(user_ids, scenario, check)
        except ApiError:
            raise
        except (*STORE_ERRORS, UserError) as exc:  # the store itself (pointer gone, unreadable): not the client
            logger.error("cache store %s unavailable: %s", self.cfg.store_dir, exc)
            raise ApiError(503, f"cache store unavailable: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any other failure of the read is the store's: 503, logged in full
            logger.exception("cache store %s unavailable", self.cfg.store_dir)
            raise ApiError(503, f"cache store unavailable: {exc!r}") from exc
        self.metrics.served(current.name, len(rows), sum(row is None for row in rows))
        return current, rows


def query_params(raw: bytes) -> dict[str, str]:
    """The query string as Starlette reads it (``parse_qsl(..., keep_blank_values=True)``, the last value of a
    repeated name wins), without its cost when nothing needs decoding."""
    out: dict[str, str] = {}
    for part in raw.decode("latin-1").split("&") if raw else ():
        if part:
            name, _, value = part.partition("=")
            if "%" in part or "+" in part:
                name, value = unquote_plus(name), unquote_plus(value)
            out[name] = value
    return out


USER_QUERY = ("k", "scenario")  # what GET /v1/users/{user_id}/recommendations reads


def check_user_query(raw: bytes, params: dict[str, str]) -> None:
    """A 422 for a query parameter the lookup does not read (``?kk=5`` would silently give the default K) or one
    given twice (which one counts is not the client's guess to make)."""
    unknown = sorted(set(params) - set(USER_QUERY))
    if unknown:
        raise ApiError(422, f"unknown query parameter(s) {unknown}; this lookup takes {' and '.join(USER_QUERY)}")
    if sum(1 for part in raw.split(b"&") if part) != len(params):
        raise ApiError(422, f"a query parameter is given twice ({raw.decode('latin-1')!r}); send each once")


def query_k(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        k = int(raw)
    except ValueError:
        raise ApiError(422, f"query k: must be an integer >= 1 (got {raw!r})") from None
    if k < 1:
        raise ApiError(422, f"query k: must be >= 1 (got {k})")
    return k


async def read_body(scope: dict, receive: Any, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (never read whole first)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise ApiError(413, f"request body of {int(value)} bytes is above the limit of {limit} (--max_body_bytes)")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is above the limit of {limit} bytes (--max_body_bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_batch(body: bytes) -> BatchRequest:
    if not body.strip():
        raise ApiError(422, 'empty request body; send JSON like {"user_ids": ["u1", "u2"], "k": 10}')
    try:
        return BatchRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise ApiError(422, f"malformed JSON body ({errors[0]['ctx'].get('error', 'invalid JSON')}); "
                                'send {"user_ids": ["u1", "u2"], "k": 10}') from exc
        raise ApiError(422, describe(errors, in_body=True)) from exc


def describe(errors: Any, in_body: bool = False) -> str:
    """One readable line from pydantic errors: where, what, the value given."""
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ())]
        where = ("body " + ".".join(loc)) if in_body else " ".join(loc) if loc else "request"
        given = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict | list) else ""
        parts.append(f"{where}: {e.get('msg', 'invalid')}{given}")
    return "; ".join(parts)
