"""Per-interaction scenario labels: every loader that can carry them, processing, splits, save/load, stats."""

from __future__ import annotations

import json

import pytest

from recdata import DataConfig, RecDataset, SplitDataset, leave_one_out_split, prepare_dataset
from recdata.cli import format_stats
from recdata.loaders import LoadOptions, load_dataset
from recdata.processing import dedup_interactions, kcore_filter
from tests.recdata.recdata_sources import EXPECTED, LOG, TABULAR_OPTIONS

# item-field scenarios (every interaction with the item takes it)
ITEM_DOMAIN = {"i1": "lab", "i2": "safety", "i3": "safety", "i4": "lab", "i5": "lab"}
EXPECTED_ITEM_SCEN = {u: [ITEM_DOMAIN[i] for i in items] for u, items in EXPECTED.items()}
# per-interaction scenarios: "web" before t=20, "app" from t=20 (u2's tie at t=20 keeps file order)
EXPECTED_INTER_SCEN = {"u1": ["web", "app", "app"], "u2": ["web", "app", "app", "app"], "u3": ["web"] * 3}


def _scen(t: int) -> str:
    return "web" if t < 20 else "app"


def _add_item_field(fmt: str, folder):
    """Give every item of the written source a scenario field (``domain``, or ``main_cat`` for Amazon)."""
    if fmt == "lcrec_json":
        path = folder / "Tiny.item.json"
        items = json.loads(path.read_text())
        path.write_text(json.dumps({i: {**v, "domain": ITEM_DOMAIN[i]} for i, v in items.items()}))
        return "domain"
    if fmt == "recbole":
        path = folder / "tiny.item"
        lines = path.read_text().splitlines()
        out = [lines[0] + "\tdomain:token"] + [f"{ln}\t{ITEM_DOMAIN[ln.split(chr(9))[0]]}" for ln in lines[1:]]
        path.write_text("\n".join(out) + "\n")
        return "domain"
    if fmt == "amazon_raw":
        import ast
        import gzip

        path = folder / "meta_Tiny.json.gz"
        with gzip.open(path, "rt") as f:
            recs = [ast.literal_eval(line) for line in f if line.strip()]
        with gzip.open(path, "wt") as f:
            f.write("".join(json.dumps({**r, "main_cat": ITEM_DOMAIN[r["asin"]]}) + "\n" for r in recs))
        return "main_cat"
    import pandas as pd

    df = pd.read_csv(folder / "items.csv")
    df["domain"] = df["item_id"].map(ITEM_DOMAIN)
    df.to_csv(folder / "items.csv", index=False)
    return "domain"


def _add_inter_column(fmt: str, folder) -> str:
    if fmt == "recbole":
        lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float\tsurface:token"]
        lines += [f"{u}\t{i}\t{r}\t{t}\t{_scen(t)}" for u, i, t, r in LOG]
        (folder / "tiny.inter").write_text("\n".join(lines) + "\n")
        return "surface"
    import pandas as pd

    df = pd.read_csv(folder / "interactions.csv")
    df["surface"] = [_scen(t) for t in df["ts"]]
    df.to_csv(folder / "interactions.csv", index=False)
    return "surface"


def _load(fmt, folder, **kw):
    return load_dataset(folder, fmt, LoadOptions(**(TABULAR_OPTIONS if fmt == "tabular" else {}), **kw))


def _by_user(ds: RecDataset) -> dict[str, list[str]]:
    return dict(zip(ds.sequences["user_id"], ds.sequences["scenarios"], strict=True))


@pytest.mark.parametrize("fmt", ["lcrec_json", "recbole", "amazon_raw", "tabular"])
def test_item_field_scenarios_every_loader(tiny_sources, fmt):
    folder = tiny_sources[fmt]
    field = _add_item_field(fmt, folder)
    ds = _load(fmt, folder, scenario_item_field=field)
    assert dict(zip(ds.sequences["user_id"], ds.sequences["item_ids"], strict=True)) == EXPECTED
    assert _by_user(ds) == EXPECTED_ITEM_SCEN  # u1 and u2 span two scenarios and load
    assert ds.scenario_names() == ["lab", "safety"]


@pytest.mark.parametrize("fmt", ["recbole", "tabular"])
def test_per_interaction_scenarios(tiny_sources, fmt):
    folder = tiny_sources[fmt]
    column = _add_inter_column(fmt, folder)
    ds = _load(fmt, folder, scenario_column=column)
    assert _by_user(ds) == EXPECTED_INTER_SCEN


def test_item_without_scenario_value_is_named(tiny_sources):
    folder = tiny_sources["lcrec_json"]
    _add_item_field("lcrec_json", folder)
    path = folder / "Tiny.item.json"
    items = json.loads(path.read_text())
    items["i4"]["domain"] = ""
    path.write_text(json.dumps(items))
    with pytest.raises(ValueError, match="item 'i4' has no 'domain' value"):
        _load("lcrec_json", folder, scenario_item_field="domain")


@pytest.mark.parametrize("fmt,kw", [("movielens", {"scenario_item_field": "x"}),
                                    ("lcrec_json", {"scenario_column": "x"})])
def test_loaders_that_cannot_carry_a_scenario_say_so(tiny_sources, fmt, kw):
    with pytest.raises(ValueError, match="scenario"):
        _load(fmt, tiny_sources[fmt], **kw)


