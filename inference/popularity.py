"""Deprecated alias (one release): training popularity and the popularity baseline moved to
``recdata.popularity`` (one definition in the data layer). Import from there, or the names from ``inference``."""

from __future__ import annotations

import warnings

from recdata.popularity import RecommendFn, popularity_recommender, scenario_rankings, train_popularity

__all__ = ["RecommendFn", "popularity_recommender", "scenario_rankings", "train_popularity"]

warnings.warn("inference.popularity moved to recdata.popularity; import from there (or from inference)",
              DeprecationWarning, stacklevel=2)
