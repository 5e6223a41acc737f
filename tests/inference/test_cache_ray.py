"""The Ray engine of the cache build on a real local Ray cluster (2 CPUs, shared by the module).

Equality with the local engine row for row (tiny random LLM, real constrained beam search), an actor SIGKILLed
mid-chunk, the whole job SIGKILLed then rerun, and outputs behind a ``file://`` URI / ``SubTreeFileSystem``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra: pip install 'alignrec[ray]'")

# Each build here is 3 Ray Data executions (plan, keyed shuffle, actor pool) plus one shared cluster start: the
# module takes ~105 s on a quiet 2-core machine, so it is part of the default suite (CI installs the ray extra).
# The Ray-free pieces (plan, locations, the actor's chunk logic) are in test_cache_location_plan.py.

from inference.cache import build_cache, publish_cache, read_manifest  # noqa: E402
from inference.cache.ray_build import RayOptions, build_cache_ray, histories_table  # noqa: E402
from tests.inference.cache_fakes import FakeRecommenderFactory, cache_rows, expected_recs, make_histories  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
K, CHUNK = 4, 50
QUIET = RayOptions(progress=False)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local cluster for the module (start-up costs seconds of CPU); yields its address."""
    # Workers import this checkout: Ray puts the driver's working directory (the repo root under pytest) on
    # their sys.path. A loaded 2-core machine can take minutes to start the raylet, its agents and workers.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_raylet_start_wait_time_s", os.environ.get("RAY_raylet_start_wait_time_s", "300"))
        env.setenv("RAY_agent_register_timeout_ms", os.environ.get("RAY_agent_register_timeout_ms", "300000"))
        for attempt in range(3):  # the node's own start-up wait is a fixed 30 s: retry rather than fail
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                         _system_config={"worker_register_timeout_seconds": 300})
                break
            except Exception:  # noqa: BLE001 - ray raises a bare Exception for a slow node start
                ray.shutdown()
                if attempt == 2:
                    raise
        yield ray.get_runtime_context().gcs_address
        ray.shutdown()


