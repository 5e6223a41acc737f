"""publish_cache + CacheReader: exact lookups, fallback and miss counts, version swap under concurrent reads."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from inference.cache import CacheReader, build_cache, current_version_path, publish_cache  # noqa: E402
from tests.inference.cache_fakes import FakeRecommender, as_stored, expected_recs, make_histories  # noqa: E402

K = 3


def _build(path, histories, recommend_fn=None, k=K):
    build_cache(recommend_fn or FakeRecommender(k), histories, path, k=k, progress=False, chunk_size=16)
    return path


def test_publish_and_get_exact(tmp_path):
    histories = make_histories(25)
    _build(tmp_path / "c", histories)
    db = publish_cache(tmp_path / "c", tmp_path / "store", popularity={"i9": 5, "i2": 7, "i4": 5, "i1": 1},
                       fallback_k=3, progress=False)
    assert current_version_path(tmp_path / "store") == db
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with CacheReader(tmp_path / "store") as reader:
        for user, history in histories.items():
            result = reader.get(user)
            assert result.items == as_stored(expected_recs(user, history, K)) and not result.fallback
            assert result.version == db.stem
        miss = reader.get("stranger")
        assert miss.fallback and miss.items == [("i2", 7.0), ("i4", 5.0), ("i9", 5.0)]  # ties by item id
        assert (reader.stats.lookups, reader.stats.hits, reader.stats.misses) == (26, 25, 1)
        assert reader.metadata["fallback_source"] == "train_popularity"


def test_fallback_from_cache_frequency_without_popularity(tmp_path):
    recs = {"u1": [("a", 0.0), ("b", -1.0)], "u2": [("b", 0.0), ("c", -1.0)], "u3": [("b", 0.0), ("a", -1.0)]}
    _build(tmp_path / "c", {u: [] for u in recs}, lambda users, hists: [recs[u] for u in users], k=2)
    publish_cache(tmp_path / "c", tmp_path / "store", progress=False)
    reader = CacheReader(tmp_path / "store")
    assert reader.get("zz").items == [("b", 3.0), ("a", 2.0)]
    assert reader.metadata["fallback_source"] == "cache_frequency"
    assert reader.stats.misses == 1


def test_old_versions_are_garbage_collected(tmp_path):
    _build(tmp_path / "c", make_histories(5))
    published = [publish_cache(tmp_path / "c", tmp_path / "store", keep_versions=2, progress=False) for _ in range(4)]
    assert sorted((tmp_path / "store" / "versions").glob("v-*.sqlite")) == published[-2:]


def test_reader_follows_new_version_and_survives_gc(tmp_path):
    _build(tmp_path / "a", {"u1": ["i1"]}, lambda users, hists: [[("old", 1.0)] for _ in users], k=1)
    _build(tmp_path / "b", {"u1": ["i1"]}, lambda users, hists: [[("new", 1.0)] for _ in users], k=1)
    publish_cache(tmp_path / "a", tmp_path / "store", keep_versions=1, progress=False)
    reader = CacheReader(tmp_path / "store")
    assert reader.get("u1").items == [("old", 1.0)]
    publish_cache(tmp_path / "b", tmp_path / "store", keep_versions=1, progress=False)  # deletes the old file
    assert reader.get("u1").items == [("new", 1.0)] and reader.stats.reloads == 1


def test_missing_store_and_unfinished_cache_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cache publish"):
        CacheReader(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="unfinished"):
        publish_cache(tmp_path / "nothing", tmp_path / "store", progress=False)


def test_publish_while_reading_every_read_is_one_whole_version(tmp_path):
    """A reader thread loops over users while two publishes swap versions; no read may mix versions."""
    histories = make_histories(200)
    tags = ["v1", "v2", "v3"]
    for tag in tags:  # version `tag` recommends items "<tag>-<user>-<rank>"
        _build(tmp_path / tag, histories,
               lambda users, hists, tag=tag: [[(f"{tag}-{u}-{r}", -float(r)) for r in range(K)] for u in users])
    publish_cache(tmp_path / "v1", tmp_path / "store", keep_versions=2, progress=False)
    reader = CacheReader(tmp_path / "store")
    users = sorted(histories) + ["missing-user"]
    seen: dict[str, set[str]] = {}  # version file -> build tags observed in it
    errors: list[str] = []
    stop = threading.Event()
    reads = [0]

    def read_loop() -> None:
        while not stop.is_set():
            for user in users:
                result = reader.get(user)
                reads[0] += 1
                if result.fallback:
                    if user != "missing-user":
                        errors.append(f"{user} fell back")
                    continue
                row_tags = {item.split("-")[0] for item, _ in result.items}
                want = [(f"{next(iter(row_tags))}-{user}-{r}", -float(r)) for r in range(K)]
                if len(row_tags) != 1 or result.items != want:
                    errors.append(f"mixed or partial read for {user}: {result.items}")
                seen.setdefault(result.version, set()).update(row_tags)

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        for tag in tags[1:]:
            while reads[0] < 300:  # let the reader work on the current version first
                time.sleep(0.001)
            reads[0] = 0
            publish_cache(tmp_path / tag, tmp_path / "store", keep_versions=2, progress=False)
        while reads[0] < 300:
            time.sleep(0.001)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert all(len(t) == 1 for t in seen.values()), seen  # each published version served exactly one build
    assert sorted(next(iter(t)) for t in seen.values()) == tags  # and the reader saw all three, in turn
    assert reader.get("u0001").items[0][0] == "v3-u0001-0"
    assert reader.stats.reloads == 2 and reader.stats.misses >= 3
