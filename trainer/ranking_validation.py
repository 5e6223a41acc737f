"""Deprecated alias (one release): the ranking-validation callback moved to ``inference.ranking_validation``.

It decodes with ``inference``'s beam search, so ``trainer`` (a lower layer) no longer holds it; ``run_sft`` /
``run_dpo`` take it as their ``ranking_validation`` factory, passed by the entry scripts. Import from there.
"""

from __future__ import annotations

import warnings

from inference.ranking_validation import (
    METRIC_PREFIX,
    RANKING_COLUMNS,
    RankingValidationCallback,
    ranking_subset,
    ranking_validation_callback,
)

__all__ = ["METRIC_PREFIX", "RANKING_COLUMNS", "RankingValidationCallback", "ranking_subset",
           "ranking_validation_callback"]

warnings.warn("trainer.ranking_validation moved to inference.ranking_validation; import it from there",
              DeprecationWarning, stacklevel=2)
