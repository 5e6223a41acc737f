"""The most-popular baseline: every user gets the items bought most often in the training part."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from recdata import SplitDataset

RecommendFn = Callable[[Sequence[str], Sequence[Sequence[str]]], list[list[tuple[str, float]]]]


def train_popularity(split: SplitDataset) -> dict[str, int]:
    """Interaction count of each item in the training part only (no valid/test target leaks in)."""
    counts: Counter[str] = Counter()
    for _, items in split.train_sequences():
        counts.update(items)
    return dict(counts)


def popularity_recommender(split: SplitDataset, k: int = 20, exclude_history: bool = True) -> RecommendFn:
    """A ``recommend_fn(user_ids, histories)`` returning the top-``k`` training-popular items, count as score.

    Ties are broken by item id so results are deterministic; never-bought catalogue items fill the end.
    With ``exclude_history`` the user's history items are skipped, as for the model.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    counts = train_popularity(split)
    ranking = sorted(split.dataset.item_ids(), key=lambda item: (-counts.get(item, 0), item))

    def recommend_fn(user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> list[list[tuple[str, float]]]:
        if len(user_ids) != len(histories):
            raise ValueError(f"got {len(user_ids)} user ids but {len(histories)} histories")
        out = []
        for history in histories:
            seen = set(history) if exclude_history else set()
            top = []
            for item in ranking:
                if item not in seen:
                    top.append((item, float(counts.get(item, 0))))
                    if len(top) == k:
                        break
            out.append(top)
        return out

    return recommend_fn
