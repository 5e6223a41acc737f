"""The FastAPI app of ``alignrec serve``: read-only lookups over one ``CacheReader`` per worker.

Endpoints (JSON; every error is ``{"error": <message>, "status": <code>}``, a client mistake is always a 4xx):

    GET  /v1/users/{user_id}/recommendations?k=K[&scenario=S]  one user's top-K, its version, fallback flag
    POST /v1/recommendations:batch  {"user_ids": [...], "k": K}  many users, all from one cache version
    GET  /healthz   the process is up           GET /readyz   the store is open and its live version known
    GET  /metrics   Prometheus text (all workers)

Lookups run inline on the event loop: a SQLite lookup is a ~10 us indexed read and a Redis one a single
round trip, cheaper than the hop to a thread pool. Each worker's reader checks the store's pointer before a
lookup (``refresh_interval_s``), so a publish is followed without a restart and each response comes from
exactly one version, named in it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sqlite3
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from inference.cache.reader import CacheReader, CacheResult, ScenarioError
from inference.serve.config import ServeConfig
from inference.serve.metrics import ServeMetrics, endpoint_label
from recdata.errors import InputFileError, UserError

__all__ = ["CONFIG_ENV", "app_from_env", "create_app"]

logger = logging.getLogger(__name__)

CONFIG_ENV = "ALIGNREC_SERVE_CONFIG"  # JSON ServeConfig handed from `alignrec serve` to each uvicorn worker
NO_SCENARIOS = "this store has no scenarios; drop the scenario parameter"


def _store_errors() -> tuple[type[BaseException], ...]:
    # Store-side failures (unreachable Redis, a version that cannot be opened) answer 503, never 500.
    errors: tuple[type[BaseException], ...] = (OSError, RuntimeError, ValueError, sqlite3.Error)
    try:
        from redis.exceptions import RedisError
    except ModuleNotFoundError:
        return errors
    return (*errors, RedisError)


STORE_ERRORS = _store_errors()


USER_PARAMETERS = [
    {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "k", "in": "query", "required": False, "description": "Items to return (1..cached K; default: the "
     "cached K).", "schema": {"type": "integer", "minimum": 1}},
    {"name": "scenario", "in": "query", "required": False, "description": "Scenario of a multi-scenario store.",
     "schema": {"type": "string"}},
]


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[str] = Field(min_length=1, description="Users to look up (at most --max_batch_users).")
    k: int | None = Field(default=None, ge=1, description="Items per user; default the cached K.")
    scenario: str | None = Field(default=None, description="Scenario of a multi-scenario store.")


class ApiError(HTTPException):
    """An error answered as ``{"error": message, "status": code}``."""


def create_app(cfg: ServeConfig, reader: CacheReader | None = None) -> FastAPI:
    """The app over ``cfg.store_dir`` (or over ``reader``, which the app then owns and closes)."""
    metrics = ServeMetrics()
    holder: dict[str, CacheReader] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder["reader"] = reader or CacheReader(cfg.store_dir, refresh_interval_s=cfg.refresh_interval_s)
        live = holder["reader"].version
        metrics.served(live, 0, 0)
        logger.info("worker %d serving %s version %s", os.getpid(), cfg.store_dir, live)
        try:
            yield
        finally:
            holder.pop("reader").close()
            metrics.worker_exit()

    app = FastAPI(title="alignrec recommendations", version="1", lifespan=lifespan, docs_url="/docs",
                  redoc_url=None)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    def lookup(user_ids: list[str], k: int | None, scenario: str | None) -> tuple[list[CacheResult], int]:
        reader = holder["reader"]
        by_scenario = {}
        if scenario is not None:  # seam for per-scenario stores: used when the reader takes scenario=
            if "scenario" not in inspect.signature(reader.get_many).parameters:
                raise ApiError(422, NO_SCENARIOS)
            by_scenario = {"scenario": scenario}
        try:
            results = reader.get_many(user_ids, **by_scenario)
        except ScenarioError as exc:  # a scenario the store does not have, or none on a per-scenario store
            raise ApiError(422, str(exc)) from exc
        except (InputFileError, *STORE_ERRORS) as exc:  # the store itself (pointer gone, unreadable): not the client
            logger.error("cache store %s unavailable: %s", cfg.store_dir, exc)
            raise ApiError(503, f"cache store unavailable: {exc}") from exc
        except UserError as exc:  # e.g. a scenario the store does not have
            raise ApiError(422, str(exc)) from exc
        except Exception as exc:  # noqa: BLE001  (defensive: any other store failure is a 503, never a 500)
            logger.error("cache store %s unavailable: %s", cfg.store_dir, exc)
            raise ApiError(503, f"cache store unavailable: {exc}") from exc
        cached_k = results[0].k
        if k is not None and k > cached_k:
            raise ApiError(422, f"k={k} is above the cached K={cached_k} of version {results[0].version}; "
                                f"ask for k <= {cached_k}")
        metrics.served(results[0].version, len(results), sum(r.fallback for r in results))
        return results, k or cached_k

    # The hot path reads its two query parameters itself: FastAPI's per-request parameter solving measured about
    # 45% of this endpoint's time (fastapi 0.165, CPU profile); the parameters are documented in openapi_extra.
    @app.get("/v1/users/{user_id}/recommendations", openapi_extra={"parameters": USER_PARAMETERS})
    async def recommendations(request: Request) -> Response:
        query = request.query_params
        results, k = lookup([request.path_params["user_id"]], _query_k(query.get("k")), query.get("scenario"))
        return _json({**_user_body(results[0], k), "version": results[0].version})

    @app.post("/v1/recommendations:batch")
    async def batch(request: Request) -> Response:
        req = _parse_batch(await _read_body(request, cfg.max_body_bytes))
        if len(req.user_ids) > cfg.max_batch_users:
            raise ApiError(413, f"batch of {len(req.user_ids)} users is above the limit of {cfg.max_batch_users} "
                                "(--max_batch_users); split it")
        results, k = lookup(req.user_ids, req.k, req.scenario)
        return _json({"version": results[0].version, "results": [_user_body(r, k) for r in results]})

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            reader = holder["reader"]
            version, meta = reader.version, reader.metadata
        except (KeyError, *STORE_ERRORS) as exc:
            return _json({"error": f"not ready: {exc}", "status": 503}, 503)
        return _json({"status": "ready", "version": version, "k": meta["k"], "num_users": meta.get("num_users")})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _json({"error": exc.detail, "status": exc.status_code}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _json({"error": _describe(exc.errors()), "status": 422}, 422)

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``--factory``) for each worker: the config comes from ``$ALIGNREC_SERVE_CONFIG``."""
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise RuntimeError(f"${CONFIG_ENV} is not set; start the server with `alignrec serve --store_dir S`")
    return create_app(ServeConfig(**json.loads(raw)))


