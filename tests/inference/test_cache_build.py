"""build_cache: exact rows, sharding, resume after a crash, config guards, incremental refresh."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from inference.cache import CacheMismatchError, build_cache, read_manifest, verify_cache  # noqa: E402
from recdata.io import sha256_file  # noqa: E402
from tests.inference.cache_fakes import FakeRecommender, cache_rows, expected_recs, make_histories  # noqa: E402

K = 4


def _expected(histories, k=K):
    return {u: expected_recs(u, h, k) for u, h in histories.items()}


def test_single_shard_rows_and_manifest_exact(tmp_path):
    histories = {"b": ["i1", "i2"], "a": ["i3"], "c": []}
    rec = FakeRecommender(K)
    result = build_cache(rec, histories, tmp_path / "c", k=K, shard_index=0, num_shards=1, chunk_size=2,
                         model="m", adapter="ad", item_tokenizer_hash="ith", progress=False)
    assert result.chunks_total == 2 and result.users_computed == 3 and result.manifest is not None
    assert rec.calls == [["a", "b"], ["c"]]  # users sorted, cut into chunks of 2
    rows = pq.read_table(tmp_path / "c" / "shard-00000-of-00001" / "chunk-000000.parquet").to_pylist()
    want = [{"user_id": u, "rank": r, "item_id": i, "score": s}
            for u in ("a", "b") for r, (i, s) in enumerate(expected_recs(u, histories[u], K), start=1)]
    assert rows == want
    manifest = read_manifest(tmp_path / "c")
    assert {key: manifest[key] for key in ("k", "model", "adapter", "item_tokenizer_hash", "num_users", "num_rows")} == {
        "k": K, "model": "m", "adapter": "ad", "item_tokenizer_hash": "ith", "num_users": 3, "num_rows": 3 * K}
    files = manifest["shards"][0]["files"]
    assert [f["num_rows"] for f in files] == [2 * K, K]
    for f in files:
        assert f["sha256"] == sha256_file(tmp_path / "c" / "shard-00000-of-00001" / f["name"])
    assert cache_rows(tmp_path / "c") == _expected(histories)


@pytest.mark.parametrize("num_shards", [1, 3, 7])
def test_shards_partition_users_and_manifest_comes_last(tmp_path, num_shards):
    histories = make_histories(40)
    seen: list[str] = []
    for shard in range(num_shards):
        assert not (tmp_path / "manifest.json").exists()
        rec = FakeRecommender(K)
        result = build_cache(rec, histories, tmp_path, k=K, shard_index=shard, num_shards=num_shards, chunk_size=4,
                             progress=False)
        seen += rec.users_seen
        assert (result.manifest is not None) == (shard == num_shards - 1)
    assert sorted(seen) == sorted(histories)  # every user computed exactly once across shards
    assert cache_rows(tmp_path) == _expected(histories)


def test_shard_from_torchrun_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = build_cache(FakeRecommender(K), make_histories(10), tmp_path, k=K, progress=False)
    assert (result.shard_index, result.num_shards) == (1, 2)
    assert (tmp_path / "shard-00001-of-00002" / "_SHARD_DONE.json").is_file()
    with pytest.raises(ValueError, match="shard_index 2 is outside"):
        build_cache(FakeRecommender(K), make_histories(10), tmp_path, k=K, shard_index=2, progress=False)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="no shard index"):  # never a silent "shard 0 of 4"
        build_cache(FakeRecommender(K), make_histories(10), tmp_path / "x", k=K, num_shards=4, progress=False)


def test_resume_after_crash_computes_only_missing_chunks(tmp_path):
    histories = make_histories(30)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache(FakeRecommender(K, fail_after_calls=3), histories, tmp_path, k=K, shard_index=0, num_shards=1,
                    chunk_size=4, progress=False)
    assert not (tmp_path / "manifest.json").exists()
    rec = FakeRecommender(K)
    result = build_cache(rec, histories, tmp_path, k=K, shard_index=0, num_shards=1, chunk_size=4, progress=False)
    assert result.chunks_skipped == 3 and result.chunks_total == 8
    assert rec.users_seen == sorted(histories)[12:]
    assert cache_rows(tmp_path) == _expected(histories)
    # A third run has nothing left to do and leaves the same manifest.
    again = FakeRecommender(K)
    build_cache(again, histories, tmp_path, k=K, shard_index=0, num_shards=1, chunk_size=4, progress=False)
    assert again.calls == [] and read_manifest(tmp_path) == result.manifest


@pytest.mark.parametrize("change", [{"k": K + 1}, {"model": "other"}, {"item_tokenizer_hash": "x"}, {"chunk_size": 5},
                                    {"histories": "changed"}])
def test_rerun_with_other_settings_is_refused_unless_overwrite(tmp_path, change):
    base = {"k": K, "model": "m", "item_tokenizer_hash": "h", "chunk_size": 4}
    histories = make_histories(12)
    build_cache(FakeRecommender(K), histories, tmp_path, shard_index=0, num_shards=1, progress=False, **base)
    kwargs = {**base, **{key: v for key, v in change.items() if key != "histories"}}
    new_hist = make_histories(12, salt="i29") if "histories" in change else histories
    with pytest.raises(CacheMismatchError, match="--overwrite"):
        build_cache(FakeRecommender(kwargs["k"]), new_hist, tmp_path, shard_index=0, num_shards=1, progress=False,
                    **kwargs)
    build_cache(FakeRecommender(kwargs["k"]), new_hist, tmp_path, shard_index=0, num_shards=1, progress=False,
                overwrite=True, **kwargs)
    assert cache_rows(tmp_path) == _expected(new_hist, kwargs["k"])


def _tree(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_overwrite_removes_only_what_a_build_wrote(tmp_path):
    """--overwrite with other settings deletes the old build's files (every shard's chunks, done markers, resolved
    flags and temp files; config, manifest; shard folders left empty) and never a user's file, then builds anew."""
    histories = make_histories(20)
    for shard in range(2):
        build_cache(FakeRecommender(K), histories, tmp_path, k=K, shard_index=shard, num_shards=2, chunk_size=3,
                    progress=False)
    old = _tree(tmp_path)
    assert {"manifest.json", "build_config.json", "shard-00001-of-00002/chunk-000000.parquet"} <= old
    (tmp_path / "shard-00000-of-00002" / "resolved_config.json").write_text("{}")  # what the CLI adds
    (tmp_path / "shard-00000-of-00002" / ".chunk-000009.parquet.k2_x9a.tmp").write_text("killed")
    (tmp_path / "notes.txt").write_text("a user's file")
    (tmp_path / "shard-00000-of-00002" / "notes.txt").write_text("another")
    (tmp_path / "shard-00000-of-00002" / "chunk-notes.parquet").write_text("not a chunk name the build writes")
    new = {"k": K + 1, "shard_index": 0, "num_shards": 1, "chunk_size": 4}
    result = build_cache(FakeRecommender(K + 1), histories, tmp_path, overwrite=True, progress=False, **new)
    assert (tmp_path / "notes.txt").read_text() == "a user's file"
    assert _tree(tmp_path / "shard-00000-of-00002") == {"notes.txt", "chunk-notes.parquet"}
    assert not (tmp_path / "shard-00001-of-00002").exists()
    assert _tree(tmp_path) == {
        "notes.txt", "build_config.json", "manifest.json", "shard-00000-of-00002", "shard-00000-of-00001",
        *(f"shard-00000-of-00002/{name}" for name in ("notes.txt", "chunk-notes.parquet")),
        "shard-00000-of-00001/_SHARD_DONE.json", *(f"shard-00000-of-00001/chunk-{i:06d}.parquet" for i in range(5))}
    assert result.manifest == verify_cache(tmp_path) and result.manifest["k"] == K + 1
    assert cache_rows(tmp_path) == _expected(histories, K + 1)


