"""Issue 7 item 4: every bad-input case either raises naming file/line/id and the fix, or is a counted drop."""

from __future__ import annotations

import gzip
import json

import pytest

from recdata import leave_one_out_split
from recdata.loaders import LoadOptions, load_dataset
from recdata.prepare import DataConfig, load_and_process, prepare_dataset
from tests.recdata.recdata_sources import EXPECTED, ITEMS, TABULAR_OPTIONS


def _append_line(path, line):
    with open(path, "a", encoding="latin-1" if path.suffix == ".dat" else "utf-8") as f:
        f.write(line + "\n")


def _opts(fmt, **kw):
    return LoadOptions(**(TABULAR_OPTIONS if fmt == "tabular" else {}), **kw)


# (format, file to corrupt, bad line appended, expected message regex: file:line and the problem)
MALFORMED = [
    ("recbole", "tiny.inter", "u9\ti1\t5", r"tiny\.inter:12: 3 tab-separated fields, header has 4"),
    ("recbole", "tiny.item", "i9\tOnly title", r"tiny\.item:7: 2 tab-separated fields"),
    ("movielens", "ratings.dat", "u9::i1::5", r"ratings\.dat:11: expected UserID::MovieID::Rating::Timestamp"),
    ("movielens", "ratings.dat", "u9::i1::5::yesterday", r"ratings\.dat:11: expected"),
    ("movielens", "movies.dat", "i9::No genres", r"movies\.dat:6: expected MovieID::Title::Genres"),
    ("tabular", "interactions.csv", "u9,i1,5,3.0,extra", r"interactions\.csv: malformed line .*line 12"),
    ("tabular", "interactions.csv", "u9,i1,not-a-time,3.0", r"interactions\.csv:12: time 'not-a-time'"),
    ("tabular", "interactions.csv", ",i1,5,3.0", r"interactions\.csv:12: empty 'uid'"),
]


@pytest.mark.parametrize(("fmt", "filename", "line", "message"), MALFORMED)
def test_malformed_line_names_file_and_line(tiny_sources, fmt, filename, line, message):
    _append_line(tiny_sources[fmt] / filename, line)
    with pytest.raises(ValueError, match=message):
        load_dataset(tiny_sources[fmt], fmt, _opts(fmt))


def test_malformed_json_names_line(tiny_sources):
    path = tiny_sources["lcrec_json"] / "Tiny.item.json"
    lines = path.read_text().splitlines()
    n = next(k for k, line in enumerate(lines) if '"Gloves"' in line)
    lines[n] = lines[n].replace('"title":', '"title"')  # missing colon
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=rf"Tiny\.item\.json:{n + 1}: malformed JSON"):
        load_dataset(tiny_sources["lcrec_json"])


@pytest.mark.parametrize("which", ["reviews", "meta"])
def test_amazon_malformed_line(tiny_sources, which):
    folder = tiny_sources["amazon_raw"]
    name = "Tiny_5.json.gz" if which == "reviews" else "meta_Tiny.json.gz"
    with gzip.open(folder / name, "at") as f:
        f.write("{'asin': 'i9', 'title': \n")
    n = 11 if which == "reviews" else 6
    with pytest.raises(ValueError, match=rf"{name}:{n}: neither JSON nor a python literal"):
        load_dataset(folder)


def test_amazon_review_missing_field(tiny_sources):
    folder = tiny_sources["amazon_raw"]
    with gzip.open(folder / "Tiny_5.json.gz", "at") as f:
        f.write(json.dumps({"reviewerID": "u9", "asin": "i1"}) + "\n")
    with pytest.raises(ValueError, match=r"Tiny_5\.json\.gz:11: review lacks .*unixReviewTime"):
        load_dataset(folder)


# ---- sequence item missing from the catalogue ---------------------------------------------------------
def test_unknown_item_error_names_user_item_and_fix(tiny_sources):
    seqs = {**EXPECTED, "u4": ["i1", "ghost", "i2"]}
    (tiny_sources["lcrec_json"] / "Tiny.inter.json").write_text(json.dumps(seqs))
    cfg = DataConfig(path=str(tiny_sources["lcrec_json"]))
    with pytest.raises(ValueError, match=r"user 'u4' interacts with item 'ghost'.*unknown_items=drop"):
        load_and_process(cfg)


