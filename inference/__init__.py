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
    "evaluate_recommender": "recdata.evaluation",
    "evaluate_within_scenario": "recdata.evaluation",
    "render_scenario_table": "recdata.evaluation",
    "popularity_buckets": "recdata.evaluation",
    "render_markdown": "recdata.evaluation",
    "write_report": "recdata.evaluation",
    "popularity_recommender": "recdata.popularity",
    "scenario_rankings": "recdata.popularity",
    "scenario_router": "inference.scenarios",
    "train_popularity": "recdata.popularity",
    "build_cache": "inference.cache",
    "publish_cache": "inference.cache",
    "CacheReader": "inference.cache",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
