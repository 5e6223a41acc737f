"""Training popularity and the most-popular baseline: every user gets the items bought most often in training.

``train_popularity`` is the one definition of "how popular an item is" (interaction counts of the training
part only); the popularity row, the long-tail slices of the evaluation, the negative sampling of the tasks and
the cache fallback all read it. Moved from ``inference.popularity`` (kept one release as a deprecated alias;
``inference`` still exports the names).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from recdata.errors import UserError
from recdata.split import SplitDataset

__all__ = ["RecommendFn", "popularity_recommender", "scenario_rankings", "train_popularity"]

RecommendFn = Callable[[Sequence[str], Sequence[Sequence[str]]], list[list[tuple[str, float]]]]


def train_popularity(split: SplitDataset) -> dict[str, int]:
    """Interaction count of each item in the training part only (no valid/test target leaks in):
    ``split.train_popularity()``, the one definition."""
    return split.train_popularity()


def popularity_recommender(split: SplitDataset, k: int = 20, exclude_history: bool = True) -> RecommendFn:
    """A ``recommend_fn(user_ids, histories)`` returning the top-``k`` training-popular items, count as score.

    Ties are broken by item id so results are deterministic; never-bought catalogue items fill the end.
    With ``exclude_history`` the user's history items are skipped, as for the model. On a split with scenarios
    the returned function also takes ``scenarios=`` (popularity per scenario, see ``scenario_rankings``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    counts = train_popularity(split)
    ranking = sorted(split.dataset.item_ids(), key=lambda item: (-counts.get(item, 0), item))
    by_scenario = scenario_rankings(split) if split.has_scenarios else {}

    def recommend_fn(user_ids: Sequence[str], histories: Sequence[Sequence[str]],
                     scenarios: Sequence[str | None] | None = None) -> list[list[tuple[str, float]]]:
        """``scenarios[i]`` (optional): rank row ``i`` within that scenario by its own training counts."""
        if len(user_ids) != len(histories):
            raise ValueError(f"got {len(user_ids)} user ids but {len(histories)} histories")
        if scenarios is not None and len(scenarios) != len(histories):
            raise ValueError(f"got {len(scenarios)} scenarios for {len(histories)} histories")
        out = []
        for row, history in enumerate(histories):
            scenario = scenarios[row] if scenarios is not None else None
            if scenario is None:
                order, score = ranking, counts
            elif scenario in by_scenario:
                order, score = by_scenario[scenario]
            else:
                raise UserError(f"unknown scenario {scenario!r}; this dataset has {sorted(by_scenario)}")
            seen = set(history) if exclude_history else set()
            top = []
            for item in order:
                if item not in seen:
                    top.append((item, float(score.get(item, 0))))
                    if len(top) == k:
                        break
            out.append(top)
        return out

    return recommend_fn


def scenario_rankings(split: SplitDataset) -> dict[str, tuple[list[str], dict[str, int]]]:
    """``{scenario: (its catalogue by training interactions labelled with it, those counts)}``.

    The popularity-per-scenario baseline; ties by item id, never-bought scenario items at the end.
    """
    counts = split.train_scenario_popularity()
    out = {}
    for scenario, items in split.scenario_catalogues().items():
        table = counts.get(scenario, {})
        out[scenario] = (sorted(items, key=lambda item: (-table.get(item, 0), item)), table)
    return out
