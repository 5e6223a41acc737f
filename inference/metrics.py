"""Single-target full-ranking metrics, defined once in ``recdata.metrics`` (rank, tie rule, Recall@K, NDCG@K).

Re-exported here as part of ``inference``'s public API; model selection of the dense recommenders
(``alignrec.recommenders.full_ranking_metrics``) reads the same module, so selection and evaluation agree.
"""

from __future__ import annotations

from recdata.metrics import (
    mean_metrics,
    ndcg_at_k,
    ndcg_from_rank,
    rank_of,
    recall_at_k,
    recall_from_rank,
    target_ranks,
    top_k_positions,
)

__all__ = ["mean_metrics", "ndcg_at_k", "ndcg_from_rank", "rank_of", "recall_at_k", "recall_from_rank",
           "target_ranks", "top_k_positions"]
