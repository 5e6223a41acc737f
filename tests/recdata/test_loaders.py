"""Every loader reads the same tiny data to the same sequences, maps text fields, and round-trips exactly."""

from __future__ import annotations

import pytest

from recdata import RecDataset
from recdata.loaders import LoadOptions, detect_format, load_dataset
from tests.recdata.recdata_sources import (
    EXPECTED,
    EXPECTED_TS,
    LOG,
    TABULAR_OPTIONS,
    write_amazon,
    write_tabular,
)

FORMATS = ["lcrec_json", "recbole", "movielens", "amazon_raw", "tabular"]


def _load(fmt, folder, **kw):
    opts = LoadOptions(**(TABULAR_OPTIONS if fmt == "tabular" else {}), **kw)
    return load_dataset(folder, "auto", opts)


@pytest.mark.parametrize("fmt", FORMATS)
def test_detect_and_load_same_sequences(tiny_sources, fmt):
    folder = tiny_sources[fmt]
    assert detect_format(folder) == fmt
    ds = _load(fmt, folder)
    assert dict(zip(ds.sequences["user_id"], ds.sequences["item_ids"], strict=True)) == EXPECTED
    catalogue = ["i1", "i2", "i3", "i4"] if fmt == "amazon_raw" else ["i1", "i2", "i3", "i4", "i5"]
    assert sorted(ds.item_ids()) == catalogue
    if fmt != "lcrec_json":  # the JSON layout has no timestamps
        assert dict(zip(ds.sequences["user_id"], ds.sequences["timestamps"], strict=True)) == EXPECTED_TS
        ratings = {(u, i): r for u, i, _, r in LOG}
        for user, items, rs in zip(ds.sequences["user_id"], ds.sequences["item_ids"], ds.sequences["ratings"],
                                   strict=True):
            assert rs == [ratings[(user, i)] for i in items]
    assert ds.drops == ({"unused_items": 1} if fmt == "amazon_raw" else {})
    ds.validate()


@pytest.mark.parametrize("fmt", FORMATS)
def test_save_load_round_trip_exact(tiny_sources, tmp_path, fmt):
    ds = _load(fmt, tiny_sources[fmt])
    ds.save(tmp_path / "saved")
    back = RecDataset.load(tmp_path / "saved")
    assert back.fingerprint() == ds.fingerprint()
    assert back.items.to_list() == ds.items.to_list()
    assert back.sequences.to_list() == ds.sequences.to_list()
    assert back.name == ds.name and back.drops == ds.drops
    assert load_dataset(tmp_path / "saved").fingerprint() == ds.fingerprint()  # auto-detects "saved"


def test_text_field_mapping_per_format(tiny_sources):
    table = {f: _load(f, tiny_sources[f]).item_table() for f in FORMATS}
    assert table["lcrec_json"]["i1"] == {"item_id": "i1", "title": "Pipette &amp; tips", "description": "Sterile",
                                         "brand": "LabCo", "categories": "Lab"}  # loaders never unescape
    assert table["recbole"]["i1"]["title"] == "Pipette &amp; tips (1990)"
    assert table["recbole"]["i1"]["categories"] == "Lab, Drama"
    assert table["movielens"]["i2"] == {"item_id": "i2", "title": "Amélie (2001)", "description": "", "brand": "",
                                        "categories": "Comedy, Romance"}
    assert table["amazon_raw"]["i1"] == {"item_id": "i1", "title": "Pipette &amp; tips", "description": "Sterile more",
                                         "brand": "LabCo", "categories": "Industrial > Lab"}
    assert "i5" not in table["amazon_raw"]  # never reviewed: counted in drops["unused_items"]
    assert table["tabular"]["i4"] == {"item_id": "i4", "title": "Scale", "description": "", "brand": "",
                                      "categories": "Lab"}


def test_recbole_item_text_fields_override(tiny_sources):
    ds = load_dataset(tiny_sources["recbole"], "recbole", LoadOptions(item_text_fields="categories=,brand=class"))
    row = ds.item_table()["i2"]
    assert row["categories"] == "" and row["brand"] == "Safety Drama"


def test_amazon_plain_json_meta_uncompressed(tmp_path):
    folder = write_amazon(tmp_path / "a", gz=False, python_literal_meta=False)
    ds = load_dataset(folder)
    assert dict(zip(ds.sequences["user_id"], ds.sequences["item_ids"], strict=True)) == EXPECTED


def test_tabular_parquet_dates_and_domain(tmp_path):
    import pandas as pd

    folder = write_tabular(tmp_path / "p", ext="parquet")
    df = pd.read_parquet(folder / "interactions.parquet")
    df["ts"] = pd.to_datetime(df["ts"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
    df["dom"] = df["uid"].map({"u1": "books", "u2": "books", "u3": "toys"})
    df.to_parquet(folder / "interactions.parquet")
    ds = load_dataset(folder, options=LoadOptions(**TABULAR_OPTIONS, domain_column="dom"))
    assert dict(zip(ds.sequences["user_id"], ds.sequences["timestamps"], strict=True)) == EXPECTED_TS
    by_user = dict(zip(ds.sequences["user_id"], ds.sequences["scenarios"], strict=True))  # domain_column = old name
    assert by_user == {"u1": ["books"] * 3, "u2": ["books"] * 4, "u3": ["toys"] * 3}


def test_tabular_file_path_needs_item_path(tiny_sources):
    folder = tiny_sources["tabular"]
    with pytest.raises(ValueError, match="item_path"):
        load_dataset(folder / "interactions.csv", options=LoadOptions(**TABULAR_OPTIONS))
    ds = load_dataset(folder / "interactions.csv",
                      options=LoadOptions(**TABULAR_OPTIONS, item_path=str(folder / "items.csv")))
    assert len(ds.sequences) == 3


def test_unknown_layout_lists_found_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"(?s)matches no known layout.*notes\.txt.*accepted layouts"):
        detect_format(tmp_path)


def test_ambiguous_layout_asks_for_format(tiny_sources, tmp_path):
    folder = tiny_sources["lcrec_json"]
    (folder / "ratings.dat").write_text("")
    (folder / "movies.dat").write_text("")
    with pytest.raises(ValueError, match=r"several layouts \['lcrec_json', 'movielens'\]"):
        detect_format(folder)
    assert len(load_dataset(folder, "lcrec_json").sequences) == 3


def test_several_datasets_in_folder_need_name(tiny_sources):
    from tests.recdata.recdata_sources import write_lcrec

    folder = write_lcrec(tiny_sources["lcrec_json"], name="Other")
    with pytest.raises(FileNotFoundError, match="set name=<Name>"):
        load_dataset(folder)
    assert load_dataset(folder, options=LoadOptions(name="Other")).name == "Other"
