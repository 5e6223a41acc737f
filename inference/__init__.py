"""Trie-constrained beam search, batch recommendation, evaluation, and the offline top-K cache.

Names are imported lazily so ``alignrec --help`` does not pay for importing torch / transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ItemTrie": "inference.trie",
    "BeamSearchOutput": "inference.beam_search",
    "constrained_beam_search": "inference.beam_search",
    "sequence_log_probs": "inference.beam_search",
    "TrieLogitsProcessor": "inference.logits_processor",
    "build_item_trie": "inference.recommender",
    "llm_recommender": "inference.recommender",
    "recommend": "inference.recommender",
    "ndcg_at_k": "inference.metrics",
    "recall_at_k": "inference.metrics",
    "evaluate_recommender": "inference.evaluate",
    "popularity_buckets": "inference.evaluate",
    "render_markdown": "inference.evaluate",
    "write_report": "inference.evaluate",
    "popularity_recommender": "inference.popularity",
    "train_popularity": "inference.popularity",
    "build_cache": "inference.cache",
    "publish_cache": "inference.cache",
    "CacheReader": "inference.cache",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
