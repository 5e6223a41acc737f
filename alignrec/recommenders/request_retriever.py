"""A text retriever for requests in words: cosine between a request's sentence vector and every item's text vector.

The request + history mode mixes the two signals before the cosine: ``(1 - w) * unit(request) + w *
unit(mean of the history items' text vectors)``, with ``w`` chosen on the valid requests (``choose_mix_weight``,
through ``recdata.evaluation``), never on test. The vectors come from the caller (MiniLM in ``alignrec evaluate``:
``alignrec.llm.text_encoders.encode_sentence``), so this layer needs no encoder and tests use hand-made ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["TextRetriever", "choose_mix_weight"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class TextRetriever:
    """``item_vectors`` ``[items, D]`` in ``item_ids`` order; ``request_vectors`` ``{request_id: [D]}``."""

    def __init__(self, item_ids: Sequence[str], item_vectors: np.ndarray,
                 request_vectors: Mapping[str, np.ndarray]) -> None:
        item_vectors = np.asarray(item_vectors, dtype=np.float32)
        if item_vectors.ndim != 2 or len(item_vectors) != len(item_ids):
            raise ValueError(f"item_vectors must be [{len(item_ids)}, D], got {item_vectors.shape}")
        self.item_ids = list(item_ids)
        self.row = {i: r for r, i in enumerate(self.item_ids)}
        self.items = _unit(item_vectors)  # [items, D]
        self.requests = {str(k): _unit(np.asarray(v, dtype=np.float32)) for k, v in request_vectors.items()}

    def scores(self, request_ids: Sequence[str], histories: Sequence[Sequence[str]], weight: float = 0.0
               ) -> np.ndarray:
        """``[rows, items]`` cosines of each row's (mixed) query vector with every item."""
        query = np.stack([self.requests[str(r)] for r in request_ids])  # [rows, D]
        if weight:
            for n, history in enumerate(histories):
                rows = [self.row[i] for i in history if i in self.row]
                if rows:
                    query[n] = (1 - weight) * query[n] + weight * _unit(self.items[rows].mean(0))
        return _unit(query) @ self.items.T

    def recommend_fn(self, k: int, weight: float = 0.0, exclude_history: bool = True) -> Any:
        """A ``recommend_fn(request_ids, histories)`` (``recdata.evaluation``): top-``k`` by cosine, ties by
        catalogue order; the history is mixed in with ``weight`` and excluded when ``exclude_history``."""
        def fn(request_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> list[list[tuple[str, float]]]:
            scores = self.scores(request_ids, histories, weight)
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
    from recdata.evaluation import evaluate_recommender

    if not weights:
        raise ValueError("weights is empty; give the mix weights to choose from, e.g. 0,0.25,0.5,0.75")
    k = int(metric.split("@")[1])
    table = {}
    for w in weights:
        rep = evaluate_recommender(retriever.recommend_fn(k, w, exclude_history), valid_examples, [k], catalogue,
                                   show_progress=False)
        table[float(w)] = float(rep["overall"][metric])
    best = max(sorted(table), key=lambda w: table[w])  # max keeps the first (smallest) of equal scores
    return best, table
