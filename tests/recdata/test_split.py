"""Splits: exact labels and histories on tiny input, no valid/test target in training data, exact temporal
cut points, and save/load round trips."""

from __future__ import annotations

import random

import pytest

from recdata import RecDataset, SplitDataset, leave_one_out_split, temporal_split


def _examples(split: SplitDataset, part: str) -> dict[str, tuple[list[str], str]]:
    ex = split.eval_examples(part)
    return {u: (h, t) for u, h, t in zip(ex["user_id"], ex["history"], ex["target"], strict=True)}


def test_leave_one_out_exact(tiny_dataset):
    split = leave_one_out_split(tiny_dataset, max_history=2)
    seqs = dict(zip(split.dataset.sequences["user_id"], split.dataset.sequences["split"], strict=True))
    assert seqs["u1"] == ["train", "train", "train", "valid", "test"]
    assert seqs["u3"] == ["train", "valid", "test"]
    assert dict(split.train_sequences())["u1"] == ["i1", "i2", "i3"]  # untruncated training part
    assert dict(split.train_sequences())["u3"] == ["i5"]
    assert _examples(split, "valid")["u1"] == (["i2", "i3"], "i4")  # history truncated to max_history=2
    assert _examples(split, "test")["u1"] == (["i3", "i4"], "i5")
    assert _examples(split, "test")["u4"] == (["i2", "i6"], "i7")
    assert split.serving_histories()["u4"] == ["i6", "i7"]
    assert len(split.eval_examples("valid")) == len(split.eval_examples("test")) == 5


def _random_dataset(seed: int, n_users: int = 40, n_items: int = 50) -> RecDataset:
    rng = random.Random(seed)
    items = [{"item_id": f"i{k}"} for k in range(n_items)]
    seqs = []
    clock = 0
    for u in range(n_users):
        chosen = rng.sample(range(n_items), rng.randrange(3, 15))  # no repeats, like deduplicated data
        ts = []
        for _ in chosen:
            clock += rng.randrange(0, 3)  # ties happen
            ts.append(clock + rng.randrange(0, 100))
        ts.sort()
        seqs.append({"user_id": f"u{u}", "item_ids": [f"i{k}" for k in chosen], "timestamps": ts})
    return RecDataset.from_records(items, seqs, name=f"rand{seed}").validate()


@pytest.mark.parametrize("protocol", ["leave_one_out", "temporal"])
@pytest.mark.parametrize("seed", range(3))
def test_no_eval_target_leaks_into_training(protocol, seed):
    ds = _random_dataset(seed)
    split = leave_one_out_split(ds, 5) if protocol == "leave_one_out" else temporal_split(ds, max_history=5)
    train = dict(split.train_sequences())
    full = dict(zip(ds.sequences["user_id"], ds.sequences["item_ids"], strict=True))
    n_targets = 0
    for part in ("valid", "test"):
        ex = split.eval_examples(part)
        for user, history, target in zip(ex["user_id"], ex["history"], ex["target"], strict=True):
            pos = full[user].index(target)
            assert len(train[user]) <= pos, f"{part} target of {user} is inside its training sequence"
            assert target not in train[user]
            assert history == full[user][max(0, pos - 5):pos]
            n_targets += 1
    labels = [lab for row in split.dataset.sequences["split"] for lab in row]
    assert n_targets == sum(lab != "train" for lab in labels) - _first_position_targets(split)
    assert sum(len(s) for s in train.values()) == labels.count("train")


def _first_position_targets(split: SplitDataset) -> int:
    return sum(row[0] != "train" for row in split.dataset.sequences["split"])


def test_temporal_cut_points_exact():
    # 20 interactions at distinct times 1..20 over 4 users; 80/10/10 -> t<=16 train, 17-18 valid, 19-20 test
    seqs = [
        {"user_id": "a", "item_ids": ["x1", "x2", "x3", "x4", "x5"], "timestamps": [1, 5, 9, 17, 19]},
        {"user_id": "b", "item_ids": ["x1", "x2", "x3", "x4", "x5"], "timestamps": [2, 6, 10, 13, 18]},
        {"user_id": "c", "item_ids": ["x1", "x2", "x3", "x4", "x5"], "timestamps": [3, 7, 11, 14, 20]},
        {"user_id": "d", "item_ids": ["x1", "x2", "x3", "x4", "x5"], "timestamps": [4, 8, 12, 15, 16]},
    ]
    ds = RecDataset.from_records([{"item_id": f"x{k}"} for k in range(1, 6)], seqs).validate()
    split = temporal_split(ds, (0.8, 0.1, 0.1), max_history=20)
    labels = dict(zip(split.dataset.sequences["user_id"], split.dataset.sequences["split"], strict=True))
    assert labels == {
        "a": ["train", "train", "train", "valid", "test"],
        "b": ["train", "train", "train", "train", "valid"],
        "c": ["train", "train", "train", "train", "test"],
        "d": ["train"] * 5,
    }
    assert sorted(_examples(split, "valid")) == ["a", "b"] and sorted(_examples(split, "test")) == ["a", "c"]
    assert _examples(split, "test")["a"] == (["x1", "x2", "x3", "x4"], "x5")  # history holds the valid item
    assert dict(split.train_sequences())["a"] == ["x1", "x2", "x3"]


def test_temporal_first_interaction_is_never_a_target():
    seqs = [{"user_id": "old", "item_ids": ["a", "b", "c"], "timestamps": [1, 2, 3]},
            {"user_id": "new", "item_ids": ["a", "b", "c"], "timestamps": [8, 9, 10]}]
    ds = RecDataset.from_records([{"item_id": i} for i in "abc"], seqs)
    labels = temporal_split(ds, (0.5, 0.25, 0.25)).dataset.sequences["split"]
    # cuts: valid from t=8, test from t=9; t=8 is a first interaction (no history) so it stays train
    assert labels == [["train", "train", "train"], ["train", "test", "test"]]


def test_temporal_rejects_unsorted_timestamps():
    ds = RecDataset.from_records([{"item_id": i} for i in "abc"],
                                 [{"user_id": "u", "item_ids": ["a", "b", "c"], "timestamps": [3, 1, 2]}])
    with pytest.raises(ValueError, match="user 'u' has timestamps out of order"):
        temporal_split(ds)


@pytest.mark.parametrize("protocol", ["leave_one_out", "temporal"])
def test_split_save_load_round_trip(tmp_path, protocol):
    ds = _random_dataset(7)
    split = leave_one_out_split(ds, 4) if protocol == "leave_one_out" else temporal_split(ds, max_history=4)
    split.save(tmp_path / "s")
    back = SplitDataset.load(tmp_path / "s")
    assert (back.protocol, back.max_history) == (protocol, 4)
    assert back.dataset.fingerprint() == split.dataset.fingerprint()
    assert back.train_sequences() == split.train_sequences()
    for part in ("valid", "test"):
        assert back.eval_examples(part).to_list() == split.eval_examples(part).to_list()
    assert back.serving_histories() == split.serving_histories()
    with pytest.raises(FileNotFoundError, match="no split.json"):
        ds.save(tmp_path / "plain")
        SplitDataset.load(tmp_path / "plain")
