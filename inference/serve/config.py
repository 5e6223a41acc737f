"""``ServeConfig``: the flags of ``alignrec serve`` (no FastAPI import, so ``--help`` works without the extra)."""

from __future__ import annotations

from dataclasses import dataclass, field

from recdata.errors import ConfigError

__all__ = ["ServeConfig"]


@dataclass
class ServeConfig:
    store_dir: str = field(metadata={"help": "Published cache: a folder written by `alignrec cache publish "
                                             "--store_dir`, or a redis://host:port/db[?prefix=P] URL."})
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on (0.0.0.0: every interface)."})
    port: int = field(default=8000, metadata={"help": "TCP port."})
    workers: int = field(default=1, metadata={"help": "uvicorn worker processes (one reader each); metrics are "
                                                      "summed across them."})
    refresh_interval_s: float = field(default=0.0, metadata={"help": "How often a worker checks for a newly "
                                                                     "published version: 0 = before every lookup "
                                                                     "(a stat of CURRENT for SQLite); Redis lookups check "
                                                                     "the pointer inside their own MULTI."})
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

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
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