def test_prepare_save_load_and_fingerprint(tiny_sources, tmp_path):
    folder = tiny_sources["lcrec_json"]
    _add_item_field("lcrec_json", folder)
    split = prepare_dataset(DataConfig(path=str(folder), scenario_item_field="domain"))
    plain = prepare_dataset(DataConfig(path=str(folder)))
    assert split.dataset.fingerprint() != plain.dataset.fingerprint()  # labels are content
    split.save(tmp_path / "s")
    back = SplitDataset.load(tmp_path / "s")
    assert _by_user(back.dataset) == EXPECTED_ITEM_SCEN
    assert back.dataset.fingerprint() == split.dataset.fingerprint()
    # one changed label changes the fingerprint
    relabelled = RecDataset.from_records(
        [dict(r) for r in split.dataset.items],
        [{**r, "scenarios": ["lab"] * len(r["item_ids"])} if r["user_id"] == "u3" else r
         for r in split.dataset.sequences], name=split.dataset.name)
    assert relabelled.fingerprint() != split.dataset.fingerprint()


def _mixed_dataset() -> RecDataset:
    items = [{"item_id": f"i{n}"} for n in range(1, 7)]
    seqs = [
        {"user_id": "a", "item_ids": ["i1", "i4", "i2", "i5", "i3"], "scenarios": ["f", "k", "f", "k", "f"]},
        {"user_id": "b", "item_ids": ["i4", "i5", "i1", "i6"], "scenarios": ["k", "k", "f", "k"]},
        {"user_id": "c", "item_ids": ["i2", "i1", "i3"], "scenarios": ["f", "f", "f"]},
    ]
    return RecDataset.from_records(items, seqs, name="mixed").validate()


def test_stats_eval_examples_and_scenario_views():
    split = leave_one_out_split(_mixed_dataset(), max_history=2)
    stats = split.dataset.stats()["scenarios"]
    assert stats == {"f": {"users": 3, "items": 3, "interactions": 7}, "k": {"users": 2, "items": 3, "interactions": 5}}
    text = format_stats(split.dataset.stats())
    assert "f" in text and "3 / 3 / 7" in text and "2 / 3 / 5" in text
    test = split.eval_examples("test")
    assert test["target"] == ["i3", "i6", "i3"]
    assert test["target_scenario"] == ["f", "k", "f"]
    assert test["history"][0] == ["i2", "i5"] and test["history_scenarios"][0] == ["f", "k"]
    assert split.eval_examples("valid")["target_scenario"] == ["k", "f", "f"]
    assert split.scenario_catalogues() == {"f": ["i1", "i2", "i3"], "k": ["i4", "i5", "i6"]}
    assert split.user_scenarios() == {"a": ["f", "k"], "b": ["f", "k"], "c": ["f"]}
    assert split.train_scenario_sequences()[1] == ("b", ["i4", "i5"], ["k", "k"])
    assert split.train_scenario_popularity() == {"f": {"i1": 1, "i2": 2}, "k": {"i4": 2, "i5": 1}}


def test_scenario_split_keeps_global_targets():
    split = leave_one_out_split(_mixed_dataset())
    sub = split.scenario_split("k")
    assert sub.dataset.item_ids() == ["i4", "i5", "i6"]
    assert dict(sub.train_sequences()) == {"a": ["i4"], "b": ["i4", "i5"]}
    test = sub.eval_examples("test")  # only b's test target is in k; its history is b's k-items before it
    assert list(zip(test["user_id"], test["history"], test["target"], strict=True)) == [("b", ["i4", "i5"], "i6")]
    assert sub.eval_examples("valid")["target"] == ["i5"]  # a's valid target i5 (k), b's is i1 (f)
    with pytest.raises(ValueError, match="scenario 'x' is not in"):
        split.scenario_split("x")


def test_processing_keeps_labels_aligned():
    items = [{"item_id": f"i{n}"} for n in range(1, 4)]
    seqs = [{"user_id": "a", "item_ids": ["i1", "i2", "i1", "i3"], "scenarios": ["x", "y", "z", "x"]},
            {"user_id": "b", "item_ids": ["i1", "i2", "i3"], "scenarios": ["y", "y", "x"]}]
    ds = dedup_interactions(RecDataset.from_records(items, seqs))
    assert _by_user(ds) == {"a": ["x", "y", "x"], "b": ["y", "y", "x"]}  # the repeat of i1 (z) went with it
    ds = kcore_filter(ds, 2)
    assert _by_user(ds) == {"a": ["x", "y", "x"], "b": ["y", "y", "x"]}


def test_validate_rejects_unlabelled_interaction():
    items = [{"item_id": "i1"}, {"item_id": "i2"}]
    ds = RecDataset.from_records(items, [{"user_id": "a", "item_ids": ["i1", "i2"], "scenarios": ["x", ""]}])
    with pytest.raises(ValueError, match="interaction with item 'i2' has no scenario"):
        ds.validate()


def test_train_scenarios_stay_aligned_when_cold_items_are_withheld():
    """Cold-item relabelling cuts items out of the middle of the training part; their labels must go too."""
    from recdata.cold_items import COLD_LABEL
    from recdata.split import with_labels

    split = leave_one_out_split(_mixed_dataset(), max_history=2)
    seqs = split.dataset.sequences
    labels = [[COLD_LABEL if label == "train" and item == "i4" else label for item, label in zip(items, row, strict=True)]
              for items, row in zip(seqs["item_ids"], seqs["split"], strict=True)]
    cold = SplitDataset(with_labels(split.dataset, labels), max_history=2, protocol=split.protocol)
    assert cold.train_scenario_sequences() == [("a", ["i1", "i2"], ["f", "f"]), ("b", ["i5"], ["k"]),
                                               ("c", ["i2"], ["f"])]
    assert [items for _, items, _ in cold.train_scenario_sequences()] == [s for _, s in cold.train_sequences()]
    assert cold.train_scenario_popularity() == {"f": {"i1": 1, "i2": 2}, "k": {"i5": 1}}
