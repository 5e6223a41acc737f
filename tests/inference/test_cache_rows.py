"""The binary row format of published versions: exact round trip, k cut, widths, float16 range, old stores refused."""

from __future__ import annotations

import json
import math
import sqlite3
import struct

import numpy as np
import pytest

from inference.cache import CacheReader, build_cache, publish_cache
from inference.cache.rows import CATALOGUE_PART, RowFormat, catalogue_ids, decode_catalogue, encode_catalogue
from recdata.errors import UserError

ODD_IDS = ["plain", 'quote"d', "back\\slash", "日本語", "tab\tand\nnewline", "🙂", "</script>", "", "x" * 60]


@pytest.mark.parametrize(("num_items", "width"), [(1, 2), (1 << 16, 2), ((1 << 16) + 1, 3), (1 << 24, 3),
                                                  ((1 << 24) + 1, 4)])
def test_index_width_is_the_narrowest_for_the_catalogue(num_items, width):
    assert RowFormat.choose(num_items).index_bytes == width


@pytest.mark.parametrize("fmt", [RowFormat(2, "float16"), RowFormat(3, "float16"), RowFormat(4, "float16"),
                                 RowFormat(3, "float32")])
def test_row_round_trip_exact_ids_fp16_scores_and_k_cut(fmt):
    rng = np.random.default_rng(0)
    top = {2: 1 << 16, 3: 1 << 24, 4: 1 << 32}[fmt.index_bytes]
    indices = [0, top - 1, *rng.integers(0, top, 18).tolist()]
    scores = sorted((rng.normal(size=20) * 8).tolist(), reverse=True)
    row = fmt.encode(indices, scores)
    assert len(row) == 20 * fmt.stride and fmt.length(row) == 20
    got_indices, got_scores = fmt.decode(row)
    assert list(got_indices) == indices  # ids exact
    tolerance = 2 ** -10 if fmt.score_dtype == "float16" else 2 ** -23  # relative: half an ulp of the mantissa
    assert all(math.isclose(a, b, rel_tol=tolerance, abs_tol=1e-7) for a, b in zip(got_scores, scores, strict=True))
    dtype = np.float16 if fmt.score_dtype == "float16" else np.float32
    assert got_scores == np.asarray(scores, dtype).astype(float).tolist()  # exactly the nearest representable value
    for k in (1, 7, 20, 50):
        cut_indices, codes = fmt.unpack(row, k)
        assert list(cut_indices) == indices[:k] and len(codes) == min(k, 20)


def test_payload_is_at_most_100_bytes_per_user_at_k20():
    assert len(RowFormat.choose(50_000).encode(list(range(20)), [0.5] * 20)) == 80
    assert len(RowFormat.choose(5_000_000).encode(list(range(20)), [0.5] * 20)) == 100


def test_scores_beyond_float16_switch_the_version_to_float32(caplog):
    assert RowFormat.choose(10, "float16", max_abs_score=65_504.0).score_dtype == "float16"
    with caplog.at_level("WARNING"):
        assert RowFormat.choose(10, "float16", max_abs_score=70_000.0).score_dtype == "float32"
    assert "beyond float16's range" in caplog.text
    with pytest.raises(UserError, match="score_dtype must be one of"):
        RowFormat.choose(10, "bfloat16")


def test_catalogue_parts_round_trip_odd_ids():
    ids = ODD_IDS * (CATALOGUE_PART // len(ODD_IDS) + 3)  # more than one part
    parts = encode_catalogue(ids)
    assert len(parts) == 2
    encoded = decode_catalogue(parts)
    assert catalogue_ids(encoded) == ids
    assert encoded[:len(ODD_IDS)] == [json.dumps(i, ensure_ascii=False).encode() for i in ODD_IDS]
    assert catalogue_ids(decode_catalogue(encode_catalogue([]))) == []


def _publish_odd(tmp_path, scores, **kwargs):
    recs = {f"u{n}": [(ODD_IDS[(n + r) % len(ODD_IDS)], s) for r, s in enumerate(scores)] for n in range(5)}
    build_cache(lambda users, hists: [recs[u] for u in users], {u: [] for u in recs}, tmp_path / "c", k=len(scores),
                progress=False)
    return publish_cache(tmp_path / "c", tmp_path / "store", progress=False, **kwargs), recs


def test_published_rows_read_back_through_the_catalogue(tmp_path):
    db, recs = _publish_odd(tmp_path, [3.25, 0.0, -0.0, -1.5, -60_000.0])
    with sqlite3.connect(db) as con:
        meta = json.loads(con.execute("SELECT value FROM meta WHERE key = 'row_format'").fetchone()[0])
        assert meta == {"version": 1, "index_bytes": 2, "score_dtype": "float16", "num_items": len(ODD_IDS)}
        assert {len(row) for (row,) in con.execute("SELECT items FROM recs")} == {5 * 4}
    with CacheReader(tmp_path / "store") as reader:
        for user, want in recs.items():
            assert [(i, struct.pack("<d", s)) for i, s in reader.get(user).items] == [
                (i, struct.pack("<d", s)) for i, s in want]  # -0.0 kept bit for bit


def test_float32_on_request_and_when_scores_overflow_float16(tmp_path):
    db, recs = _publish_odd(tmp_path / "a", [0.1, -0.2], score_dtype="float32")
    with CacheReader(tmp_path / "a" / "store") as reader:
        assert reader.get("u1").items == [(i, float(np.float32(s))) for i, s in recs["u1"]]
    _publish_odd(tmp_path / "b", [100_000.0, 3.0])
    with CacheReader(tmp_path / "b" / "store") as reader:
        assert reader.metadata["row_format"]["score_dtype"] == "float32"
        assert reader.get("u2").items[0][1] == 100_000.0


def test_an_older_json_row_store_is_refused_naming_the_file_and_the_fix(tmp_path, capsys):
    db, _ = _publish_odd(tmp_path, [1.0])
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM meta WHERE key = 'row_format'")
    with pytest.raises(UserError, match=r"older JSON format.*republish it: `alignrec cache publish --cache_dir C "
                                        r"--store_dir"):
        CacheReader(tmp_path / "store")
    from alignrec.cli import main

    assert main(["cache", "get", "u1", "--store_dir", str(tmp_path / "store")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and db.name in err and "republish" in err