def test_overwrite_on_a_uri_removes_only_what_a_build_wrote(tmp_path):
    import pyarrow.fs as pafs

    from inference.cache.build import claim_config
    from inference.cache.location import open_location

    build_cache(FakeRecommender(K), make_histories(6), tmp_path / "out", k=K, chunk_size=2, progress=False)
    (tmp_path / "out" / "notes.txt").write_text("a user's file")
    (tmp_path / "out" / "shard-00000-of-00001" / "notes.txt").write_text("another")
    loc = open_location("out", pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()))
    assert loc.local_dir is None  # the non-local path of claim_config
    config = {**json.loads((tmp_path / "out" / "build_config.json").read_text()), "k": K + 1}
    assert claim_config(loc, config, overwrite=True) == config
    assert _tree(tmp_path / "out") == {"notes.txt", "build_config.json", "shard-00000-of-00001",
                                       "shard-00000-of-00001/notes.txt"}


def test_refuses_non_cache_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no cache build"):
        build_cache(FakeRecommender(K), make_histories(3), tmp_path, k=K, progress=False)


@pytest.mark.parametrize(("bad", "message"), [
    (lambda users, hists: [[("i1", 0.0)]] * (len(users) + 1), "lists for"),
    (lambda users, hists: [[(f"i{j}", 0.0) for j in range(K + 1)] for _ in users], "more than k"),
    (lambda users, hists: [[("i1", 0.0), ("i1", -1.0)] for _ in users], "duplicate items for user 'u0000'"),
    (lambda users, hists: [[("i1", float("nan"))] for _ in users], "finite score"),
    (lambda users, hists: [[(7, 0.0)] for _ in users], "item_id: str"),
])
def test_bad_recommender_output_is_rejected(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        build_cache(bad, make_histories(3), tmp_path, k=K, shard_index=0, num_shards=1, progress=False)
    assert not list(tmp_path.glob("shard-*/chunk-*.parquet"))


def test_bad_histories_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="history of user 'u1'"):
        build_cache(FakeRecommender(K), {"u1": "i1,i2"}, tmp_path, k=K, progress=False)
    with pytest.raises(ValueError, match="empty"):
        build_cache(FakeRecommender(K), {}, tmp_path, k=K, progress=False)


