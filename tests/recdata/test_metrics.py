"""The one metrics definition (recdata.metrics): ranks with the tie rule and history exclusion, hand-computed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recdata.metrics import (
    mean_metrics,
    ndcg_from_rank,
    rank_of,
    recall_from_rank,
    target_ranks,
    top_k_positions,
)

# catalogue a b c d e (positions 0..4)
SCORES = torch.tensor([
    [0.5, 0.9, 0.5, 0.1, 0.5],  # target c; history b. Ties at 0.5: a is before c in the catalogue
    [0.2, 0.3, 0.1, 0.0, 0.4],  # target a; history a, d: a target repeated from the history
    [0.7, 0.7, 0.7, 0.7, 0.7],  # target e; history d: all tied
])
TARGETS = [2, 0, 4]
HISTORY = [[1], [0, 3], [3]]


def test_target_ranks_hand_computed():
    # c: b is left out, a ties and comes first -> 1; a: in the history -> miss; e: a, b, c tie ahead (d left out) -> 3
    assert target_ranks(SCORES, TARGETS, HISTORY) == [1, None, 3]
    # over every item: b scores above c and a ties first -> 2; b and e above a -> 2; a b c d tie ahead of e -> 4
    assert target_ranks(SCORES, TARGETS) == [2, 2, 4]


def test_a_target_scored_minus_inf_is_a_miss():
    scores = torch.tensor([[0.1, -math.inf, 0.3]])
    assert target_ranks(scores, [1]) == [None]
    assert target_ranks(scores, [0]) == [1]


def test_mean_metrics_hand_computed():
    ranks = target_ranks(SCORES, TARGETS, HISTORY)
    assert mean_metrics(ranks, 2) == {"recall@2": pytest.approx(1 / 3), "ndcg@2": pytest.approx(1 / (3 * math.log2(3)))}
    out = mean_metrics(ranks, 5)
    assert out["recall@5"] == pytest.approx(2 / 3)
    assert out["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / 3)
    assert mean_metrics([], 10) == {"recall@10": 0.0, "ndcg@10": 0.0}
    assert (recall_from_rank(None, 3), ndcg_from_rank(None, 3), ndcg_from_rank(3, 3)) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        mean_metrics([0], 0)


def test_top_k_positions_orders_ties_by_catalogue_position():
    masked = SCORES.clone()
    for row, history in enumerate(HISTORY):
        masked[row, history] = -math.inf
    values, positions = top_k_positions(masked, 4)
    assert positions.tolist() == [[0, 2, 4, 3], [4, 1, 2, 0], [0, 1, 2, 4]]  # -inf ties too: a before d
    assert values[0].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.1])
    assert top_k_positions(masked, 10)[1].shape == (3, 5)


@pytest.mark.parametrize("seed", range(5))
def test_rank_in_the_recommended_list_equals_the_rank_from_scores(seed):
    """Evaluation reads a list, selection reads scores: the same rank, ties and history included."""
    rng = np.random.default_rng(seed)
    rows, items = 40, 12
    scores = torch.from_numpy(rng.integers(0, 4, size=(rows, items)).astype(np.float32))  # many ties
    targets = rng.integers(0, items, size=rows).tolist()
    history = [sorted(set(rng.integers(0, items, size=int(rng.integers(0, 4))).tolist())) for _ in range(rows)]
    masked = scores.clone()
    for row, positions in enumerate(history):
        masked[row, positions] = -math.inf
    values, positions = top_k_positions(masked, items)
    for row, (vals, idx) in enumerate(zip(values, positions, strict=True)):
        ranked = [int(i) for v, i in zip(vals, idx, strict=True) if v > -math.inf]
        assert rank_of(ranked, targets[row]) == target_ranks(scores, targets, history)[row]
