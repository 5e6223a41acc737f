"""Recall@K and NDCG@K of one held-out target: the one definition that model selection and evaluation share.

Rank. A recommender orders the whole catalogue for a user; the items of the user's history are left out (they are
never recommended, as served), and so are items it scores ``-inf``. The target's rank is its 0-based position in
what is left, so a target repeated from the history is never ranked: a miss.

Ties. Items with equal scores are ordered by catalogue position, lower first (a stable sort of the scores), so
``rank = #(items scoring above the target) + #(items scoring the same and placed before it in the catalogue)``.
``top_k_positions`` orders recommendation lists by that rule, so the rank computed from scores
(``target_ranks``: model selection of the dense recommenders) and the target's position in a recommended list
(``rank_of``: evaluation of any ``recommend_fn``) are the same number.

Metrics of a rank ``r`` (``None`` = not ranked): Recall@K = 1 if ``r < K`` (one target: HitRate@K);
NDCG@K = ``1 / log2(r + 2)`` if ``r < K``, else 0 (the ideal DCG of one target is 1). A mean over users is numpy's
float64 mean of the per-user values (``mean_metrics``; ``recdata.evaluation`` takes the same mean).

Pure Python + numpy; torch is imported by the two tensor functions only, so list metrics stay light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["mean_metrics", "ndcg_at_k", "ndcg_from_rank", "rank_of", "recall_at_k", "recall_from_rank",
           "target_ranks", "top_k_positions"]


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def rank_of(ranked: Sequence[str], target: str) -> int | None:
    """0-based position of ``target`` in ``ranked`` (its first occurrence), or None when absent."""
    for pos, item in enumerate(ranked):
        if item == target:
            return pos
    return None


def recall_from_rank(rank: int | None, k: int) -> float:
    """1.0 if the target's 0-based ``rank`` is below ``k``, else 0.0 (``None``: not ranked)."""
    _check_k(k)
    return 1.0 if rank is not None and rank < k else 0.0


def ndcg_from_rank(rank: int | None, k: int) -> float:
    """``1 / log2(rank + 2)`` for a 0-based ``rank < k``, else 0.0 (``None``: not ranked)."""
    _check_k(k)
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < k else 0.0


def recall_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1.0 if ``target`` is among the first ``k`` items of ``ranked`` (with one target, Recall@K = HitRate@K)."""
    _check_k(k)
    return recall_from_rank(rank_of(ranked[:k], target), k)


def ndcg_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """NDCG@k of ``target`` in ``ranked``: ``1 / log2(rank + 2)`` for a hit at 0-based ``rank < k``, else 0."""
    _check_k(k)
    return ndcg_from_rank(rank_of(ranked[:k], target), k)


def mean_metrics(ranks: Sequence[int | None], k: int) -> dict[str, float]:
    """``{"recall@k": mean, "ndcg@k": mean}`` over users (float64 means of the per-user values; 0.0 when empty)."""
    _check_k(k)
    if not ranks:
        return {f"recall@{k}": 0.0, f"ndcg@{k}": 0.0}
    recall = np.asarray([recall_from_rank(r, k) for r in ranks])
    ndcg = np.asarray([ndcg_from_rank(r, k) for r in ranks])
    return {f"recall@{k}": float(recall.mean()), f"ndcg@{k}": float(ndcg.mean())}


def top_k_positions(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, positions)`` ``[rows, min(k, items)]`` of each row's best scores, best first; equal scores by
    catalogue position, lower first (the module's tie rule).

    ``torch.topk`` leaves the order of equal values open, so rows where a tie reaches the top ``k`` (within it, or
    at its edge) are re-ordered by a stable sort; other rows keep the cheaper ``topk`` result.
    """
    k = min(int(k), scores.shape[1])
    values, positions = scores.topk(k, dim=1)  # [rows, k], sorted descending
    if k == 0 or scores.shape[0] == 0:
        return values, positions
    edge = values[:, -1:]  # [rows, 1]: the k-th best score
    tied = ((scores >= edge).sum(1) > k) | (values[:, 1:] == values[:, :-1]).any(1)  # [rows]
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        ordered = scores[rows].sort(dim=1, descending=True, stable=True)
        values, positions = values.clone(), positions.clone()
        values[rows], positions[rows] = ordered.values[:, :k], ordered.indices[:, :k]
    return values, positions


def target_ranks(scores: torch.Tensor, targets: Sequence[int],
                 excluded: Sequence[Sequence[int]] | None = None) -> list[int | None]:
    """0-based rank of each row's target among its catalogue scores, by the module's rules; ``None`` = a miss.

    ``scores`` ``[rows, items]``; ``targets``: the target's catalogue position per row; ``excluded``: positions left
    out per row (the history), or None to rank over every item. A target that is excluded or scored ``-inf`` is
    a miss.
    """
    import torch

    rows, items = scores.shape
    if len(targets) != rows or (excluded is not None and len(excluded) != rows):
        raise ValueError(f"target_ranks: {rows} score rows, {len(targets)} targets, "
                         f"{'no' if excluded is None else len(excluded)} excluded lists")
    gold = torch.as_tensor(list(targets), dtype=torch.long)  # [rows]
    target = scores[torch.arange(rows), gold].unsqueeze(1)  # [rows, 1]
    earlier = torch.arange(items).unsqueeze(0) < gold.unsqueeze(1)  # [rows, items]: placed before the target
    before = (scores > target) | ((scores == target) & earlier)  # [rows, items]: ordered ahead of the target
    missed = (torch.isneginf(target) | torch.isnan(target)).squeeze(1).tolist()  # [rows]
    if excluded is not None:
        for row, positions in enumerate(excluded):
            if len(positions):
                before[row, list(positions)] = False
                missed[row] = missed[row] or int(targets[row]) in set(positions)
    counts = before.sum(1).tolist()
    return [None if miss else int(count) for count, miss in zip(counts, missed, strict=True)]
