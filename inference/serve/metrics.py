"""Prometheus metrics of the lookup service, aggregated across uvicorn workers (multiprocess mode).

``alignrec serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before any worker imports
``prometheus_client``; every worker then writes its samples to memory-mapped files there and ``/metrics`` of any
worker sums them (counters, histograms) or takes the max over live workers (the version gauge). Without the
variable (the app embedded in another process) each app has its own in-process registry.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

__all__ = ["ServeMetrics", "endpoint_label"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Lookups take well under a millisecond; the buckets resolve the 0.1-25 ms range the latency goals are about.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
ENDPOINTS = ("/v1/recommendations:batch", "/healthz", "/readyz", "/metrics")
USER_ENDPOINT = "/v1/users/{user_id}/recommendations"


def endpoint_label(path: str) -> str:
    """The route template of a request path (bounded label values: user ids never become labels)."""
    if path.startswith("/v1/users/"):
        return USER_ENDPOINT
    return path if path in ENDPOINTS else "other"


class ServeMetrics:
    """The service's metrics: one instance per app."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        reg = None if self.multiprocess else self.registry  # multiprocess values live in files, not a registry
        self.requests = Counter("alignrec_serve_requests_total", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=reg)
        self.latency = Histogram("alignrec_serve_request_latency_seconds", "Time from request to response sent.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=reg)
        self.lookups = Counter("alignrec_serve_lookups_total", "Users looked up (a batch counts each user).", registry=reg)
        self.fallbacks = Counter("alignrec_serve_fallbacks_total",
                                 "Users not in the cache, answered with the popular-items fallback.", registry=reg)
        self.swaps = Counter("alignrec_serve_version_swaps_total", "Published-version switches followed by a worker.", registry=reg)
        self.version = Gauge("alignrec_serve_cache_version_info", "1 for the cache version a live worker serves.",
                             ["version"], multiprocess_mode="livemax", registry=reg)
        self._current: str | None = None
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        children = self._children.get((endpoint, status))
        if children is None:  # label lookups once per (endpoint, status): this runs on every request
            children = self._children[endpoint, status] = (self.requests.labels(endpoint, str(status)),
                                                           self.latency.labels(endpoint))
        children[0].inc()
        children[1].observe(seconds)

    def served(self, version: str, users: int, fallbacks: int) -> None:
        self.lookups.inc(users)
        if fallbacks:
            self.fallbacks.inc(fallbacks)
        if version != self._current:
            if self._current is not None:
                self.version.labels(self._current).set(0)
                self.swaps.inc()
            self.version.labels(version).set(1)
            self._current = version

    def exposition(self) -> bytes:
        """Prometheus text format: all workers' samples in multiprocess mode, else this process's."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def worker_exit(self) -> None:
        """Drop this worker's live-gauge files so a stopped worker's version stops counting."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())
