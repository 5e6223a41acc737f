"""The cold slice of the evaluation: exact numbers on the tiny split, and it follows what training holds."""

from __future__ import annotations

import math

import datasets
import pytest

from recdata.cold_items import COLD_LABEL, cold_item_split, items_without_training
from recdata.evaluation import evaluate_recommender, render_markdown
from recdata.popularity import train_popularity
from recdata.split import SplitDataset, with_labels


def cold_split_of(split: SplitDataset, item: str) -> SplitDataset:
    """``cold_item_split`` (1 of the 8 tiny items) with the first seed that draws ``item`` (no hard-coded rng)."""
    for seed in range(200):
        cold = cold_item_split(split, 1 / 8, seed=seed)
        if any(COLD_LABEL in labels for labels in cold.dataset.sequences["split"]) and \
                item not in {i for _, items in cold.train_sequences() for i in items}:
            return cold
    raise AssertionError(f"no seed in 0-199 draws {item!r}")


# tiny split: u1 i1 i2 i3 | i4 i5, u2 i2 i3 | i6 i7, u3 i5 | i6 i1, u4 i8 i4 i1 i2 | i6 i7, u5 i3 | i8 i5
SCRIPTED = {"u1": ["i5", "i1"],  # target i5 at rank 0
            "u2": ["i1", "i7"],  # target i7 at rank 1
            "u3": ["i1"],  # target i1 at rank 0 (the one warm target)
            "u4": ["i2", "i3"],  # target i7 missed
            "u5": ["i2", "i5"]}  # target i5 at rank 1


def _scripted(user_ids, histories):
    return [[(item, 1.0) for item in SCRIPTED[u]] for u in user_ids]


def test_cold_slice_exact_on_the_tiny_split(tiny_split):
    split = cold_split_of(tiny_split, "i5")  # i5's one training interaction (u3) is withheld
    cold = items_without_training(split)
    assert cold == ["i5", "i6", "i7"]  # i6, i7 are only ever targets
    rep = evaluate_recommender(_scripted, split.eval_examples("test"), [1, 2], split.dataset.item_ids(),
                               train_popularity(split), cold_items=cold, show_progress=False)
    slices = rep["slices"]["cold_items"]
    half = 1 / math.log2(3)  # NDCG of rank 1
    assert slices["cold"] == pytest.approx({"n": 4, "recall@1": 1 / 4, "ndcg@1": 1 / 4, "recall@2": 3 / 4,
                                            "ndcg@2": (1 + 2 * half) / 4})
    assert slices["warm"] == {"n": 1, "recall@1": 1.0, "ndcg@1": 1.0, "recall@2": 1.0, "ndcg@2": 1.0}
    assert slices["cold"] == rep["slices"]["target_popularity"]["unseen"]  # the same examples, named
    assert "| x | cold | 4 | 0.2500 | 0.7500 | 0.2500 |" in render_markdown({"x": rep})


def test_no_cold_items_no_slice(tiny_split):
    rep = evaluate_recommender(_scripted, tiny_split.eval_examples("test"), [1], tiny_split.dataset.item_ids(),
                               train_popularity(tiny_split), show_progress=False)
    assert "cold_items" not in rep["slices"] and "Cold items" not in render_markdown({"x": rep})


def test_a_planted_training_interaction_moves_the_item_out_of_the_cold_slice(tiny_split):
    """The cold slice is what the models' training part holds, not the drawn list: a withheld interaction put
    back into training (a leak) makes i5 warm for the slice, the popularity counts and the training sequences."""
    split = cold_split_of(tiny_split, "i5")
    assert "i5" not in {i for _, items in split.train_sequences() for i in items}  # what every model trains on
    assert train_popularity(split).get("i5", 0) == 0
    leaked = with_labels(split.dataset, [["train" if label == COLD_LABEL else label for label in labels]
                                         for labels in split.dataset.sequences["split"]])
    leaked = SplitDataset(leaked, max_history=split.max_history)
    assert items_without_training(leaked) == ["i6", "i7"] and train_popularity(leaked)["i5"] == 1
    rep = evaluate_recommender(_scripted, leaked.eval_examples("test"), [1], leaked.dataset.item_ids(),
                               train_popularity(leaked), cold_items=items_without_training(leaked),
                               show_progress=False)
    assert rep["slices"]["cold_items"]["cold"]["n"] == 2  # u2, u4 (i7); the i5 targets are warm now


def test_cold_examples_are_those_of_the_plain_split(tiny_split):
    split = cold_split_of(tiny_split, "i5")
    for part in ("valid", "test"):
        assert isinstance(split.eval_examples(part), datasets.Dataset)
        assert split.eval_examples(part).to_dict() == tiny_split.eval_examples(part).to_dict()
