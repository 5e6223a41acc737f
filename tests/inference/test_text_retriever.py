"""The text retriever row: exact cosine ranking on a hand-made catalogue, and ``alignrec evaluate`` adding it."""

from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest

from alignrec.recommenders.request_retriever import TextRetriever
from inference.cli import EvaluateConfig
from inference.text_retriever import TEXT_RETRIEVER_ROW, text_retriever_recommender
from recdata.evaluation import evaluate_recommender
from recdata.item_vectors import ItemEmbeddings
from tests.inference.test_cli import tiny_run  # noqa: F401 (fixture)
from tests.recdata.test_cold_slice import cold_split_of

ITEMS = ["a", "b", "c", "d", "e"]
# c and d are not unit length: the query is the mean of the history's *unit* vectors
VECTORS = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [4.0, -3.0], [-1.0, 0.0]])
R2 = math.sqrt(2)


@pytest.mark.parametrize("history, exclude, k, expected", [
    # query unit((a + b) / 2) = (1, 1) / sqrt 2: c 1.4 / sqrt 2, a = b 1 / sqrt 2 (tie: catalogue order), d, e
    (["a", "b"], True, 3, [("c", 1.4 / R2), ("d", 0.2 / R2), ("e", -1 / R2)]),
    (["a", "b"], False, 3, [("c", 1.4 / R2), ("a", 1 / R2), ("b", 1 / R2)]),
    (["b", "a"], True, 5, [("c", 1.4 / R2), ("d", 0.2 / R2), ("e", -1 / R2)]),  # order-free; the list runs out
    (["e"], True, 4, [("b", 0.0), ("c", -0.6), ("d", -0.8), ("a", -1.0)]),
    (["zzz"], True, 3, [("a", 0.0), ("b", 0.0), ("c", 0.0)]),  # no known item: zero query, catalogue order
])
def test_history_retriever_exact_scores_and_top_k(history, exclude, k, expected):
    fn = TextRetriever(ITEMS, VECTORS).history_recommend_fn(k, exclude_history=exclude)
    (got,) = fn(["u1"], [history])
    assert [item for item, _ in got] == [item for item, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], abs=1e-6)


def test_row_reorders_vectors_to_the_catalogue_and_scores_exactly():
    shuffled = [4, 2, 0, 3, 1]
    vectors = ItemEmbeddings([ITEMS[i] for i in shuffled], VECTORS[shuffled])
    fn = text_retriever_recommender(vectors, ITEMS, k=2)
    examples = datasets.Dataset.from_dict({"user_id": ["u1", "u2"], "history": [["a", "b"], ["e"]],
                                           "target": ["d", "b"]})
    rep = evaluate_recommender(fn, examples, [1, 2], ITEMS, show_progress=False)
    # u1: [c, d] -> d at rank 1; u2: [b, c] -> b at rank 0
    assert rep["per_user"]["recall@1"] == [0.0, 1.0]
    assert rep["per_user"]["ndcg@2"] == pytest.approx([1 / math.log2(3), 1.0])


def test_row_refuses_vectors_of_another_catalogue():
    with pytest.raises(ValueError, match="do not cover the catalogue"):
        text_retriever_recommender(ItemEmbeddings(ITEMS[:4], VECTORS[:4]), ITEMS, k=2)


def test_the_row_is_a_next_item_row_only():
    with pytest.raises(ValueError, match="text_retriever_baseline is a next_item row"):
        EvaluateConfig(model_dir="m", split_dir="s", out_dir="o", task="request", requests_file="r", tasks_dir="t",
                       text_retriever_baseline=True)
    assert EvaluateConfig(model_dir="m", split_dir="s", out_dir="o").text_retriever_baseline is False


def test_evaluate_cli_adds_the_row_and_the_cold_slice(tiny_split, tiny_run, tmp_path, monkeypatch):  # noqa: F811
    """One-hot item vectors: every item outside the history scores 0, so the row ranks the catalogue in order
    (history excluded) and its ranks are known by hand; i5 is the withheld item (i6, i7 are never bought)."""
    import inference.text_retriever as text_retriever
    from alignrec.cli import main

    split = cold_split_of(tiny_split, "i5")
    split.save(tmp_path / "split")
    items = split.dataset.item_ids()
    asked = []

    def fake_vectors(split_arg, embedding_config=None, encoder_dir=""):
        asked.append(encoder_dir)
        return ItemEmbeddings(items, np.eye(len(items)))

    monkeypatch.setattr(text_retriever, "sentence_text_vectors", fake_vectors)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model_dir", str(tmp_path / "run"), "--split_dir", str(tmp_path / "split"),
                 "--out_dir", str(out), "--ks", "1", "5", "--num_beams", "8", "--text_retriever_baseline", "true",
                 "--encoder_dir", "my-minilm"]) == 0
    assert asked == ["my-minilm"]
    data = json.loads((out / "metrics.json").read_text())["recommenders"]
    assert set(data) == {"alignrec", TEXT_RETRIEVER_ROW, "popularity"}
    # test targets: u1 i5 (history i1-i4), u2 i7 (i2 i3 i6), u3 i1 (i5 i6), u4 i7 (i8 i4 i1 i2 i6), u5 i5 (i3 i8)
    # catalogue order without the history: ranks 0, 3, 0, 2, 3; cold targets (i5, i7): u1 u2 u4 u5
    row = data[TEXT_RETRIEVER_ROW]
    assert row["overall"]["recall@1"] == pytest.approx(2 / 5)
    assert row["overall"]["recall@5"] == 1.0
    cold = row["slices"]["cold_items"]["cold"]
    assert cold["n"] == 4 and cold["recall@1"] == pytest.approx(1 / 4)
    assert cold["ndcg@5"] == pytest.approx((1 + 1 / math.log2(5) + 1 / 2 + 1 / math.log2(5)) / 4)
    assert row["slices"]["cold_items"]["warm"] == {"n": 1, **dict.fromkeys(row["overall"], 1.0)}
    for rep in data.values():  # every row: the cold slice is the unseen popularity bucket under its own name
        assert rep["slices"]["cold_items"]["cold"] == rep["slices"]["target_popularity"]["unseen"]
    md = (out / "metrics.md").read_text()
    assert "## Cold items (cold-item protocol" in md and "| text retriever | cold | 4 |" in md
