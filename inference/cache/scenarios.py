"""Per-scenario caches: one top-K per (user, scenario), built, published and looked up like per-user ones.

A (user, scenario) pair is stored under the key ``user + SCENARIO_SEP + scenario``, so the build (sharding,
chunks, resume, incremental refresh) and the SQLite store need no second code path: ``expand_scenarios`` turns
per-user histories into per-pair ones and wraps a scenario-aware ``recommend_fn(user_ids, histories,
scenarios=...)`` (``inference.scenarios``) into the per-key interface the build calls. The cost multiplies by
the scenarios each user is served in; ``scenario_users`` makes that the documented choice: every scenario
(``all``) or only those the user has interactions in (``active``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from recdata.errors import ConfigError, UserError

SCENARIO_SEP = "\x1f"  # ASCII unit separator: never part of a user id or a scenario name (checked)
SCENARIO_MODES = ("none", "all", "active")

Recs = list[tuple[str, float]]


def scenario_key(user_id: str, scenario: str) -> str:
    """The cache key of one (user, scenario) pair."""
    return f"{user_id}{SCENARIO_SEP}{scenario}"


def split_scenario_key(key: str) -> tuple[str, str]:
    user_id, sep, scenario = key.rpartition(SCENARIO_SEP)
    if not sep:
        raise ValueError(f"cache key {key!r} is not a (user, scenario) key")
    return user_id, scenario


def scenario_users(user_scenarios: Mapping[str, Sequence[str]], scenarios: Sequence[str], mode: str,
                   users: Iterable[str] | None = None) -> dict[str, list[str]]:
    """``{user: scenarios to serve}``: ``all`` = every scenario, ``active`` = the user's own (``user_scenarios``)."""
    if mode not in ("all", "active"):
        raise ConfigError(f"scenario mode must be 'all' or 'active', got {mode!r}")
    wanted = list(users) if users is not None else list(user_scenarios)
    if mode == "all":
        return {u: sorted(scenarios) for u in wanted}
    return {u: sorted(user_scenarios.get(u, [])) for u in wanted}


def expand_scenarios(
    histories: Mapping[str, Sequence[str]],
    served: Mapping[str, Sequence[str]],
    recommend_fn: Callable[..., list[Recs]],
) -> tuple[dict[str, list[str]], Callable[[list[str], list[list[str]]], list[Recs]]]:
    """(per-pair histories, per-key recommend_fn) for ``build_cache``; ``served[user]`` lists the user's scenarios."""
    pairs: dict[str, list[str]] = {}
    for user, history in histories.items():
        for scenario in served.get(user, []):
            if SCENARIO_SEP in user or SCENARIO_SEP in scenario or not scenario:
                raise UserError(f"user {user!r} / scenario {scenario!r}: ids must be non-empty and must not contain "
                                 "the ASCII unit separator (\\x1f), which joins them in cache keys")
            pairs[scenario_key(user, scenario)] = list(history)

    def per_key(keys: list[str], key_histories: list[list[str]]) -> list[Recs]:
        split = [split_scenario_key(k) for k in keys]
        return recommend_fn([u for u, _ in split], key_histories, scenarios=[s for _, s in split])

    return pairs, per_key
