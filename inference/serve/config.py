"""``ServeConfig``: the flags of ``alignrec serve`` (no FastAPI import, so ``--help`` works without the extra)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from recdata.errors import ConfigError

__all__ = ["TOKEN_ENV", "ServeConfig"]

TOKEN_ENV = "ALIGNREC_SERVE_TOKEN"


@dataclass
class ServeConfig:
    store_dir: str = field(metadata={"help": "Published cache: a folder written by `alignrec cache publish "
                                             "--store_dir`, or a redis://host:port/db[?prefix=P] URL (&cluster=true "
                                             "for a Redis Cluster)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on. The default answers this "
                                                             "machine only; 0.0.0.0 answers every network the machine "
                                                             "is on: set --token (or $ALIGNREC_SERVE_TOKEN) then."})
    port: int = field(default=8000, metadata={"help": "TCP port."})
    workers: int = field(default=1, metadata={"help": "uvicorn worker processes (one store reader each; metrics are "
                                                      "summed across them); 0 = one per CPU core this process may "
                                                      "use."})
    token: str | None = field(default=None, metadata={
        "help": "Bearer token every request must send (`Authorization: Bearer TOKEN`), except the health checks "
                "/healthz and /readyz; a wrong or missing one is a 401. Default: $ALIGNREC_SERVE_TOKEN, else none "
                "(prefer the variable: a flag is visible to other users in the process list)."})
    docs: bool = field(default=False, metadata={"help": "Serve the interactive API docs (/docs) and the OpenAPI "
                                                        "schema (/openapi.json); they need the token too."})
    refresh_interval_s: float = field(default=0.0, metadata={"help": "How often a worker checks for a newly "
                                                                     "published version: 0 = before every lookup "
                                                                     "(a stat of CURRENT for SQLite); Redis lookups read "
                                                                     "the pointer in their own round trip. A new version "
                                                                     "is prepared in the background and swapped in."})
    max_batch_users: int = field(default=1000, metadata={"help": "Most users in one POST "
                                                                 "/v1/recommendations:batch (more: 413)."})
    max_body_bytes: int = field(default=1 << 20, metadata={"help": "Largest batch request body in bytes (more: 413)."})
    drain_timeout_s: int = field(default=10, metadata={"help": "On SIGTERM/SIGINT: stop accepting, finish "
                                                               "in-flight requests for at most this long, exit."})
    worker_healthcheck_timeout_s: int = field(default=60, metadata={"help": "With --workers > 1: seconds a worker "
                                                                        "may take to start (imports on a busy "
                                                                        "machine) or to answer the supervisor's "
                                                                        "ping before it is restarted."})
    access_log: bool = field(default=False, metadata={"help": "Log every request (costs throughput)."})
    log_level: str = field(default="info", metadata={"help": "uvicorn log level: debug, info, warning, error."})

    def resolved_token(self) -> str | None:
        """The token requests must carry: ``--token``, else ``$ALIGNREC_SERVE_TOKEN``, else None (no check)."""
        return self.token or os.environ.get(TOKEN_ENV) or None

    def resolved_workers(self) -> int:
        """``workers``, with 0 resolved to the CPU cores this process may run on."""
        if self.workers:
            return self.workers
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 1, or 0 for one per CPU core, got {self.workers}")
        if self.token is not None and (not self.token.strip() or any(c.isspace() for c in self.token)):
            raise ConfigError("token must be a non-empty string without spaces (it goes in an HTTP header)")
        if self.refresh_interval_s < 0:
            raise ConfigError(f"refresh_interval_s must be >= 0, got {self.refresh_interval_s}")
        if self.max_batch_users < 1 or self.max_body_bytes < 1024:
            raise ConfigError(f"max_batch_users must be >= 1 and max_body_bytes >= 1024, got {self.max_batch_users}, "
                             f"{self.max_body_bytes}")
        if self.worker_healthcheck_timeout_s < 1:
            raise ConfigError(f"worker_healthcheck_timeout_s must be >= 1, got {self.worker_healthcheck_timeout_s}")
        if self.drain_timeout_s < 0:
            raise ConfigError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        if self.log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise ConfigError(f"log_level must be one of debug, info, warning, error, got {self.log_level!r}")
