"""Kill-and-resume: SIGKILL a real cache-build process mid-way, rerun it, get exactly one row set per user."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from inference.cache import iter_cache, read_manifest  # noqa: E402
from tests.inference.cache_fakes import expected_recs, make_histories  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
NUM_USERS, K, CHUNK = 120, 5, 4

# The worker is what `alignrec cache build` does, with a slow fake recommender instead of a model.
WORKER = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.inference.cache_fakes import FakeRecommender, make_histories
from inference.cache import build_cache
out_dir, log_path, sleep_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
build_cache(FakeRecommender({K}, sleep_s=sleep_s, log_path=log_path), make_histories({NUM_USERS}), out_dir, k={K},
            shard_index=0, num_shards=1, chunk_size={CHUNK}, model="fake", progress=False)
"""


def _worker(out_dir: Path, log: Path, sleep_s: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(out_dir), str(log), str(sleep_s)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_mid_build_then_rerun_finishes_with_one_row_set_per_user(tmp_path):
    out_dir, log1, log2 = tmp_path / "cache", tmp_path / "calls1.txt", tmp_path / "calls2.txt"
    shard = out_dir / "shard-00000-of-00001"
    proc = _worker(out_dir, log1, sleep_s=0.05)
    deadline = time.monotonic() + 120
    while len(list(shard.glob("chunk-*.parquet"))) < 5:  # wait until it is well into the build
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "worker made no progress"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = sorted(shard.glob("chunk-*.parquet"))
    total_chunks = NUM_USERS // CHUNK
    assert 5 <= len(done_before) < total_chunks, "the kill should land mid-way"
    assert not (out_dir / "manifest.json").exists()

    rerun = _worker(out_dir, log2, sleep_s=0.0)
    output = rerun.communicate(timeout=120)[0].decode()
    assert rerun.returncode == 0, output

    histories = make_histories(NUM_USERS)
    rows = list(iter_cache(out_dir))  # verifies every file's sha256 against the manifest
    users = [u for u, _, _ in rows]
    assert sorted(users) == sorted(histories) and len(users) == len(set(users))  # none lost, none duplicated
    assert {u: r for u, _, r in rows} == {u: expected_recs(u, h, K) for u, h in histories.items()}
    finished_first = set(sorted(histories)[: len(done_before) * CHUNK])
    recomputed = set(log2.read_text().split())
    assert recomputed.isdisjoint(finished_first)  # the rerun skipped what the killed run had finished
    assert recomputed | finished_first == set(histories)
    assert read_manifest(out_dir)["num_rows"] == NUM_USERS * K
    assert not list(shard.glob(".*.tmp"))
