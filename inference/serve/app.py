"""The ASGI app of ``alignrec serve``: read-only lookups over one live cache version per worker.

Endpoints (JSON; every error is ``{"error": <message>, "status": <code>}``, a client mistake is always a 4xx):

    GET  /v1/users/{user_id}/recommendations?k=K[&scenario=S]  one user's top-K, its version, fallback flag
    POST /v1/recommendations:batch  {"user_ids": [...], "k": K}  many users, all from one cache version
    GET  /healthz   the process is up           GET /readyz   the store is open and its live version known
    GET  /metrics   Prometheus text (all workers)
    GET  /docs, /openapi.json   only with ``--docs true``

``create_app`` returns ``ServeApp``, a raw ASGI app in front of a FastAPI app: it times every request for the
metrics, checks the bearer token (``--token`` / ``$ALIGNREC_SERVE_TOKEN``; all but the two health checks), and
answers the two lookups itself (``lookups``: one read, then a byte join of pre-encoded JSON); FastAPI answers
the rest (health, readiness, metrics, docs, 404/405). Each worker follows publishes without a restart
(``live``): the new version is prepared off the request path and swapped in, and each response comes from
exactly one version, named in it.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from inference.cache.backends import CacheStore
from inference.cache.reader import open_store
from inference.serve.config import ServeConfig
from inference.serve.live import LiveVersion
from inference.serve.lookups import (
    BATCH_PATH,
    STORE_ERRORS,
    BatchRequest,
    Lookups,
    describe,
    error_body,
    json_body,
    send_bytes,
)
from inference.serve.metrics import ServeMetrics, endpoint_label

__all__ = ["CONFIG_ENV", "ServeApp", "app_from_env", "create_app"]

logger = logging.getLogger(__name__)

CONFIG_ENV = "ALIGNREC_SERVE_CONFIG"  # JSON ServeConfig handed from `alignrec serve` to each uvicorn worker
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # what a load balancer probes: no token asked
UNAUTHORIZED = ("missing or wrong bearer token: send the header 'Authorization: Bearer <token>' with the token the "
                "server was started with (--token or $ALIGNREC_SERVE_TOKEN)")
REDIS_CONNECTIONS = 64  # per worker: concurrent lookups beyond this wait for a free connection

USER_PARAMETERS = [
    {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "k", "in": "query", "required": False, "description": "Items to return (1..cached K; default: the "
     "cached K).", "schema": {"type": "integer", "minimum": 1}},
    {"name": "scenario", "in": "query", "required": False, "description": "Scenario of a multi-scenario store.",
     "schema": {"type": "string"}},
]


class ServeApp:
    """Raw ASGI in front of FastAPI: metrics and the token for every request, the two lookups answered here."""

    def __init__(self, api: FastAPI, lookups: Lookups, metrics: ServeMetrics, token: str | None):
        self.api, self.lookups, self.metrics = api, lookups, metrics
        self.token = None if token is None else token.encode("utf-8")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan (opens the store) and anything else: FastAPI
            await self.api(scope, receive, send)
            return
        start, path, status = time.perf_counter(), scope["path"], 500
        try:
            if self.token is not None and path not in OPEN_PATHS and not self._authorized(scope):
                status = 401
                await send_bytes(send, 401, error_body(401, UNAUTHORIZED),
                                 [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")])
                return
            route = self.lookups.route(scope)
            if route is not None:
                status, body = await self.lookups.respond(route, scope, receive)
                await send_bytes(send, status, body)
                return
            status_box = [500]

            async def send_status(message: dict) -> None:
                if message["type"] == "http.response.start":
                    status_box[0] = message["status"]
                await send(message)

            try:
                await self.api(scope, receive, send_status)
            finally:
                status = status_box[0]
        finally:
            self.metrics.observe(endpoint_label(path), status, time.perf_counter() - start)

    def _authorized(self, scope: dict) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)
        return False


def create_app(cfg: ServeConfig, store: CacheStore | None = None) -> ServeApp:
    """The app over ``cfg.store_dir`` (or over ``store``, which the app then owns and closes)."""
    metrics = ServeMetrics()
    live = LiveVersion(store or open_store(cfg.store_dir), cfg.refresh_interval_s, REDIS_CONNECTIONS,
                       on_swap=lambda prepared: metrics.served(prepared.name, 0, 0))
    lookups = Lookups(cfg, live, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        prepared = await live.start()
        logger.info("worker %d serving %s version %s", os.getpid(), cfg.store_dir, prepared.name)
        try:
            yield
        finally:
            await live.close()
            metrics.worker_exit()

    docs = {"docs_url": "/docs", "openapi_url": "/openapi.json"} if cfg.docs else {"docs_url": None,
                                                                                   "openapi_url": None}
    api = FastAPI(title="alignrec recommendations", version="1", lifespan=lifespan, redoc_url=None, **docs)

    # The lookups are answered by ServeApp before FastAPI sees them; these routes describe them in /openapi.json
    # and answer the same way (the same code) when the FastAPI app is mounted on its own.
    @api.get("/v1/users/{user_id}/recommendations", openapi_extra={"parameters": USER_PARAMETERS})
    async def recommendations(request: Request) -> Response:
        return _raw(*await lookups.respond("user", request.scope, request.receive))

    @api.post(BATCH_PATH, openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": BatchRequest.model_json_schema()}}}})
    async def batch(request: Request) -> Response:
        return _raw(*await lookups.respond("batch", request.scope, request.receive))

    @api.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @api.get("/readyz")
    async def readyz() -> Response:
        try:
            current = await live.settle()
        except (AttributeError, *STORE_ERRORS) as exc:  # AttributeError: no version yet
            return _json({"error": f"not ready: {exc}", "status": 503}, 503)
        return _json({"status": "ready", "version": current.name, "k": current.k,
                      "num_users": current.version.meta.get("num_users")})

    @api.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _json({"error": exc.detail, "status": exc.status_code}, exc.status_code)

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _json({"error": describe(exc.errors()), "status": 422}, 422)

    return ServeApp(api, lookups, metrics, cfg.resolved_token())


def app_from_env() -> ServeApp:
    """uvicorn factory (``--factory``) for each worker: the config comes from ``$ALIGNREC_SERVE_CONFIG``."""
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise RuntimeError(f"${CONFIG_ENV} is not set; start the server with `alignrec serve --store_dir S`")
    return create_app(ServeConfig(**json.loads(raw)))


def _raw(status: int, body: bytes) -> Response:
    return Response(body, status, media_type="application/json")


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json_body(body), status, media_type="application/json")
