"""Serving fixtures: a real ``redis-server`` and a real ``alignrec serve`` process, each on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import random
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


def free_cluster_port() -> int:
    """A free loopback port P <= 55535 whose cluster bus port P + 10000 is free too (Redis Cluster needs both)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 55_536)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port pair (P, P + 10000) for a Redis Cluster node")


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


def _redis_binary() -> str:
    """The redis-server binary; skips with the reason when the client or the server is missing."""
    pytest.importorskip("redis", reason="the redis client is part of the serve extra: pip install 'alignrec[serve]'")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it with apt when run as root)")
    return binary


def _start_redis(binary: str, folder: Path, *flags: str, port: int | None = None) -> tuple[int, subprocess.Popen]:
    """A private redis-server (no persistence) on ``port`` (default: a free loopback port), answering PING; skips
    when it cannot run."""
    import redis

    port = port or free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder), *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    with redis.Redis(port=port) as client:
        while True:
            try:
                client.ping()
                return port, proc
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.skip(f"redis-server did not start: {proc.stdout.read().decode(errors='replace')[-500:]}")
                time.sleep(0.05)


def _stop_redis(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A private redis-server (no persistence) for the session; skips with the reason when it cannot run."""
    port, proc = _start_redis(_redis_binary(), tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop_redis([proc])


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory) -> Iterator[str]:
    """A private Redis Cluster of three masters (no replicas, no persistence) for the session, as the URL a user
    writes (``redis://<one node>/0?cluster=true``); skips with the reason when it cannot run."""
    import redis

    binary = _redis_binary()
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed (it creates the test cluster; it comes with redis-server)")
    folder = tmp_path_factory.mktemp("redis-cluster")
    procs: list[subprocess.Popen] = []
    try:
        ports = []
        for _ in range(3):
            port = free_cluster_port()
            port, proc = _start_redis(binary, folder, "--cluster-enabled", "yes", "--cluster-config-file",
                                      str(folder / f"nodes-{port}.conf"), "--daemonize", "no", port=port)
            ports.append(port)
            procs.append(proc)
        create = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                                 "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True,
                                timeout=60)
        if create.returncode != 0:
            pytest.skip(f"redis-cli --cluster create failed: {(create.stdout + create.stderr)[-500:]}")
        deadline = time.monotonic() + 30
        for port in ports:  # every node must see every slot covered before a client starts
            with redis.Redis(port=port) as client:
                while client.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        pytest.skip(f"the test Redis Cluster did not reach cluster_state:ok (node {port})")
                    time.sleep(0.05)
        yield f"redis://127.0.0.1:{ports[0]}/0?cluster=true"
    finally:
        _stop_redis(procs)
        shutil.rmtree(folder, ignore_errors=True)


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
