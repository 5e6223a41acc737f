"""scripts/bench_serve.py's publishes over a live store: each publish (its own process) reports its wall seconds,
in order, and the store ends on the last one's build; a publish that did not finish reads as None."""

from __future__ import annotations

import pytest

from inference.cache.reader import CacheReader
from tests.scripts import loaded_script


@pytest.fixture(scope="module")
def bench():
    yield from loaded_script("bench_serve")


def test_publishes_report_their_seconds_and_the_last_build_is_live(bench, tmp_path):
    histories = {f"u{n:07d}": [] for n in range(50)}
    caches = []
    for tag in (1, 2, 3):
        caches.append(tmp_path / f"cache-{tag}")
        bench.build_cache(bench.tagged_recommender(40, 5, tag), histories, caches[-1], 5, 0, 1, chunk_size=16,
                          progress=False)
    store = str(tmp_path / "store")
    bench._publish(str(caches[0]), store)  # the live version the two publishes land over
    procs, seconds_dir = bench.publish_later([0.0, 0.5], caches[1:3], store, tmp_path)
    assert seconds_dir.parent == tmp_path
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    seconds = bench.publish_seconds(seconds_dir, 2)
    assert len(seconds) == 2 and all(isinstance(s, float) and s >= 0 for s in seconds)
    result = CacheReader(store).get("u0000003")
    assert not result.fallback and result.items[0][1] == pytest.approx(3000)  # tag 3's scores: 3 * 1000 - rank
    (seconds_dir / "publish-1.txt").unlink()  # the test's own file: a publish that did not finish
    assert bench.publish_seconds(seconds_dir, 2) == [seconds[0], None]
