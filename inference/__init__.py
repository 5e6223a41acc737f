"""Trie-constrained beam search, batch recommendation, evaluation, and the offline top-K cache.

Names are imported lazily so ``alignrec --help`` does not pay for importing torch / transformers.
"""

from __future__ import annotations

from recdata.lazy import lazy_exports

_EXPORTS = {
    "ItemTrie": "inference.trie",
    "BeamSearchOutput": "inference.beam_search",
    "constrained_beam_search": "inference.beam_search",
    "sequence_log_probs": "inference.beam_search",
    "TrieLogitsProcessor": "inference.logits_processor",
    "build_item_trie": "inference.recommender",
    "llm_recommender": "inference.recommender",
    "recommend": "inference.recommender",
    "TrainedRun": "inference.trained_run",
    "ndcg_at_k": "inference.metrics",
    "recall_at_k": "inference.metrics",
    "evaluate_recommender": "inference.evaluate",
    "evaluate_within_scenario": "inference.evaluate",
    "render_scenario_table": "inference.evaluate",
    "popularity_buckets": "inference.evaluate",
    "render_markdown": "inference.evaluate",
    "write_report": "inference.evaluate",
    "popularity_recommender": "inference.popularity",
    "scenario_rankings": "inference.popularity",
    "scenario_router": "inference.scenarios",
    "train_popularity": "inference.popularity",
    "build_cache": "inference.cache",
    "publish_cache": "inference.cache",
    "CacheReader": "inference.cache",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
