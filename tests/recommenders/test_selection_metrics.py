"""Model selection (full_ranking_metrics) = evaluation (evaluate_recommender) for the same model and users,
chunked or not: one metrics definition (recdata.metrics), ties and history-repeated targets included."""

from __future__ import annotations

import math

import datasets
import pytest
import torch

from alignrec.recommenders import (
    DenseRecommender,
    SASRec,
    SASRecConfig,
    as_recommend_fn,
    full_ranking_metrics,
)
from inference import evaluate_recommender

ITEMS = ["a", "b", "c", "d", "e"]
# history -> scores over a b c d e (the scripted model scores a history the same in any chunk)
SCRIPT = {
    ("b",): [0.5, 0.9, 0.5, 0.1, 0.5],     # target c: b left out, a ties first -> rank 1
    ("a", "d"): [0.2, 0.3, 0.1, 0.0, 0.4],  # target a repeated from the history -> a miss
    ("d",): [0.7, 0.7, 0.7, 0.7, 0.7],     # target e: all tied, a b c first -> rank 3
    ("c", "e"): [0.1, 0.2, 0.9, 0.3, 0.8],  # target d: c, e left out, d best of the rest -> rank 0
}
HISTORIES = [list(h) for h in SCRIPT]
TARGETS = ["c", "a", "e", "d"]


class Scripted(DenseRecommender):
    def __init__(self) -> None:
        super().__init__(ITEMS)
        self.calls: list[int] = []

    def score(self, histories, **context):
        self.calls.append(len(histories))
        return torch.tensor([SCRIPT[tuple(h)] for h in histories])


def _examples(histories, targets, users=None):
    users = users or [f"u{i}" for i in range(len(histories))]
    return datasets.Dataset.from_dict({"user_id": users, "history": histories, "target": targets})


def test_selection_metrics_hand_computed():
    ranks = [1, None, 3, 0]
    out = full_ranking_metrics(Scripted(), HISTORIES, TARGETS, k=2)
    assert out == {"recall@2": pytest.approx(2 / 4), "ndcg@2": pytest.approx((1 / math.log2(3) + 1) / 4)}
    out = full_ranking_metrics(Scripted(), HISTORIES, TARGETS, k=4)
    assert out["recall@4"] == pytest.approx(3 / 4)
    assert out["ndcg@4"] == pytest.approx(sum(1 / math.log2(r + 2) for r in ranks if r is not None) / 4)
    # over every item: c ranks 2 (b above, a ties first), a 2 (b, e above), e 4, d 2 (c, e above)
    assert full_ranking_metrics(Scripted(), HISTORIES, TARGETS, k=3, exclude_history=False)["recall@3"] == 3 / 4
    with pytest.raises(ValueError, match="4 histories but 3 targets"):
        full_ranking_metrics(Scripted(), HISTORIES, TARGETS[:3])


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_chunked_equals_unchunked_and_memory_stays_per_chunk(chunk_size):
    model = Scripted()
    for k in (1, 2, 4):
        assert full_ranking_metrics(model, HISTORIES, TARGETS, k=k, chunk_size=chunk_size) == \
            full_ranking_metrics(Scripted(), HISTORIES, TARGETS, k=k, chunk_size=1000)
    assert max(model.calls) == chunk_size  # never more than chunk_size histories scored at once


@pytest.mark.parametrize("k", [1, 2, 4])
def test_selection_equals_evaluation_with_ties_and_repeated_targets(k):
    report = evaluate_recommender(as_recommend_fn(Scripted(), k=k), _examples(HISTORIES, TARGETS), ks=(k,),
                                  catalogue=ITEMS, show_progress=False)
    assert full_ranking_metrics(Scripted(), HISTORIES, TARGETS, k=k) == report["overall"]


def test_selection_equals_evaluation_for_a_trained_sasrec(tiny_split):
    """A real SASRec, its valid users: the metric train_with_early_stopping selects by is the evaluation's."""
    from alignrec.recommenders import train_sasrec

    cfg = SASRecConfig(sasrec_dim=16, sasrec_heads=2, sasrec_layers=1, sasrec_max_len=4, sasrec_batch_size=4,
                       sasrec_lr=1e-2, sasrec_seed=0, sasrec_epochs=3, sasrec_patience=0)
    model = train_sasrec(tiny_split, cfg)
    assert isinstance(model, SASRec)
    valid = tiny_split.eval_examples("valid")
    # plus a user whose target repeats an item of the history (a miss in both)
    histories, targets = [*valid["history"], ["i2", "i3", "i6"]], [*valid["target"], "i3"]
    examples = _examples(histories, targets)
    for k in (1, 2, 5):
        report = evaluate_recommender(as_recommend_fn(model, k=k), examples, ks=(k,), catalogue=model.item_ids,
                                      batch_size=64, show_progress=False)
        assert full_ranking_metrics(model, histories, targets, k=k, chunk_size=64) == report["overall"]
