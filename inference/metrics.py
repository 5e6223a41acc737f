"""Single-target full-ranking metrics: the recommender's ranked list against the one held-out item."""

from __future__ import annotations

import math
from collections.abc import Sequence


def rank_of(ranked: Sequence[str], target: str) -> int | None:
    """0-based position of ``target`` in ``ranked`` (its first occurrence), or None when absent."""
    for pos, item in enumerate(ranked):
        if item == target:
            return pos
    return None


def recall_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1.0 if ``target`` is among the first ``k`` items (with one target, Recall@K = HitRate@K)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rank = rank_of(ranked[:k], target)
    return 0.0 if rank is None else 1.0


def ndcg_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """``1 / log2(rank + 2)`` for a hit at 0-based ``rank < k``, else 0 (the ideal DCG of one target is 1)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rank = rank_of(ranked[:k], target)
    return 0.0 if rank is None else 1.0 / math.log2(rank + 2)