def _logged(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_killed_actor_is_retried_and_every_user_is_stored_once(ray_cluster, tmp_path):
    histories = make_histories(3000)
    log, marker = tmp_path / "calls.txt", tmp_path / "killed"
    factory = FakeRecommenderFactory(K, log_path=log, kill_after_calls=5, kill_marker=marker)
    result = build_cache_ray(factory, histories, tmp_path / "c", k=K, chunk_size=CHUNK,
                             options=RayOptions(num_actors=2, progress=False))
    assert marker.exists(), "the fault was never injected"
    assert cache_rows(tmp_path / "c") == {u: expected_recs(u, h, K) for u, h in histories.items()}
    computed = _logged(log)
    assert sorted(computed) == sorted(histories)  # the killed chunk was redone once, no other chunk twice
    # Chunks the killed actor committed before dying come back from the retry as already committed (not
    # recomputed: the log above holds every user once), so this run's own count can only be lower.
    assert 0 < result.users_computed <= 3000 and read_manifest(tmp_path / "c")["num_rows"] == 3000 * K


JOB = """
import sys
import ray
from inference.cache.ray_build import RayOptions, build_cache_ray
from tests.inference.cache_fakes import FakeRecommenderFactory, make_histories
address, out_dir, log = sys.argv[1:4]
ray.init(address=address, log_to_driver=False)
build_cache_ray(FakeRecommenderFactory({k}, log_path=log, sleep_s=0.3), make_histories({n}), out_dir, k={k},
                chunk_size={chunk}, options=RayOptions(num_actors=1, progress=False))
"""


def test_rerun_after_the_job_is_killed_finishes_only_missing_chunks(ray_cluster, tmp_path):
    n = 2000
    out, log1, log2 = tmp_path / "c", tmp_path / "calls1.txt", tmp_path / "calls2.txt"
    shard = out / "shard-00000-of-00001"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    job = subprocess.Popen([sys.executable, "-c", JOB.format(k=K, n=n, chunk=CHUNK), ray_cluster, str(out), str(log1)],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while len(list(shard.glob("chunk-*.parquet"))) < 3:
        assert job.poll() is None, job.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.1)
    job.send_signal(signal.SIGKILL)
    job.wait()
    stable, count = time.monotonic(), -1
    while time.monotonic() - stable < 3:  # Ray ends the dead driver's actors; wait until nothing more appears
        now = len(list(shard.glob("chunk-*.parquet")))
        stable, count = (stable, count) if now == count else (time.monotonic(), now)
        time.sleep(0.2)
    before = {p.name for p in shard.glob("chunk-*.parquet")}
    assert 3 <= len(before) < n // CHUNK and not (out / "manifest.json").exists()

    histories = make_histories(n)
    result = build_cache_ray(FakeRecommenderFactory(K, log_path=log2), histories, out, k=K, chunk_size=CHUNK,
                             options=QUIET)
    assert result.chunks_skipped == len(before)
    plan_users = sorted(histories)
    finished = {u for name in before for u in plan_users[int(name[6:12]) * CHUNK:][:CHUNK]}
    recomputed = _logged(log2)
    assert set(recomputed).isdisjoint(finished) and set(recomputed) | finished == set(histories)
    assert len(recomputed) == len(set(recomputed))
    assert cache_rows(out) == {u: expected_recs(u, h, K) for u, h in histories.items()}


def test_equals_local_engine_row_for_row_with_a_tiny_llm(ray_cluster, tmp_path, coded):
    """Same users, same model, same chunks -> the same rows (scores within 1e-5) and the same manifest."""
    from inference import llm_recommender

    model, hf_tok, item_tok = coded
    items = list(item_tok.item_ids)
    histories = {f"u{n:03d}": [items[(n * 5 + j) % len(items)] for j in range(1 + n % 3)] for n in range(60)}
    kwargs = {"k": 3, "num_beams": 3, "exclude_history": True, "batch_size": 4}
    local = build_cache(llm_recommender(model, hf_tok, item_tok, **kwargs), histories, tmp_path / "local", k=3,
                        chunk_size=16, model="tiny", progress=False)
    parquet = tmp_path / "histories.parquet"
    pq.write_table(histories_table(histories), parquet)
    result = build_cache_ray(lambda: llm_recommender(model, hf_tok, item_tok, **kwargs), str(parquet),
                             tmp_path / "ray", k=3, chunk_size=16, model="tiny",
                             options=RayOptions(num_actors=2, progress=False))
    assert result.users_computed == len(histories) and result.chunks_total == 4
    want, got = cache_rows(tmp_path / "local"), cache_rows(tmp_path / "ray")
    assert list(got) == list(want)  # same users in the same chunk order
    for user in want:
        assert [i for i, _ in got[user]] == [i for i, _ in want[user]], user
        assert [s for _, s in got[user]] == pytest.approx([s for _, s in want[user]], abs=1e-5), user
    assert not set(got["u007"]) & set(histories["u007"])  # exclude_history held in the actors too
    same = ("num_users", "num_rows", "histories_hash", "num_shards", "chunk_size", "k", "model")
    assert {key: result.manifest[key] for key in same} == {key: local.manifest[key] for key in same}


def test_subtree_filesystem_output_then_publish_from_a_file_uri(ray_cluster, tmp_path):
    """Actors write through a pickled SubTreeFileSystem (no rename: one write per chunk); publish reads a URI."""
    histories = make_histories(300)
    sub = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    build_cache_ray(FakeRecommenderFactory(K), histories, "caches/v1", k=K, chunk_size=CHUNK, options=QUIET,
                    filesystem=sub)
    stored = tmp_path / "bucket" / "caches" / "v1"
    assert cache_rows(stored.as_uri()) == {u: expected_recs(u, h, K) for u, h in histories.items()}
    assert not list(stored.rglob(".*.tmp"))  # write-once names, no temp files
    db = publish_cache(stored.as_uri(), tmp_path / "store", progress=False)
    import sqlite3

    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM recs").fetchone()[0] == 300


def test_histories_parquet_with_duplicate_users_is_refused(ray_cluster, tmp_path):
    from recdata.errors import UserError

    table = pa.table({"user_id": ["a", "b", "a"], "history": [["i1"], [], ["i2"]]})
    pq.write_table(table, tmp_path / "h.parquet")
    with pytest.raises(UserError, match="'a' appears more than once"):
        build_cache_ray(FakeRecommenderFactory(K), str(tmp_path / "h.parquet"), tmp_path / "c", k=K, options=QUIET)
