"""Pieces of the Ray engine that need no cluster: the Arrow chunk plan, locations/URIs, the actor's chunk logic.

The in-process pipeline test runs the Ray stages' own functions (hash -> assign -> pack -> ChunkWriter) in
order, so the chunk files can be compared byte for byte with the local engine's, with or without Ray installed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from inference.cache import build_cache, finalize_cache, iter_cache, layout, publish_cache
from inference.cache.build import claim_config, write_shard_done
from inference.cache.location import open_location
from inference.cache.plan import ChunkPlan, chunk_of
from inference.cache.ray_build import ChunkWriter, assign_batch, hash_batch, histories_table, pack_batch
from recdata.errors import ConfigError, UserError
from tests.inference.cache_fakes import FakeRecommender, FakeRecommenderFactory, expected_recs, make_histories

K = 4


def _plan(histories, chunk_size):
    hashes = {u: layout.history_hash(h) for u, h in histories.items()}
    users = list(hashes)[::-1]  # input order must not matter
    return hashes, ChunkPlan.from_arrays(pa.array(users), pa.array([hashes[u] for u in users]), chunk_size)


@pytest.mark.parametrize(("num_users", "chunk_size"), [(23, 5), (20, 5), (7, 1), (3, 10)])
def test_arrow_plan_is_the_local_plan(num_users, chunk_size):
    histories = make_histories(num_users)
    hashes, plan = _plan(histories, chunk_size)
    chunks = layout.plan_shard(list(histories), 0, 1, chunk_size)
    assert [plan.chunk_users(i) for i in range(plan.num_chunks)] == chunks
    assert plan.histories_hash == layout.histories_hash(hashes)
    assert plan.digests == [layout.users_digest({u: hashes[u] for u in c}) for c in chunks]
    assert [plan.chunk_len(i) for i in range(plan.num_chunks)] == [len(c) for c in chunks]
    users = np.array(list(histories), dtype=object)
    assert chunk_of(plan.first_users(), users).tolist() == [
        next(i for i, c in enumerate(chunks) if u in c) for u in users]


@pytest.mark.parametrize(("users", "message"), [(["a", "b", "a"], "'a' appears more than once"),
                                                (["a", ""], "non-empty"), ([], "empty")])
def test_arrow_plan_refuses_bad_ids(users, message):
    with pytest.raises(UserError, match=message):
        ChunkPlan.from_arrays(pa.array(users, pa.string()), pa.array(["h"] * len(users), pa.string()), 4)


@pytest.mark.parametrize("kind", ["path", "file_uri", "subtree"])
def test_location_write_once_read_list(tmp_path, kind):
    if kind == "subtree":
        loc = open_location("a/b", pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()))
    else:
        loc = open_location(tmp_path / "a" / "b" if kind == "path" else (tmp_path / "a" / "b").as_uri())
    assert not loc.has_entries() and loc.list_names("d") == []
    loc.write_once("d/x.bin", b"one")
    loc.write_once("d/x.bin", b"two")  # same name again: replaced whole, never a second file
    loc.write_once("d/.hidden", b"")
    assert loc.read_bytes("d/x.bin") == b"two" and loc.is_file("d/x.bin") and not loc.is_file("d")
    assert loc.list_names("d", suffix=".bin") == ["x.bin"] and loc.has_entries()
    assert (tmp_path / "a" / "b" / "d" / "x.bin").read_bytes() == b"two"
    assert (loc.local_dir is not None) == (kind != "subtree")  # only plain local paths use temp + rename


def test_unknown_uri_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="nosuchscheme://x"):
        open_location("nosuchscheme://x")


def _pipeline(histories, loc, chunk_size, factory, todo=None):
    """What build_cache_ray runs on the cluster, stage by stage in this process."""
    table = histories_table(histories)
    hashed = hash_batch(table, "histories")
    plan = ChunkPlan.from_arrays(hashed["user_id"], hashed["history_hash"], chunk_size)
    config = {"format_version": layout.FORMAT_VERSION, "k": K, "model": "", "adapter": "", "item_tokenizer_hash": "",
              "num_shards": 1, "chunk_size": chunk_size, "num_users": plan.num_users,
              "histories_hash": plan.histories_hash, "base_version": None, "created_at": "t"}
    claim_config(loc, config, overwrite=False)
    todo = np.ones(plan.num_chunks, bool) if todo is None else todo
    packed = pack_batch(assign_batch(table, plan.first_users(), todo))
    writer = ChunkWriter(factory, loc, "shard-00000-of-00001", K, plan.num_users, chunk_size,
                         np.asarray(plan.digests), 1)
    return plan, writer, packed, writer(packed).to_pylist()


def test_in_process_pipeline_writes_the_local_engines_bytes(tmp_path):
    histories = make_histories(37)
    local = build_cache(FakeRecommender(K), histories, tmp_path / "local", k=K, chunk_size=8, progress=False)
    loc = open_location("out", pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()))
    plan, writer, packed, rows = _pipeline(histories, loc, 8, FakeRecommenderFactory(K))
    assert [r["chunk"] for r in rows] == list(range(5)) and all(r["computed"] for r in rows)
    shard = "shard-00000-of-00001"
    for f in local.manifest["shards"][0]["files"]:
        assert loc.read_bytes(f"{shard}/{f['name']}") == (tmp_path / "local" / shard / f["name"]).read_bytes()
    write_shard_done(loc, 0, 1, [{key: r[key] for key in ("name", "num_users", "num_rows", "sha256")} for r in rows])
    manifest = finalize_cache(loc)
    assert manifest["shards"] == local.manifest["shards"] and manifest["histories_hash"] == local.manifest[
        "histories_hash"]
    assert {u: r for u, _, r in iter_cache(tmp_path / "out")} == {u: expected_recs(u, h, K)
                                                                 for u, h in histories.items()}
    # A retried task: its chunks are already committed, so they are described, not recomputed.
    assert len(writer.fn.calls) == 5
    again = writer(packed).to_pylist()
    assert len(writer.fn.calls) == 5  # no recommender call for committed chunks
    assert [r["sha256"] for r in again] == [r["sha256"] for r in rows] and not any(r["computed"] for r in again)


def test_chunk_writer_never_writes_a_chunk_that_differs_from_the_plan(tmp_path):
    histories = make_histories(12)
    loc = open_location(tmp_path / "out")
    plan, writer, packed, _ = _pipeline(histories, loc, 4, FakeRecommenderFactory(K),
                                        todo=np.zeros(3, bool))  # nothing to do: packed is empty
    assert packed.num_rows == 0
    lost_user = pa.table({"chunk": [1], "user_ids": [plan.chunk_users(1)[:-1]], "histories": [[[], [], []]],
                          "history_hashes": [["x", "y", "z"]]})
    with pytest.raises(RuntimeError, match="chunk 1 arrived with 3 users, the plan has 4"):
        writer(lost_user)
    assert not (tmp_path / "out" / "shard-00000-of-00001" / "chunk-000001.parquet").exists()


def test_publish_reads_a_file_uri(tmp_path):
    histories = make_histories(9)
    build_cache(FakeRecommender(K), histories, tmp_path / "c", k=K, progress=False)
    db = publish_cache((tmp_path / "c").as_uri(), tmp_path / "store", progress=False)
    import sqlite3

    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM recs").fetchone()[0] == 9
        assert con.execute("SELECT value FROM meta WHERE key = 'cache_dir'").fetchone()[0] == f'"{(tmp_path / "c").as_uri()}"'


@pytest.mark.parametrize(("flags", "message"), [
    (["--engine", "spark"], "engine must be"),
    (["--engine", "ray", "--num_shards", "2"], "--num_shards"),
    (["--engine", "ray", "--base_cache", "x"], "--base_cache"),
    (["--histories", "h.parquet"], "need --engine ray"),
    (["--engine", "ray", "--num_actors", "0"], "num_actors must be >= 1"),
])
def test_build_flags_for_the_engines_are_checked(flags, message):
    from inference.cache.cli import CacheBuildConfig
    from recdata.config import parse_config

    with pytest.raises(ConfigError, match=message):
        parse_config([CacheBuildConfig], ["--split_dir", "d", "--out_dir", "o", "--recommender", "popularity", *flags])
