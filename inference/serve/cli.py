"""``alignrec serve``: check the store, then run the lookup service under uvicorn.

    alignrec serve --store_dir serve/ --port 8000 --workers 2
    ALIGNREC_SERVE_TOKEN=... alignrec serve --store_dir redis://127.0.0.1:6379/0 --host 0.0.0.0 --workers 0
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import tempfile
from contextlib import ExitStack

from inference.serve.config import TOKEN_ENV, ServeConfig
from recdata.config import parse_config
from recdata.errors import UserError

__all__ = ["check_store", "register", "run_serve"]

logger = logging.getLogger(__name__)

SERVE_EXTRA = ("fastapi", "uvicorn", "prometheus_client")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="HTTP lookup service (FastAPI + uvicorn) over a published cache.",
                              add_help=False)
    p.set_defaults(handler=_run_serve)


def _run_serve(args, argv: list[str]) -> int:
    (cfg,) = parse_config([ServeConfig], argv)
    run_serve(cfg)
    return 0


def check_store(location: str) -> str:
    """Open the store the way a worker will and return its live version; ``UserError`` naming it otherwise."""
    from inference.cache.reader import CacheReader

    try:
        with CacheReader(location) as reader:
            return reader.version
    except ModuleNotFoundError as exc:
        raise UserError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any failure to open is reported as one line naming the store
        raise UserError(f"cannot serve {location}: {exc}") from exc


def run_serve(cfg: ServeConfig) -> None:
    missing = [m for m in SERVE_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"alignrec serve needs {', '.join(missing)}: pip install 'alignrec[serve]'")
    version = check_store(cfg.store_dir)
    workers = cfg.resolved_workers()
    logger.info("serving %s (live version %s) on http://%s:%d with %d worker(s)%s", cfg.store_dir, version, cfg.host,
                cfg.port, workers, ", bearer token required" if cfg.resolved_token() else "")
    if cfg.host not in LOOPBACK and not cfg.resolved_token():
        logger.warning("listening on %s without a token: anyone who can reach port %d can read every user's "
                       "recommendations; set $%s (or --token)", cfg.host, cfg.port, TOKEN_ENV)
    with ExitStack() as stack:
        # Multiprocess metrics need the folder set before any process imports prometheus_client.
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="alignrec-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
            stack.callback(os.environ.pop, "PROMETHEUS_MULTIPROC_DIR", None)
        from inference.serve.app import CONFIG_ENV

        os.environ[CONFIG_ENV] = json.dumps(dataclasses.asdict(cfg))
        import uvicorn

        uvicorn.run("inference.serve.app:app_from_env", factory=True, host=cfg.host, port=cfg.port,
                    workers=workers, log_level=cfg.log_level, access_log=cfg.access_log,
                    timeout_graceful_shutdown=cfg.drain_timeout_s, lifespan="on",
                    timeout_worker_healthcheck=cfg.worker_healthcheck_timeout_s)
