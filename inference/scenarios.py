"""Multi-scenario serving helpers over the ``recommend_fn`` interface.

A *scenario-aware* ``recommend_fn(user_ids, histories, scenarios=None)`` returns, for row ``i`` with
``scenarios[i] = s``, items of scenario ``s`` only (``None`` / no argument: the whole catalogue). The
popularity baseline, dense recommenders (``as_recommend_fn(..., scenario_items=...)``) and the LLM
recommender (``llm_recommender(..., scenario_items=...)``) implement it; ``scenario_router`` builds one from
one model per scenario (e.g. a SASRec trained on each scenario's subsequences).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

RecommendList = list[list[tuple[str, float]]]
ScenarioRecommendFn = Callable[..., RecommendList]


def scenario_router(
    fns: Mapping[str, Callable[[Sequence[str], Sequence[Sequence[str]]], RecommendList]],
    scenario_items: Mapping[str, Sequence[str]],
    fallback: ScenarioRecommendFn | None = None,
) -> ScenarioRecommendFn:
    """A scenario-aware ``recommend_fn`` that sends row ``i`` to ``fns[scenarios[i]]``.

    Each per-scenario model sees the history restricted to its scenario's items (what it was trained on). A row
    whose restricted history is empty goes to ``fallback(user_ids, histories, scenarios=...)`` (e.g. the
    per-scenario popularity); without one it gets an empty list. ``scenarios`` is required: a per-scenario
    model cannot rank the whole catalogue.
    """
    missing = sorted(set(fns) - set(scenario_items))
    if missing:
        raise ValueError(f"scenario(s) {missing} have a model but no catalogue in scenario_items")
    members = {name: frozenset(items) for name, items in scenario_items.items()}

    def recommend_fn(user_ids: Sequence[str], histories: Sequence[Sequence[str]],
                     scenarios: Sequence[str] | None = None) -> RecommendList:
        if scenarios is None:
            raise ValueError("a per-scenario router needs scenarios=[...] (one per row); it cannot rank the whole "
                             "catalogue")
        if not len(user_ids) == len(histories) == len(scenarios):
            raise ValueError(f"got {len(user_ids)} users, {len(histories)} histories, {len(scenarios)} scenarios")
        out: RecommendList = [[] for _ in user_ids]
        groups: dict[str, list[int]] = {}
        cold: list[int] = []
        for row, (history, scenario) in enumerate(zip(histories, scenarios, strict=True)):
            if scenario not in fns:
                raise ValueError(f"no model for scenario {scenario!r}; the router serves {sorted(fns)}")
            if any(i in members[scenario] for i in history):
                groups.setdefault(scenario, []).append(row)
            else:
                cold.append(row)
        for scenario, rows in groups.items():
            restricted = [[i for i in histories[r] if i in members[scenario]] for r in rows]
            for row, recs in zip(rows, fns[scenario]([user_ids[r] for r in rows], restricted), strict=True):
                out[row] = recs
        if cold and fallback is not None:
            recs = fallback([user_ids[r] for r in cold], [histories[r] for r in cold],
                            scenarios=[scenarios[r] for r in cold])
            for row, rec in zip(cold, recs, strict=True):
                out[row] = rec
        return out

    return recommend_fn


def takes_scenarios(recommend_fn: Callable[..., RecommendList]) -> bool:
    """True when ``recommend_fn`` accepts ``scenarios=`` (so it can rank within a scenario's catalogue)."""
    try:
        params = inspect.signature(recommend_fn).parameters
    except (TypeError, ValueError):
        return False
    return "scenarios" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
