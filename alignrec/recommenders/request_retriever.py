"""The text retriever: cosine between a query vector and every item's text vector, top-K, history excluded.

One implementation serves three rows of ``alignrec evaluate``. The query is ``(1 - w) * unit(request) + w *
history`` with ``history = unit(mean of the history items' unit text vectors)``:

- requests in words (``w = 0``): the request's sentence vector alone;
- request + history: ``w`` chosen on the valid requests (``choose_mix_weight``, through ``recdata.evaluation``),
  never on test;
- next item (``history_recommend_fn``): the history alone, no request vector (the "text retriever" row: a
  content-only baseline that also ranks items no training interaction ever showed).

In the mixed mode a row whose history has no catalogue item keeps its request vector; in the next-item mode it
gets a zero query: every item scores 0 and the ranking is the catalogue order. The vectors come from the caller
(MiniLM in ``alignrec evaluate``), so this layer needs no encoder and tests use hand-made ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["TextRetriever", "choose_mix_weight"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class TextRetriever:
    """``item_vectors`` ``[items, D]`` in ``item_ids`` order; ``request_vectors`` ``{request_id: [D]}`` (none for
    the history-only mode, ``weight = 1``)."""

    def __init__(self, item_ids: Sequence[str], item_vectors: np.ndarray,
                 request_vectors: Mapping[str, np.ndarray] | None = None) -> None:
        item_vectors = np.asarray(item_vectors, dtype=np.float32)
        if item_vectors.ndim != 2 or len(item_vectors) != len(item_ids):
            raise ValueError(f"item_vectors must be [{len(item_ids)}, D], got {item_vectors.shape}")
        self.item_ids = list(item_ids)
        self.row = {i: r for r, i in enumerate(self.item_ids)}
        self.items = _unit(item_vectors)  # [items, D]
        self.requests = {str(k): _unit(np.asarray(v, dtype=np.float32)) for k, v in (request_vectors or {}).items()}

    def scores(self, request_ids: Sequence[str], histories: Sequence[Sequence[str]], weight: float = 0.0
               ) -> np.ndarray:
        """``[rows, items]`` cosines of each row's (mixed) query vector with every item (a row whose history has
        no catalogue item keeps its request vector)."""
        query = np.stack([self.requests[str(r)] for r in request_ids])  # [rows, D]
        if weight:
            history = self.history_queries(histories)  # [rows, D]
            mixed = history.any(axis=1)
            query[mixed] = (1 - weight) * query[mixed] + weight * history[mixed]
        return _unit(query) @ self.items.T

    def history_scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """``[rows, items]`` cosines of each history's query (``history_queries``) with every item."""
        return self.history_queries(histories) @ self.items.T

    def history_queries(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """``[rows, D]``: unit(mean of each history's unit item vectors); zero for a history with no known item."""
        query = np.zeros((len(histories), self.items.shape[1]), dtype=np.float32)
        for n, history in enumerate(histories):
            rows = [self.row[i] for i in history if i in self.row]
            if rows:
                query[n] = _unit(self.items[rows].mean(0))
        return query

    def recommend_fn(self, k: int, weight: float = 0.0, exclude_history: bool = True) -> Any:
        """A ``recommend_fn(request_ids, histories)`` (``recdata.evaluation``): top-``k`` by cosine, ties by
        catalogue order; the history is mixed in with ``weight`` and excluded when ``exclude_history``."""
        return self._top_k(lambda request_ids, histories: self.scores(request_ids, histories, weight), k,
                           exclude_history)

    def history_recommend_fn(self, k: int, exclude_history: bool = True) -> Any:
        """The next-item ``recommend_fn(user_ids, histories)``: the history alone is the query (no request vector;
        the user ids are not read), top-``k`` as ``recommend_fn``."""
        return self._top_k(lambda user_ids, histories: self.history_scores(histories), k, exclude_history)

    def _top_k(self, score_fn: Any, k: int, exclude_history: bool) -> Any:
        def fn(ids: Sequence[str], histories: Sequence[Sequence[str]]) -> list[list[tuple[str, float]]]:
            if len(ids) != len(histories):
                raise ValueError(f"got {len(ids)} ids but {len(histories)} histories")
            scores = score_fn(ids, histories)  # [rows, items]
            out = []
            for n, history in enumerate(histories):
                if exclude_history:
                    scores[n, [self.row[i] for i in history if i in self.row]] = -np.inf
                order = np.lexsort((np.arange(scores.shape[1]), -scores[n]))[:k]
                out.append([(self.item_ids[j], float(scores[n, j])) for j in order if np.isfinite(scores[n, j])])
            return out

        return fn


def choose_mix_weight(retriever: TextRetriever, valid_examples: Any, weights: Sequence[float],
                      catalogue: Sequence[str], metric: str = "ndcg@10", exclude_history: bool = True
                      ) -> tuple[float, dict[float, float]]:
    """``(best weight, {weight: valid metric})`` over ``weights`` on the valid request examples (ties: the smaller
    weight); ``metric``: ``recall@K`` or ``ndcg@K`` of ``evaluate_recommender``'s overall report."""
    from recdata.evaluation import choose_on_valid

    k = int(metric.split("@")[1])
    return choose_on_valid(lambda w: retriever.recommend_fn(k, w, exclude_history), valid_examples, weights,
                           catalogue, metric)