def test_unknown_item_drop_is_counted(tiny_sources):
    seqs = {**EXPECTED, "u4": ["i1", "ghost", "i2", "ghost2"]}
    (tiny_sources["lcrec_json"] / "Tiny.inter.json").write_text(json.dumps(seqs))
    ds = load_and_process(DataConfig(path=str(tiny_sources["lcrec_json"]), unknown_items="drop"))
    # u4 keeps 2 interactions -> then dropped as a short user; both steps counted
    assert ds.drops == {"unknown_item_interactions": 2, "short_users": 1, "short_user_interactions": 2,
                        "html_unescaped_fields": 1, "unused_items": 1}
    assert "u4" not in ds.sequences["user_id"]


# ---- empty catalogue ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "filename", "content"), [
    ("lcrec_json", "Tiny.item.json", "{}"),
    ("recbole", "tiny.item", "item_id:token\tmovie_title:token_seq\n"),
    ("movielens", "movies.dat", ""),
    ("tabular", "items.csv", "item_id,name,cats\n"),
])
def test_empty_catalogue(tiny_sources, fmt, filename, content):
    (tiny_sources[fmt] / filename).write_text(content)
    with pytest.raises(ValueError, match=rf"{filename}.*item catalogue is empty"):
        load_dataset(tiny_sources[fmt], fmt, _opts(fmt))


def test_empty_catalogue_amazon_no_reviewed_meta(tiny_sources):
    folder = tiny_sources["amazon_raw"]
    with gzip.open(folder / "meta_Tiny.json.gz", "wt") as f:
        f.write(json.dumps({"asin": "other", "title": "x"}) + "\n")
    with pytest.raises(ValueError, match="item catalogue is empty"):
        load_dataset(folder)


# ---- duplicate ids ------------------------------------------------------------------------------------
def test_duplicate_item_key_in_json(tiny_sources):
    path = tiny_sources["lcrec_json"] / "Tiny.item.json"
    text = path.read_text().rstrip().rstrip("}") + ',\n "i2": {"title": "again"}\n}'
    path.write_text(text)
    n = text.count("\n", 0, text.index('"i2": {"title": "again"}')) + 1
    with pytest.raises(ValueError, match=rf"Tiny\.item\.json:{n}: duplicate item id 'i2'"):
        load_dataset(tiny_sources["lcrec_json"])


def test_duplicate_user_key_in_json(tiny_sources):
    path = tiny_sources["lcrec_json"] / "Tiny.inter.json"
    path.write_text('{"u1": ["i1", "i2", "i3"],\n"u2": ["i1", "i2", "i3"],\n"u1": ["i4", "i2", "i3"]}')
    with pytest.raises(ValueError, match=r"Tiny\.inter\.json:3: duplicate user id 'u1'"):
        load_dataset(tiny_sources["lcrec_json"])


@pytest.mark.parametrize(("fmt", "filename", "line", "message"), [
    ("recbole", "tiny.item", "i2\tAgain\t2000\tDrama", r"tiny\.item:7 \(first seen at line 3\): duplicate item id 'i2'"),
    ("movielens", "movies.dat", "i2::Again (2000)::Drama", r"movies\.dat:6 \(first seen at line 2\)"),
    ("tabular", "items.csv", "i2,Again,Drama", r"items\.csv:7 \(first seen at line 3\)"),
])
def test_duplicate_item_record_error_or_keep_first(tiny_sources, fmt, filename, line, message):
    _append_line(tiny_sources[fmt] / filename, line)
    with pytest.raises(ValueError, match=message + ".*duplicate_items=keep_first"):
        load_dataset(tiny_sources[fmt], fmt, _opts(fmt))
    ds = load_dataset(tiny_sources[fmt], fmt, _opts(fmt, duplicate_items="keep_first"))
    assert ds.drops == {"duplicate_item_records": 1}
    assert ds.item_table()["i2"]["title"] != "Again"  # the first record is kept
    assert ds.item_ids().count("i2") == 1


