"""Cache build at millions of users (issue 34): each shard touches only its own users, a refresh reads only its
share of the base, and the pipeline's post-publish check looks up a bounded, seeded sample."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

import numpy as np
import pytest

from inference.cache import CacheMismatchError, build_cache, iter_cache, layout, publish_cache, read_manifest
from tests.inference.cache_fakes import FakeRecommender, expected_recs, make_histories

K = 4


class RecordingHistories(Mapping):
    """``{user: history}`` that records whose history was read (iterating the ids reads none)."""

    def __init__(self, histories: dict[str, list[str]]) -> None:
        self.data, self.read = histories, set()

    def __getitem__(self, user: str) -> list[str]:
        self.read.add(user)
        return self.data[user]

    def __contains__(self, user: object) -> bool:  # a membership test reads no history
        return user in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7, 64])
def test_user_keys_give_the_shard_assignment_of_shard_of(num_shards):
    rng = np.random.default_rng(num_shards)
    users = [f"u{n}" for n in range(300)] + ["ü-ñ", "用户", "a" * 200, " ", "\x1f"]
    users += ["".join(chr(int(c)) for c in rng.integers(33, 1000, rng.integers(1, 12))) for _ in range(100)]
    users = list(dict.fromkeys(users))
    keys = layout.user_keys(users)
    assert (keys % np.uint64(num_shards)).tolist() == [layout.shard_of(u, num_shards) for u in users]
    chunks = [layout.plan_shard(users, s, num_shards, 5) for s in range(num_shards)]
    selected = [layout.select_shard(users, keys, s, num_shards) for s in range(num_shards)]
    assert selected == [[u for c in chunk for u in c] for chunk in chunks]
    flat = [u for shard in selected for u in shard]
    assert sorted(flat) == sorted(users) and len(flat) == len(set(flat))  # union = all users, none twice
    assert layout.users_hash(keys) == layout.users_hash(layout.user_keys(users[::-1]))  # order independent
    assert layout.users_hash(keys) != layout.users_hash(keys[1:])


def test_each_shard_reads_and_computes_only_its_own_users(tmp_path):
    data = make_histories(90)
    seen: list[str] = []
    for shard in range(3):
        histories, rec = RecordingHistories(data), FakeRecommender(K)
        result = build_cache(rec, histories, tmp_path, k=K, shard_index=shard, num_shards=3, chunk_size=4,
                             progress=False)
        own = {u for u in data if layout.shard_of(u, 3) == shard}
        assert histories.read == own and set(rec.users_seen) == own
        assert result.chunks_total == -(-len(own) // 4)
        seen += rec.users_seen
    assert sorted(seen) == sorted(data)  # every user computed exactly once across shards
    rows = {u: r for u, _, r in iter_cache(tmp_path)}
    assert rows == {u: expected_recs(u, h, K) for u, h in data.items()}
    manifest = read_manifest(tmp_path)
    done = [json.loads((tmp_path / layout.shard_dir_name(s, 3) / layout.SHARD_DONE_NAME).read_text())
            for s in range(3)]
    shard_hashes = [layout.histories_hash({u: layout.history_hash(data[u]) for u in data
                                           if layout.shard_of(u, 3) == s}) for s in range(3)]
    assert [d["histories_hash"] for d in done] == shard_hashes
    assert manifest["histories_hash"] == layout.combined_histories_hash(shard_hashes)
    assert manifest["users_hash"] == layout.users_hash(layout.user_keys(list(data)))


def test_one_shard_keeps_the_histories_hash_of_every_user(tmp_path):
    data = make_histories(10)
    result = build_cache(FakeRecommender(K), data, tmp_path, k=K, progress=False)
    assert result.manifest["histories_hash"] == layout.histories_hash({u: layout.history_hash(h)
                                                                       for u, h in data.items()})


def test_a_finished_shard_with_other_histories_is_refused_or_overwritten(tmp_path):
    data = make_histories(24)
    for shard in range(2):
        build_cache(FakeRecommender(K), data, tmp_path, k=K, shard_index=shard, num_shards=2, progress=False)
    changed = dict(data)
    user = next(u for u in data if layout.shard_of(u, 2) == 1)
    changed[user] = [*data[user], "i29"]
    again = FakeRecommender(K)
    build_cache(again, changed, tmp_path, k=K, shard_index=0, num_shards=2, progress=False)  # its users: unchanged
    assert again.calls == []
    with pytest.raises(CacheMismatchError, match="other histories.*--overwrite"):
        build_cache(FakeRecommender(K), changed, tmp_path, k=K, shard_index=1, num_shards=2, progress=False)
    shard_dir = tmp_path / layout.shard_dir_name(1, 2)
    (shard_dir / "notes.txt").write_text("a user's file")  # overwriting the shard removes only what the build wrote
    rec = FakeRecommender(K)
    result = build_cache(rec, changed, tmp_path, k=K, shard_index=1, num_shards=2, overwrite=True, progress=False)
    assert (shard_dir / "notes.txt").read_text() == "a user's file"
    assert sorted(rec.users_seen) == sorted(u for u in data if layout.shard_of(u, 2) == 1)
    assert {u: r for u, _, r in iter_cache(tmp_path)} == {u: expected_recs(u, h, K) for u, h in changed.items()}
    assert result.manifest == read_manifest(tmp_path)


def test_a_format_1_build_folder_is_refused(tmp_path):
    build_cache(FakeRecommender(K), make_histories(5), tmp_path, k=K, progress=False)
    config = json.loads((tmp_path / layout.BUILD_CONFIG_NAME).read_text())
    config["format_version"] = 1
    (tmp_path / layout.BUILD_CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CacheMismatchError, match="format_version: cached 1 vs now 2"):
        build_cache(FakeRecommender(K), make_histories(5), tmp_path, k=K, progress=False)


def test_refresh_reads_only_the_base_shard_of_its_users(tmp_path):
    old = make_histories(40)
    for shard in range(2):
        build_cache(FakeRecommender(K), old, tmp_path / "v1", k=K, shard_index=shard, num_shards=2, chunk_size=3,
                    model="m", progress=False)
    for chunk in (tmp_path / "v1" / layout.shard_dir_name(1, 2)).glob("chunk-*.parquet"):
        chunk.write_bytes(chunk.read_bytes()[::-1])  # base shard 1 unreadable: shard 0 must never open it
    new = dict(old)
    mine = sorted(u for u in old if layout.shard_of(u, 2) == 0)
    new[mine[0]] = [*old[mine[0]], "i29"]  # changed
    new["u0999"] = ["i5"]  # new (in whichever shard it hashes to)
    del new[mine[1]]  # removed
    rec = FakeRecommender(K)
    result = build_cache(rec, new, tmp_path / "v2", k=K, shard_index=0, num_shards=2, chunk_size=5, model="m",
                         base_cache=tmp_path / "v1", progress=False)
    fresh = [mine[0]] + (["u0999"] if layout.shard_of("u0999", 2) == 0 else [])
    assert sorted(rec.users_seen) == sorted(fresh)  # only changed and new users are recomputed
    assert (result.users_computed, result.users_reused) == (len(fresh), len(mine) - 2)
    with pytest.raises(ValueError, match=r"shard-00001-of-00002/chunk-\d+\.parquet has sha256"):
        build_cache(FakeRecommender(K), new, tmp_path / "v2", k=K, shard_index=1, num_shards=2, chunk_size=5,
                    model="m", base_cache=tmp_path / "v1", progress=False)


def test_verify_store_looks_up_a_bounded_seeded_sample(tmp_path, monkeypatch):
    from alignrec.pipeline.stages.cache import verify_store
    from inference.cache.reader import CacheReader

    data = make_histories(50)
    build_cache(FakeRecommender(K), data, tmp_path / "c", k=K, progress=False)
    publish_cache(tmp_path / "c", tmp_path / "s", progress=False)
    looked_up: list[str] = []
    real_get = CacheReader.get
    monkeypatch.setattr(CacheReader, "get", lambda self, user, scenario=None: (looked_up.append(user),
                                                                                real_get(self, user, scenario))[1])
    users = list(data)
    check = verify_store(tmp_path / "s", users, sample=7, seed=3)
    assert check["verified_users"] == 7 and len(looked_up) == 7 == len(set(looked_up))
    first, looked_up[:] = list(looked_up), []
    verify_store(tmp_path / "s", users, sample=7, seed=3)
    assert looked_up == first  # seeded: the same users every time
    assert verify_store(tmp_path / "s", users, sample=1000)["verified_users"] == 50  # all when fewer
    with pytest.raises(RuntimeError, match="holds 50 users, the split serves 51"):
        verify_store(tmp_path / "s", [*users, "ghost"])
    with pytest.raises(RuntimeError, match="1 of 50 sampled user.*'ghost'"):
        verify_store(tmp_path / "s", [*users[:-1], "ghost"], sample=50)