def _query_k(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        k = int(raw)
    except ValueError:
        raise ApiError(422, f"query k: must be an integer >= 1 (got {raw!r})") from None
    if k < 1:
        raise ApiError(422, f"query k: must be >= 1 (got {k})")
    return k


def _user_body(result: CacheResult, k: int) -> dict[str, Any]:
    scenario = {} if result.scenario is None else {"scenario": result.scenario}
    return {"user_id": result.user_id, **scenario, "fallback": result.fallback,
            "items": [{"item_id": i, "score": s, "rank": r} for r, (i, s) in enumerate(result.items[:k], start=1)]}


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), status,
                    media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes is above the limit of {limit} (--max_body_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is above the limit of {limit} bytes (--max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_batch(body: bytes) -> BatchRequest:
    if not body.strip():
        raise ApiError(422, 'empty request body; send JSON like {"user_ids": ["u1", "u2"], "k": 10}')
    try:
        return BatchRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise ApiError(422, f"malformed JSON body ({errors[0]['ctx'].get('error', 'invalid JSON')}); "
                                'send {"user_ids": ["u1", "u2"], "k": 10}') from exc
        raise ApiError(422, _describe(errors, in_body=True)) from exc


def _describe(errors: Any, in_body: bool = False) -> str:
    """One readable line from pydantic errors: where, what, the value given."""
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ())]
        where = ("body " + ".".join(loc)) if in_body else " ".join(loc) if loc else "request"
        given = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict | list) else ""
        parts.append(f"{where}: {e.get('msg', 'invalid')}{given}")
    return "; ".join(parts)


class _MetricsMiddleware:
    """Pure ASGI middleware: status and latency of every HTTP request (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: Any, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(endpoint_label(scope["path"]), status[0], time.perf_counter() - start)
