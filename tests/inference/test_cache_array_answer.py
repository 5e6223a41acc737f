"""A recommender may answer the cache build as arrays (``RecColumns``, issue 34): the build writes the same bytes as
from the equivalent list of tuples, and a bad array answer is refused with the list form's error, naming the first
bad user (found from the lengths)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from inference.cache import build_cache
from inference.cache.build import recommend_batch
from inference.cache.shards import RecColumns
from recdata.errors import UserError

CATALOGUE = ["a", "b", 'quote"d', "é 中文", "emoji 🎉", "", "nl\nx", "z"]
K = 3


def _positions(users: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """[users, K] catalogue positions (-1: no item; user u0 gets none, others 1..K items, one gap mid-row) and
    scores, some negative zero."""
    pos = np.full((len(users), K), -1, np.int64)
    scores = np.zeros((len(users), K))
    for row, user in enumerate(users):
        n = int(user[1:])
        for r in range(n % (K + 1)):
            pos[row, r] = (n * 3 + r * 5) % len(CATALOGUE)
            scores[row, r] = [-0.0, 2.5, -1e300][r] * n
        if n % 7 == 3:
            pos[row, 0] = -1  # a beam that died: dropped, as the list form's `if item >= 0`
    return pos, scores


def _as_lists(users: list[str], histories: list[list[str]]) -> list[list[tuple[str, float]]]:
    pos, scores = _positions(users)
    return [[(CATALOGUE[p], float(s)) for p, s in zip(prow, srow, strict=True) if p >= 0]
            for prow, srow in zip(pos.tolist(), scores.tolist(), strict=True)]


def _as_columns(users: list[str], histories: list[list[str]]) -> RecColumns:
    return RecColumns.from_positions(*_positions(users), pa.array(CATALOGUE))


def _build(tmp_path: Path, name: str, recommend) -> dict[str, bytes]:
    histories = {f"u{n}": [CATALOGUE[j % len(CATALOGUE)] for j in range(n % 4)] for n in range(23)}
    out = tmp_path / name
    for shard in range(2):
        build_cache(recommend, histories, out, K, shard, 2, chunk_size=4, progress=False)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _without_time(data: bytes) -> dict:
    obj = json.loads(data)
    obj.pop("created_at")
    obj.pop("version", None)  # a digest of the config, created_at included
    return obj


def test_array_answer_builds_the_same_files_as_lists(tmp_path):
    lists, columns = _build(tmp_path, "lists", _as_lists), _build(tmp_path, "columns", _as_columns)
    assert lists.keys() == columns.keys() and sum(p.endswith(".parquet") for p in lists) > 4
    for rel in lists:
        if rel in ("manifest.json", "build_config.json"):
            assert _without_time(lists[rel]) == _without_time(columns[rel])  # shard digests included
        else:
            assert lists[rel] == columns[rel], rel
    users = [f"u{n}" for n in range(8)]
    assert _as_columns(users, []).recs() == _as_lists(users, [])
    assert [] in _as_lists(users, []) and any(0 < len(r) < K for r in _as_lists(users, []))


def test_array_answer_in_a_refresh_and_with_other_dtypes():
    users = ["u1", "u2"]
    cols = RecColumns(np.array([2, 1], np.int32), pa.array(["a", "b", "a"]), np.array([1.5, 0.5, 2.0], np.float32))
    checked = RecColumns.from_answer(users, cols, 2)
    assert checked.lengths.dtype == np.int64 and checked.scores.dtype == np.float64
    assert recommend_batch(lambda u, h: cols, users, [[], []], 2) == {"u1": [("a", 1.5), ("b", 0.5)],
                                                                      "u2": [("a", 2.0)]}
    assert RecColumns.from_positions(np.array([[1, -1]]), np.array([[3.0, 0.0]]), ["x", "y"]).recs() == [[("y", 3.0)]]
    with pytest.raises(IndexError):
        RecColumns.from_positions(np.array([[2]]), np.array([[1.0]]), ["x", "y"])


def _cols(lengths: list[int], items: list[str | None], scores: list[float]) -> RecColumns:
    return RecColumns(np.array(lengths, np.int64), pa.array(items, pa.string()), np.array(scores, np.float64))


@pytest.mark.parametrize(("answer", "message"), [
    (_cols([1, 1, 3], ["a", "b", "c", "d", "e"], [1.0] * 5), r"3 items for user 'u3', more than k=2"),
    (_cols([1, -1, 2], ["a", "b"], [1.0, 1.0]), r"-1 items for user 'u2', a negative count"),
    (_cols([1, 2, 1], ["a", "b", "c"], [1.0] * 3), r"3 items and 3 scores for lengths summing to 4: user 'u3'"),
    (_cols([0, 2, 1], ["a", "b", "c"], [1.0, 1.0]), r"3 items and 2 scores .* user 'u3''s rows run past"),
    (_cols([0, 2, 0], ["a", "b"], [1.0, 1.0, 1.0]), r"2 items and 3 scores .* after the last user \('u3'\)"),
    (_cols([1, 1, 0], ["a", "b", "c"], [1.0] * 3), r"left over after the last user \('u3'\)"),
    (_cols([0, 2, 1], ["b", "b", "c"], [1.0] * 3), r"duplicate items for user 'u2': \['b', 'b'\]"),
    (_cols([1, 2, 2], ["a", "b", "a", "c", "c"], [1.0] * 5), r"duplicate items for user 'u3': \['c', 'c'\]"),
    (_cols([1, 1, 1], ["a", "b", "c"], [1.0, float("nan"), 1.0]), r"\('b', nan\) for user 'u2'; expected"),
    (_cols([0, 1, 1], ["b", "c"], [-float("inf"), 1.0]), r"\('b', -inf\) for user 'u2'"),
    (_cols([1, 1, 1], ["a", None, "c"], [1.0] * 3), r"\(None, 1.0\) for user 'u2'"),
    (_cols([0, 2, 1], ["b", "c", None], [1.0, float("nan"), 1.0]), r"\('c', nan\) for user 'u2'"),  # the first bad
    (_cols([1, 1], ["a", "b"], [1.0, 1.0]), r"RecColumns for 2 users for 3 users"),
    (RecColumns(np.array([1, 1, 1]), ["a", "b", "c"], np.ones(3)), r"wrong types"),  # items not an Arrow array
])
def test_bad_array_answers_name_the_user(answer, message):
    with pytest.raises(UserError, match=message):
        RecColumns.from_answer(["u1", "u2", "u3"], answer, 2)