def test_user_without_recommendations_is_kept(tmp_path):
    build_cache(lambda users, hists: [[] for _ in users], {"u1": ["i1"]}, tmp_path, k=K, progress=False)
    assert cache_rows(tmp_path) == {"u1": []}
    assert read_manifest(tmp_path)["num_users"] == 1


def test_incremental_refresh_recomputes_only_changed_and_new_users(tmp_path):
    old = make_histories(20)
    build_cache(FakeRecommender(K), old, tmp_path / "v1", k=K, num_shards=2, shard_index=0, chunk_size=3,
                model="m", progress=False)
    build_cache(FakeRecommender(K), old, tmp_path / "v1", k=K, num_shards=2, shard_index=1, chunk_size=3,
                model="m", progress=False)
    new = dict(old)
    new["u0002"] = old["u0002"] + ["i29"]  # changed
    new["u0100"] = ["i5"]  # new
    del new["u0003"]  # removed
    rec = FakeRecommender(K)
    result = build_cache(rec, new, tmp_path / "v2", k=K, shard_index=0, num_shards=1, chunk_size=5, model="m",
                         base_cache=tmp_path / "v1", progress=False)
    assert sorted(rec.users_seen) == ["u0002", "u0100"]
    assert (result.users_computed, result.users_reused) == (2, 18)
    assert cache_rows(tmp_path / "v2") == _expected(new)
    assert result.manifest["base_version"] == read_manifest(tmp_path / "v1")["version"]


def test_refresh_refuses_base_from_another_model(tmp_path):
    build_cache(FakeRecommender(K), make_histories(5), tmp_path / "v1", k=K, model="m1", progress=False)
    with pytest.raises(CacheMismatchError, match="model"):
        build_cache(FakeRecommender(K), make_histories(5), tmp_path / "v2", k=K, model="m2",
                    base_cache=tmp_path / "v1", progress=False)
    with pytest.raises(FileNotFoundError, match="unfinished"):
        build_cache(FakeRecommender(K), make_histories(5), tmp_path / "v3", k=K, base_cache=tmp_path / "nope",
                    progress=False)


def test_tampered_chunk_fails_verification(tmp_path):
    build_cache(FakeRecommender(K), make_histories(6), tmp_path, k=K, progress=False)
    chunk = next(tmp_path.glob("shard-*/chunk-*.parquet"))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=chunk.name):
        verify_cache(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["num_users"] == 6