def test_amazon_duplicate_meta_record(tiny_sources):
    folder = tiny_sources["amazon_raw"]
    with gzip.open(folder / "meta_Tiny.json.gz", "at") as f:
        f.write(json.dumps({"asin": "i3", "title": "Repeat"}) + "\n")
    with pytest.raises(ValueError, match=r"meta_Tiny\.json\.gz:6 \(first seen at line 3\): duplicate item id 'i3'"):
        load_dataset(folder)
    ds = load_dataset(folder, options=LoadOptions(duplicate_items="keep_first"))
    assert ds.drops == {"duplicate_item_records": 1, "unused_items": 1}
    assert ds.item_table()["i3"]["title"] == ITEMS["i3"]["title"]


# ---- users left with < 3 interactions -----------------------------------------------------------------
def test_short_users_dropped_and_counted(tiny_sources):
    seqs = {**EXPECTED, "u4": ["i1", "i2"], "u5": ["i4"]}
    (tiny_sources["lcrec_json"] / "Tiny.inter.json").write_text(json.dumps(seqs))
    split = prepare_dataset(DataConfig(path=str(tiny_sources["lcrec_json"])))
    assert split.dataset.drops["short_users"] == 2
    assert split.dataset.drops["short_user_interactions"] == 3
    assert sorted(split.dataset.sequences["user_id"]) == ["u1", "u2", "u3"]


def test_split_rejects_short_user_without_filtering(tiny_sources):
    seqs = {**EXPECTED, "u4": ["i1", "i2"]}
    (tiny_sources["lcrec_json"] / "Tiny.inter.json").write_text(json.dumps(seqs))
    ds = load_dataset(tiny_sources["lcrec_json"])
    with pytest.raises(ValueError, match=r"user 'u4' has 2 interaction\(s\).*min_user_interactions"):
        leave_one_out_split(ds)


def test_everything_filtered_out_is_an_error(tiny_sources):
    with pytest.raises(ValueError, match="no user is left after filtering"):
        load_and_process(DataConfig(path=str(tiny_sources["lcrec_json"]), min_user_interactions=10))


# ---- config and misc ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"format": "xml"}, "format='xml' is not one of"),
    ({"split": "random"}, "split='random'"),
    ({"kcore": -1}, "kcore=-1"),
    ({"unknown_items": "ignore"}, "unknown_items='ignore'"),
    ({"duplicate_items": "last"}, "duplicate_items='last'"),
    ({"temporal_ratios": [0.5, 0.5, 0.5]}, "temporal_ratios"),
    ({"min_user_interactions": 0}, "min_user_interactions=0"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(path="x", **kwargs)


def test_min_rating_without_ratings(tiny_sources):
    with pytest.raises(ValueError, match="no ratings; unset min_rating"):
        load_and_process(DataConfig(path=str(tiny_sources["lcrec_json"]), min_rating=4))


def test_temporal_split_without_timestamps(tiny_sources):
    with pytest.raises(ValueError, match="needs per-interaction timestamps"):
        prepare_dataset(DataConfig(path=str(tiny_sources["lcrec_json"]), split="temporal"))


def test_tabular_missing_column_lists_columns(tiny_sources):
    with pytest.raises(ValueError, match=r"column\(s\) \['timestamp'\] not found .*'uid', 'iid', 'ts', 'stars'"):
        load_dataset(tiny_sources["tabular"], options=LoadOptions(user_column="uid", item_column="iid"))


def test_tabular_empty_scenario_label_names_the_line(tiny_sources):
    folder = tiny_sources["tabular"]
    import pandas as pd

    df = pd.read_csv(folder / "interactions.csv")
    df["dom"] = ["a"] * (len(df) - 1) + [" "]
    df.to_csv(folder / "interactions.csv", index=False)
    with pytest.raises(ValueError, match="empty scenario"):
        load_dataset(folder, options=LoadOptions(**TABULAR_OPTIONS, scenario_column="dom"))


def test_missing_path():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("/nonexistent/dataset")
