"""Cleaning steps: exact results on tiny inputs, k-core against a brute-force reference, counted drops."""

from __future__ import annotations

import random

import pytest

from recdata import RecDataset
from recdata import processing as P
from recdata.prepare import DataConfig, load_and_process
from tests.recdata.recdata_sources import write_recbole


def _ds(seqs: dict[str, list[str]], items=None, **extra) -> RecDataset:
    items = items or sorted({i for s in seqs.values() for i in s})
    rows = [{"user_id": u, "item_ids": s, **{k: v[u] for k, v in extra.items()}} for u, s in seqs.items()]
    return RecDataset.from_records([{"item_id": i, "title": f"T {i}"} for i in items], rows, name="t")


def _seqs(ds: RecDataset) -> dict[str, list[str]]:
    return dict(zip(ds.sequences["user_id"], ds.sequences["item_ids"], strict=True))


def test_dedup_keeps_first_and_aligned_columns():
    ds = _ds({"u1": ["a", "b", "a", "c", "b"], "u2": ["a", "c", "d"]},
             timestamps={"u1": [1, 2, 3, 4, 5], "u2": [1, 2, 3]},
             ratings={"u1": [1.0, 2.0, 3.0, 4.0, 5.0], "u2": [1.0, 1.0, 1.0]})
    out = P.dedup_interactions(ds)
    row = out.sequences[0]
    assert (row["item_ids"], row["timestamps"], row["ratings"]) == (["a", "b", "c"], [1, 2, 4], [1.0, 2.0, 4.0])
    assert _seqs(out)["u2"] == ["a", "c", "d"]
    assert out.drops == {"duplicate_interactions": 2}
    assert P.dedup_interactions(out) is out  # nothing left to remove, nothing counted


def test_kcore_cascade_exact():
    seqs = {"u1": ["a", "b"], "u2": ["a", "b"], "u3": ["c", "a"], "u4": ["b", "e", "f"], "u5": ["g", "a"],
            "u6": ["g"]}
    out = P.kcore_filter(_ds(seqs, items=list("abcdefg")), 2)
    assert _seqs(out) == {"u1": ["a", "b"], "u2": ["a", "b"]}
    # u6 (1 item) goes first, then g has 1 user, then u5 is left with 1 item; c, e, f never reach 2
    assert out.drops == {"kcore_interactions": 8, "kcore_users": 4, "kcore_items": 4}
    assert out.item_ids() == ["a", "b", "d"]  # d never had interactions: left for prune_unused_items
    assert P.prune_unused_items(out).item_ids() == ["a", "b"]
    assert P.prune_unused_items(out).drops["unused_items"] == 1


def _kcore_reference(seqs: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    seqs = {u: list(s) for u, s in seqs.items()}
    while True:
        counts: dict[str, int] = {}
        for s in seqs.values():
            for i in s:
                counts[i] = counts.get(i, 0) + 1
        new = {u: [i for i in s if counts[i] >= k] for u, s in seqs.items() if len(s) >= k}
        new = {u: s for u, s in new.items() if s}
        if new == seqs:
            return seqs
        seqs = new


@pytest.mark.parametrize("seed", range(5))
def test_kcore_matches_reference(seed):
    rng = random.Random(seed)
    seqs = {f"u{u}": [f"i{rng.randrange(30)}" for _ in range(rng.randrange(1, 12))] for u in range(60)}
    seqs = {u: list(dict.fromkeys(s)) for u, s in seqs.items()}
    out = P.kcore_filter(_ds(seqs), 3)
    expected = _kcore_reference(seqs, 3)
    assert _seqs(out) == expected
    for s in expected.values():
        assert len(s) >= 3
    assert out.num_interactions() + out.drops.get("kcore_interactions", 0) == sum(map(len, seqs.values()))


def test_html_unescape_counts_changed_fields_one_pass():
    ds = RecDataset.from_records(
        [{"item_id": "a", "title": "Tom &amp; Jerry", "brand": "A&amp;B", "description": "5 &gt; 3"},
         {"item_id": "b", "title": "&amp;amp; stays once-escaped", "categories": "Lab & Co"}],
        [{"user_id": "u", "item_ids": ["a", "b", "a"]}])
    out = P.html_unescape_items(ds)
    table = out.item_table()
    assert (table["a"]["title"], table["a"]["brand"], table["a"]["description"]) == ("Tom & Jerry", "A&B", "5 > 3")
    assert table["b"]["title"] == "&amp; stays once-escaped" and table["b"]["categories"] == "Lab & Co"
    assert out.drops == {"html_unescaped_fields": 4}


def test_min_rating_and_short_users():
    ds = _ds({"u1": ["a", "b", "c", "d"], "u2": ["a", "b", "c"]},
             ratings={"u1": [5.0, 4.0, 2.0, 4.5], "u2": [1.0, 5.0, 5.0]})
    out = P.filter_min_rating(ds, 4.0)
    assert _seqs(out) == {"u1": ["a", "b", "d"], "u2": ["b", "c"]}
    assert out.sequences[0]["ratings"] == [5.0, 4.0, 4.5]
    out = P.drop_short_users(out, 3)
    assert _seqs(out) == {"u1": ["a", "b", "d"]}
    assert out.drops == {"low_rating_interactions": 2, "short_users": 1, "short_user_interactions": 2}


def test_processed_dataset_saves_materialised_rows(tmp_path):
    out = P.prune_unused_items(P.drop_short_users(_ds({"u1": ["a", "b", "c"], "u2": ["d"]}), 3))
    out.save(tmp_path / "d")
    back = RecDataset.load(tmp_path / "d")
    assert _seqs(back) == {"u1": ["a", "b", "c"]} and back.item_ids() == ["a", "b", "c"]


def test_load_and_process_pipeline_counts_every_change(tmp_path):
    folder = write_recbole(tmp_path / "rb")
    with open(folder / "tiny.inter", "a") as f:
        f.write("u1\ti1\t5\t50\n")  # a repeat of (u1, i1), later in time
    ds = load_and_process(DataConfig(path=str(folder), kcore=0))
    assert ds.drops == {"duplicate_interactions": 1, "html_unescaped_fields": 1, "unused_items": 1}
    assert _seqs(ds)["u1"] == ["i1", "i3", "i2"]
    assert ds.item_table()["i1"]["title"] == "Pipette & tips (1990)"
    raw = load_and_process(DataConfig(path=str(folder), dedup=False, html_unescape=False, keep_unused_items=True))
    assert raw.drops == {} and _seqs(raw)["u1"] == ["i1", "i3", "i2", "i1"] and len(raw.items) == 5
