"""The column-wise publish writes what the per-user one did: every row's bytes, the catalogue and both fallbacks.

The reference here encodes each user alone (``RowFormat.encode``) from what the recommender returned and counts
items with a ``Counter``, the way publish did before it worked a chunk at a time.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inference.cache import build_cache, publish_cache
from inference.cache.layout import USERS_META_KEY
from inference.cache.publish_rows import RowEncoder, encoded_chunks
from inference.cache.rows import RowFormat, encode_catalogue
from inference.cache.scenarios import scenario_key
from inference.cache.shards import CHUNK_SCHEMA, read_chunk, read_chunk_columns, scan_cache
from recdata.errors import UserError

ODD_IDS = ["plain", 'quote"d', "back\\slash", "日本語", "tab\tand\nnewline", "🙂", "</script>", "", "x" * 60]
K = 6


@dataclass(frozen=True)
class Case:
    """One random cache: ``scale`` sets the score magnitude (> 65,504 forces float32)."""

    seed: int
    score_dtype: str = "float16"
    scenarios: tuple[str, ...] = ()
    popularity: bool = False
    scale: float = 4.0
    extra: dict = field(default_factory=dict)


CASES = {
    "float16": Case(0),
    "float32": Case(1, score_dtype="float32"),
    "per_scenario": Case(2, scenarios=("food", "kitchen", "日本")),
    "per_scenario_float32_popularity": Case(3, score_dtype="float32", scenarios=("a", "b"), popularity=True),
    "beyond_float16": Case(4, scale=90_000.0),
}


def random_recs(case: Case, num_users: int = 60) -> dict[str, list[tuple[str, float]]]:
    """``{key: recs}``: 0..K items (some rows empty), unicode ids, tied scores, best first."""
    rng = np.random.default_rng(case.seed)
    items = ODD_IDS + [f"item-{n}-é" for n in range(40)]
    users = [f"u{n}" if n % 5 else f"ü-{n} 🙂" for n in range(num_users)]
    keys = [scenario_key(u, s) for u in users for s in case.scenarios] if case.scenarios else users
    out = {}
    for key in keys:
        n = int(rng.integers(0, K + 1))
        chosen = rng.choice(len(items), size=n, replace=False)
        scores = np.sort(np.round(rng.normal(size=n) * case.scale, 1))[::-1]  # rounding makes ties
        if n > 2:
            scores[1] = scores[2]
        out[key] = [(items[i], float(s)) for i, s in zip(chosen, scores, strict=True)]
    return out


def build(tmp_path, case: Case, recs: dict[str, list[tuple[str, float]]]):
    """A finished build holding ``recs`` (7 keys per chunk, so rows of many chunks meet in one publish)."""
    if not case.scenarios:
        fn = lambda users, hists: [recs[u] for u in users]  # noqa: E731
        build_cache(fn, {u: ["h"] for u in recs}, tmp_path / "cache", k=K, progress=False, chunk_size=7)
        return tmp_path / "cache"
    served: dict[str, list[str]] = {}
    for key in recs:
        user, _, scenario = key.rpartition("\x1f")
        served.setdefault(user, []).append(scenario)

    def fn(users, hists, scenarios):
        return [recs[scenario_key(u, s)] for u, s in zip(users, scenarios, strict=True)]

    build_cache(fn, {u: ["h"] for u in served}, tmp_path / "cache", k=K, progress=False, chunk_size=7,
                scenario_users=served)
    return tmp_path / "cache"


def popularity_of(case: Case) -> tuple[dict | None, dict | None]:
    """(popularity, scenario_popularity) passed to publish, None when the fallback counts the cache."""
    if not case.popularity:
        return None, None
    return {"plain": 3, "🙂": 3, "zzz": 1}, {s: {f"{s}-top": 2, "plain": 2} for s in case.scenarios}


def reference(case: Case, recs: dict[str, list[tuple[str, float]]]) -> dict:
    """What the per-user publish wrote: rows, catalogue parts and fallbacks."""
    catalogue = sorted({item for r in recs.values() for item, _ in r})
    largest = max((abs(s) for r in recs.values() for _, s in r), default=0.0)
    fmt = RowFormat.choose(len(catalogue), case.score_dtype, largest)
    position = {item: i for i, item in enumerate(catalogue)}
    rows = {key: fmt.encode([position[i] for i, _ in r], [s for _, s in r]) for key, r in recs.items()}

    def top(counts) -> list[tuple[str, float]]:
        return [(i, float(c)) for i, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:K]]

    popularity, scenario_popularity = popularity_of(case)
    counts = Counter(item for r in recs.values() for item, _ in r)
    per_scenario: dict[str, Counter] = {}
    for key, r in recs.items():
        if case.scenarios:
            per_scenario.setdefault(key.rpartition("\x1f")[2], Counter()).update(item for item, _ in r)
    scenario_tables = scenario_popularity or per_scenario
    return {"format": fmt, "rows": rows, "catalogue": encode_catalogue(catalogue),
            "fallback": top(popularity if popularity is not None else counts),
            "scenario_fallback": {s: top(scenario_tables.get(s, {})) for s in case.scenarios}}


@pytest.mark.parametrize("name", list(CASES))
def test_sqlite_store_equals_the_per_user_publish(tmp_path, name):
    case = CASES[name]
    recs = random_recs(case)
    want = reference(case, recs)
    popularity, scenario_popularity = popularity_of(case)
    db = publish_cache(build(tmp_path, case, recs), tmp_path / "store", popularity=popularity, progress=False,
                       scenario_popularity=scenario_popularity, score_dtype=case.score_dtype)
    with sqlite3.connect(db) as con:
        assert dict(con.execute("SELECT user_id, items FROM recs")) == want["rows"]
        assert [part for (part,) in con.execute("SELECT items FROM catalogue ORDER BY part")] == want["catalogue"]
        assert con.execute("SELECT item_id, score FROM fallback ORDER BY rank").fetchall() == want["fallback"]
        meta = dict(con.execute("SELECT key, value FROM meta"))
        assert json.loads(meta["row_format"])["score_dtype"] == want["format"].score_dtype
        if case.scenarios:
            got: dict[str, list] = {s: [] for s in case.scenarios}
            for scenario, item, score in con.execute("SELECT scenario, item_id, score FROM scenario_fallback "
                                                     "ORDER BY scenario, rank"):
                got[scenario].append((item, score))
            assert got == want["scenario_fallback"]
    assert any(not r for r in recs.values()) and any(len(r) == K for r in recs.values())  # the case is not trivial


@pytest.mark.parametrize("name", ["float16", "per_scenario"])
def test_item_counts_equal_a_counter_over_every_row(tmp_path, name):
    case = CASES[name]
    recs = random_recs(case)
    cache = build(tmp_path, case, recs)
    catalogue, largest = scan_cache(cache)
    encoder = RowEncoder(catalogue, RowFormat.choose(len(catalogue), "float16", largest), count_items=True,
                         count_scenarios=bool(case.scenarios))
    written = {user: row for users, rows in encoded_chunks(cache, encoder, len(recs), progress=False)
               for user, row in zip(users, rows, strict=True)}
    assert written == reference(case, recs)["rows"]
    assert encoder.item_counts() == Counter(item for r in recs.values() for item, _ in r)
    per_scenario: dict[str, Counter] = {}
    for key, r in recs.items():
        if case.scenarios:
            per_scenario.setdefault(key.rpartition("\x1f")[2], Counter()).update(item for item, _ in r)
    assert encoder.scenario_counts() == {s: dict(c) for s, c in per_scenario.items()}


FORMATS = [RowFormat(w, d) for w in (2, 3, 4) for d in ("float16", "float32")]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_encode_rows_gives_the_bytes_of_encode_for_every_row(fmt):
    rng = np.random.default_rng(fmt.index_bytes)
    lengths = rng.integers(0, 9, 200)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    top = 1 << min(8 * fmt.index_bytes, 32)
    indices = rng.integers(0, top, offsets[-1])
    indices[:2] = [0, top - 1]
    scores = np.clip(rng.normal(size=offsets[-1]) * rng.choice([1e-7, 1e-3, 1.0, 3e4], offsets[-1]), -6e4, 6e4)
    scores[:8] = [-np.inf, np.inf, np.nan, -np.nan, -0.0, 0.0, 65_504.0, 2049.0]  # 2049: a float16 round-half-even
    rows = fmt.encode_rows(indices, scores, offsets)
    assert rows == [fmt.encode(indices[a:b].tolist(), scores[a:b].tolist()) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    assert fmt.encode_rows(np.empty(0, np.int64), np.empty(0), np.zeros(1, np.int64)) == []
    assert fmt.encode_rows(np.empty(0, np.int64), np.empty(0), np.zeros(3, np.int64)) == [b"", b""]


def test_encode_rows_refuses_what_encode_refuses():
    with pytest.raises(OverflowError):
        RowFormat(2, "float16").encode([0], [70_000.0])
    with pytest.raises(OverflowError, match="too large for float16"):
        RowFormat(2, "float16").encode_rows(np.array([0]), np.array([70_000.0]), np.array([0, 1]))
    with pytest.raises(OverflowError, match="too large for float32"):
        RowFormat(2, "float32").encode_rows(np.array([0]), np.array([1e39]), np.array([0, 1]))
    with pytest.raises(ValueError, match="do not fit 2 bytes"):
        RowFormat(2, "float16").encode_rows(np.array([1 << 16]), np.array([1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="do not fill rows"):
        RowFormat(2, "float16").encode_rows(np.array([1, 2]), np.array([1.0, 2.0]), np.array([0, 1]))


def write_raw_chunk(path, users: list[str], rows: list[tuple[str, int, str, float]]) -> None:
    meta = {USERS_META_KEY: json.dumps({u: f"h-{u}" for u in users}).encode()}
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[], [], [], []]
    pq.write_table(pa.table(columns, schema=CHUNK_SCHEMA.with_metadata(meta)), path)


def test_a_chunk_with_interleaved_users_reads_like_row_by_row(tmp_path):
    rows = [("b", 1, "x", 0.5), ("a", 1, "y", 2.0), ("b", 2, "y", 0.25), ("a", 2, "x", 1.0), ("a", 3, "z", 0.0)]
    write_raw_chunk(tmp_path / "c.parquet", ["a", "b", "c"], rows)
    assert list(read_chunk(tmp_path / "c.parquet")) == [
        ("a", "h-a", [("y", 2.0), ("x", 1.0), ("z", 0.0)]), ("b", "h-b", [("x", 0.5), ("y", 0.25)]), ("c", "h-c", [])]
    columns = read_chunk_columns(tmp_path / "c.parquet")
    assert columns.offsets.tolist() == [0, 3, 5, 5] and columns.num_rows == 5


@pytest.mark.parametrize(("rows", "message"), [
    ([("a", 1, "x", 1.0), ("a", 3, "y", 0.0), ("b", 5, "y", 0.0)], "user 'a' row rank 3 out of order"),
    ([("a", 1, "x", 1.0), ("b", 2, "y", 0.0), ("a", 3, "y", 0.0)], "user 'b' row rank 2 out of order"),
    ([("a", 1, "x", 1.0), ("zz", 1, "y", 0.0), ("a", 1, "y", 0.0)], "user 'zz' row rank 1 out of order"),
    ([("a", 2, "x", 1.0)], "user 'a' row rank 2 out of order"),
    ([("a", 1, None, 1.0)], "a row has no item_id or no score"),
])
def test_a_corrupt_chunk_names_the_first_bad_row(tmp_path, rows, message):
    write_raw_chunk(tmp_path / "c.parquet", ["a", "b"], rows)
    with pytest.raises(UserError, match=f"c.parquet is corrupt: {message}"):
        list(read_chunk(tmp_path / "c.parquet"))

