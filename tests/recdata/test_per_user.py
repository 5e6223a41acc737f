"""recdata.per_user: the Parquet per-user file round-trips exactly; an older run's per_user.json is still read."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from recdata.evaluation import write_report
from recdata.per_user import (
    LEGACY_PER_USER_FILE,
    PER_USER_FILE,
    load_per_user,
    per_user_path,
    write_per_user,
)


def _bits(values: list) -> list:
    """Floats as their 64 bits (NaN == NaN, -0.0 != 0.0), other values as they are."""
    return [struct.pack("<d", v) if isinstance(v, float) else v for v in values]


def _tables(num_users: int, seed: int = 0) -> dict[str, dict[str, list]]:
    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in rng.permutation(num_users)]

    def metrics():
        values = {f"{m}@{k}": rng.random(num_users).tolist() for m in ("recall", "ndcg") for k in (1, 5, 10, 20)}
        values["ndcg@20"][:4] = [float("nan"), -0.0, 5e-324, 1.0 / 3.0]  # NaN, negative zero, a subnormal
        return values
    return {"alignrec": {"user_id": users, **metrics()}, "sasrec": {"user_id": users, **metrics()},
            "popularity/within_scenario": {"user_id": users, **metrics()}}


def _assert_exact(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, table in want.items():
        assert list(got[name]) == list(table), name  # columns in their order
        for column, values in table.items():
            assert _bits(got[name][column]) == _bits(values), (name, column)


def test_round_trip_is_bit_exact(tmp_path):
    tables = _tables(500)
    write_per_user(tmp_path / PER_USER_FILE, tables)
    _assert_exact(load_per_user(tmp_path), tables)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    import pyarrow.parquet as pq

    names = pq.read_schema(tmp_path / PER_USER_FILE).names
    assert names.count("user_id") == 1 and "sasrec/ndcg@10" in names  # the shared users stored once
    _assert_exact(load_per_user(tmp_path, ["sasrec"]), {"sasrec": tables["sasrec"]})
    with pytest.raises(KeyError, match="no per-user table"):
        load_per_user(tmp_path, ["bm25"])


def test_tables_with_other_users_none_and_colliding_names(tmp_path):
    tables = {
        "a": {"user_id": ["u1", "u2", "u3"], "recall@5": [1.0, None, 0.0], "n": [1, 2, 3]},
        "b": {"user_id": ["u3", "u1"], "recall@5": [0.5, float("nan")]},  # other users, fewer of them
        "a/recall@5": {"user_id": ["u1", "u2", "u3"], "x": [None, None, None]},  # spells "a/recall@5" too
        "empty": {"user_id": [], "recall@5": []},
    }
    write_per_user(tmp_path / PER_USER_FILE, tables)
    _assert_exact(load_per_user(tmp_path), tables)
    with pytest.raises(ValueError, match="different lengths"):
        write_per_user(tmp_path / PER_USER_FILE, {"a": {"user_id": ["u1"], "recall@5": [1.0, 0.0]}})


def test_an_older_runs_json_is_still_read(tmp_path):
    tables = _tables(50)
    (tmp_path / LEGACY_PER_USER_FILE).write_text(json.dumps(tables))  # what write_report wrote before
    assert per_user_path(tmp_path) == tmp_path / LEGACY_PER_USER_FILE
    got = load_per_user(tmp_path)
    assert got["sasrec"]["user_id"] == tables["sasrec"]["user_id"]
    assert got["sasrec"]["recall@5"] == tables["sasrec"]["recall@5"]
    assert math.isnan(got["alignrec"]["ndcg@20"][0])
    assert list(load_per_user(tmp_path, ["sasrec"])) == ["sasrec"]
    with pytest.raises(FileNotFoundError, match="re-run"):
        load_per_user(tmp_path / "nothing")


def test_write_report_writes_parquet_and_keeps_an_older_json_unread(tmp_path, monkeypatch):
    monkeypatch.setattr("recdata.evaluation.render_markdown", lambda reports, title: "")  # per-user tables only
    tables = _tables(20)
    (tmp_path / LEGACY_PER_USER_FILE).write_text(json.dumps({"old": {"user_id": []}}))  # an earlier version's
    reports = {"alignrec": {"per_user": tables["alignrec"]},
               "sasrec": {"per_user": tables["sasrec"],
                          "within_scenario": {"per_user": tables["popularity/within_scenario"]}}}
    write_report(reports, tmp_path)
    assert per_user_path(tmp_path) == tmp_path / PER_USER_FILE  # the Parquet file wins
    assert (tmp_path / LEGACY_PER_USER_FILE).exists()  # a file this write did not make is never deleted
    _assert_exact(load_per_user(tmp_path), {"alignrec": tables["alignrec"], "sasrec": tables["sasrec"],
                                            "sasrec/within_scenario": tables["popularity/within_scenario"]})
