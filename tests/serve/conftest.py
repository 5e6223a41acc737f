"""Serving fixtures: a real ``redis-server`` and a real ``alignrec serve`` process, each on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.cache import build_cache
from tests.inference.cache_fakes import FakeRecommender

REPO = Path(__file__).resolve().parent.parent.parent
STARTUP_TIMEOUT_S = 600  # a cold `alignrec` import (transformers) on an overloaded 2-core machine took > 180 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_tagged(path: Path, histories: dict[str, list[str]], tag: str | None, k: int) -> Path:
    """A finished cache build: ``FakeRecommender`` rows (tag None), or items ``<tag>-<user>-<rank>``."""
    if tag is None:
        fn = FakeRecommender(k)
    else:
        def fn(users, hists):
            return [[(f"{tag}-{u}-{r}", -float(r)) for r in range(k)] for u in users]
    build_cache(fn, histories, path, k=k, progress=False, chunk_size=16)
    return path


SCENARIO_SERVED = {"u1": ["food", "kitchen"], "u2": ["kitchen"], "u3": ["food"]}
SCENARIO_POPULARITY = {"food": {"f9": 3, "f8": 1}, "kitchen": {"k9": 2, "k8": 2}}


def build_scenario_cache(path: Path, k: int) -> Path:
    """A finished per-scenario build: (user, scenario) rows ``<scenario>-<user>-<rank>``, served as SCENARIO_SERVED."""
    def fn(users, hists, scenarios):
        return [[(f"{s}-{u}-{r}", -float(r)) for r in range(k)] for u, s in zip(users, scenarios, strict=True)]

    histories = {user: ["i1", "i2"] for user in SCENARIO_SERVED}
    build_cache(fn, histories, path, k=k, progress=False, chunk_size=2, scenario_users=SCENARIO_SERVED)
    return path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A private redis-server (no persistence) for the session; skips with the reason when it cannot run."""
    pytest.importorskip("redis", reason="the redis client is part of the serve extra: pip install 'alignrec[serve]'")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it with apt when run as root)")
    import redis

    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"redis-server did not start: {proc.stdout.read().decode(errors='replace')[-500:]}")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def serve_process(store: str | Path, *flags: str, env: dict[str, str] | None = None,
                  ready_files: tuple[Path, int] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m alignrec.cli serve`` on a free port; yields (base URL, process) once /readyz answers 200
    (and, with ``ready_files=(metrics_dir, n)``, once n workers have written their version gauge there).

    On exit: SIGTERM, and every worker must have drained and run its shutdown hooks.
    """
    httpx = pytest.importorskip("httpx")
    port = free_port()
    log = (Path(os.environ.get("TMPDIR", "/tmp")) / f"alignrec-serve-test-{port}.log").open("w+b")
    proc = subprocess.Popen([sys.executable, "-m", "alignrec.cli", "--log-level", "WARNING", "serve", "--store_dir",
                             str(store), "--port", str(port), *flags], cwd=REPO,
                            env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"server exited with {proc.returncode}: {log.read().decode(errors='replace')}")
            try:
                workers_up = ready_files is None or len(list(ready_files[0].glob("gauge_livemax_*.db"))) >= ready_files[1]
                if workers_up and httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=300)  # drain + shutdown hooks; minutes on an overloaded machine
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.seek(0)
        output = log.read().decode(errors="replace")
        log.close()
        # uvicorn drains, runs the shutdown hooks, then exits 0 (workers > 1) or re-raises SIGTERM (one worker).
        assert proc.returncode in (0, -signal.SIGTERM), f"server exited with {proc.returncode}:\n{output}"
        assert output.count("Application shutdown complete") == output.count("Application startup complete") > 0, output
