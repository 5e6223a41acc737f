"""Deprecated alias (one release): the evaluation protocol moved to ``recdata.evaluation`` (the data layer, so
the knowledge and multi-scenario stages below ``inference`` report rows with the same code). Import from there,
or the names from ``inference``."""

from __future__ import annotations

import warnings

from recdata.evaluation import (
    HISTORY_BUCKETS,
    PER_USER_FILE,
    POPULARITY_SHARES,
    RecommendFn,
    evaluate_recommender,
    evaluate_within_scenario,
    history_bucket,
    load_per_user,
    popularity_buckets,
    render_markdown,
    render_scenario_table,
    write_report,
)

__all__ = ["HISTORY_BUCKETS", "PER_USER_FILE", "POPULARITY_SHARES", "RecommendFn", "evaluate_recommender",
           "evaluate_within_scenario", "history_bucket", "load_per_user", "popularity_buckets", "render_markdown",
           "render_scenario_table", "write_report"]

warnings.warn("inference.evaluate moved to recdata.evaluation; import from there (or from inference)",
              DeprecationWarning, stacklevel=2)
