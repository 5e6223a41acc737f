"""The column-wise cache build (issue 34) writes the same bytes as the straightforward per-user encoding: chunk files,
history hashes and the shard's histories hash are pinned to their definitions, and a recommender answer checked as
whole arrays gives the same columns, or the same error, as the per-user checks."""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inference.cache import build_cache, layout, read_manifest
from inference.cache.build import recommend_batch, recommend_columns
from inference.cache.shards import CHUNK_SCHEMA, RecColumns, _check_answer, encode_chunk
from recdata.errors import UserError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_serve.py"
TRICKY = ["", "plain", 'quote"d', "back\\slash", "tab\there", "nl\nx", "\x00\x01\x1f\x7f", "é ü 中文", "emoji 🎉",
          "\u2028\u2029", "</script>", "a, b", "[]"]


def _reference_chunk(users: list[str], user_hashes: dict[str, str], recs: list[list[tuple[str, float]]]) -> bytes:
    """A chunk encoded row by row from Python lists: the format's plain definition."""
    rows = [(u, r, item, score) for u, user_recs in zip(users, recs, strict=True)
            for r, (item, score) in enumerate(user_recs, start=1)]
    columns = [pa.array([row[i] for row in rows], CHUNK_SCHEMA.field(i).type) for i in range(4)]
    meta = {layout.USERS_META_KEY: json.dumps({u: user_hashes[u] for u in users}, ensure_ascii=False).encode()}
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns, schema=CHUNK_SCHEMA.with_metadata(meta)), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _answer(users: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Uneven lists (some empty), shared and unusual item ids, negative zero and large scores."""
    return [[(f"{TRICKY[(n + r) % len(TRICKY)]}#{(n * 7 + r) % 11}", [-0.0, 1e300, -2.5, 3.0][r % 4] * (n + 1))
             for r in range(n % (k + 1))] for n, _ in enumerate(users)]


def test_history_hash_is_the_json_definition():
    class Sub(str):
        pass

    for history in ([], TRICKY, ["a"], [Sub("x"), "y"], ("t", "u"), [1, 2.5, None], ["a", 3]):
        want = hashlib.sha256(json.dumps(list(history), ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
        assert layout.history_hash(history) == want


def test_histories_hash_is_the_per_user_definition():
    user_hashes = {f"u{n:06d}é": f"{n:016x}" for n in range(70_000)}  # more than one block of lines
    digest = hashlib.sha256()
    for user in sorted(user_hashes):
        digest.update(layout.user_line(user, user_hashes[user]))
    assert layout.histories_hash(user_hashes) == digest.hexdigest()
    assert layout.histories_hash({}) == hashlib.sha256().hexdigest()


@pytest.mark.parametrize("num_users", [1, 5, 37])
def test_encode_chunk_bytes_match_the_row_by_row_encoding(num_users):
    users = sorted(f"user{n}{TRICKY[n % len(TRICKY)]}" for n in range(num_users))
    hashes = {u: layout.history_hash([u]) for u in users}
    recs = _answer(users, k=6)
    want = _reference_chunk(users, hashes, recs)
    assert encode_chunk(users, hashes, recs)[0] == want
    columns = recommend_columns(lambda u, h: _answer(u, 6), users, [[] for _ in users], 6)
    assert encode_chunk(users, hashes, columns) == (want, sum(map(len, recs)))
    assert columns.recs() == recs
    empty = [[] for _ in users]
    assert encode_chunk(users, hashes, RecColumns.from_recs(empty))[0] == _reference_chunk(users, hashes, empty)


def test_build_files_match_the_row_by_row_encoding(tmp_path):
    histories = {f"u{n:03d}": [TRICKY[j % len(TRICKY)] for j in range(n % 5)] for n in range(50)}
    recommend = lambda users, hists: _answer(users, 4)  # noqa: E731
    build_cache(recommend, histories, tmp_path / "c", 4, 0, 1, chunk_size=16, progress=False)
    users = sorted(histories)
    hashes = {u: hashlib.sha256(json.dumps(histories[u], ensure_ascii=False).encode()).hexdigest()[:16]
              for u in users}
    shard = read_manifest(tmp_path / "c")["shards"][0]
    assert shard["files"] and len(shard["files"]) == 4
    for index, entry in enumerate(shard["files"]):
        chunk = users[index * 16 : (index + 1) * 16]
        data = _reference_chunk(chunk, hashes, _answer(chunk, 4))
        assert (tmp_path / "c" / shard["dir"] / entry["name"]).read_bytes() == data
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()


class _Sub(str):
    pass


@pytest.mark.parametrize("answer", [
    [[("a", 1), ("b", np.float32(0.5))], []],  # ints and numpy scores: float() of each, as per user
    [[["a", 1.0], ["b", 2.0]], [("c", 3.0)]],  # lists, not tuples
    [[(_Sub("a"), 1.0)], [("a", 2.0)]],  # a str subclass is an item id
    [(("a", 1.0),), [("b", 2.0)]],  # a tuple of entries
    [[("a", 1.0), ("b", 2.0)], [("b", 2.0), ("a", 1.0)]],  # the same items for two users
])
def test_unusual_valid_answers_match_the_per_user_checks(answer):
    users = ["u1", "u2"]
    columns = RecColumns.from_answer(users, answer, 2)
    assert columns.recs() == _check_answer(users, answer, 2)
    assert recommend_batch(lambda u, h: answer, users, [[], []], 2) == dict(zip(users, columns.recs(), strict=True))


@pytest.mark.parametrize(("answer", "message"), [
    ([[("a", 1.0)], [("b", 1.0), ("b", 2.0)], [("c", "x")]], "duplicate items for user 'u2'"),
    ([[("a", 1.0)], [("b", 1.0)], [("c", 1.0), ("d", 1.0), ("e", 1.0)]], "3 items for user 'u3'"),
    ([[("a", 1.0)], [("b", float("inf"))], [(b"c", 1.0)]], r"\('b', inf\) for user 'u2'"),
    ([[("a", 1.0)], [(3, 1.0)], [("c", 1.0)]], r"\(3, 1.0\) for user 'u2'"),
    ([[("a", 1.0)], [(b"b", 1.0)], [("c", 1.0)]], r"\(b'b', 1.0\) for user 'u2'"),
    ([[("a", None)], [("b", 1.0)], [("c", 1.0)]], "for user 'u1'; expected a list"),
    ([[("a", 1.0)], [("b", 1.0)]], "returned 2 lists for 3 users"),
])
def test_bad_answers_raise_the_per_user_error(answer, message):
    with pytest.raises(UserError, match=message):
        RecColumns.from_answer(["u1", "u2", "u3"], answer, 2)


def test_bench_recommender_is_its_formula(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_serve", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_serve", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    users = ["u0000000", "u0000001", "u9999999", "u12345678901"]
    for num_items, k, tag in [(50_000, 20, 1), (7, 3, 2)]:
        want = [[(f"i{(int(u[1:]) * 7919 + r * 104729 + tag) % num_items}", float(tag * 1000 - r)) for r in range(k)]
                for u in users]
        answer = bench.tagged_recommender(num_items, k, tag)(users, [[] for _ in users])
        assert isinstance(answer, RecColumns) and answer.recs() == want
        assert RecColumns.from_answer(users, answer, k).recs() == want  # a valid answer as it stands
    assert bench.tagged_recommender(10, 2, 1)([], []).recs() == []


def test_build_leaves_the_garbage_collector_as_it_found_it(tmp_path):
    seen = []
    recommend = lambda users, hists: seen.append(gc.get_freeze_count()) or [[] for _ in users]  # noqa: E731
    build_cache(recommend, {"a": [], "b": ["x"]}, tmp_path / "c", 2, 0, 1, progress=False)
    assert seen[0] > 0 and gc.get_freeze_count() == 0  # frozen while it ran, not after
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        build_cache(recommend, {"a": [], "b": ["x"]}, tmp_path / "d", 2, 0, 1, progress=False)
        assert gc.get_freeze_count() == frozen  # someone else's freeze is theirs to undo
    finally:
        gc.unfreeze()
