"""Scenarios: a per-interaction label (a product category, an app surface) beside ``item_ids``.

A sequence's optional ``scenarios: list[str]`` column is aligned with its ``item_ids``; loaders fill it from a
per-interaction column or from an item field (every interaction with the item takes the item's scenario). A
user may have interactions in any number of scenarios; the split stays leave-one-out on the merged sequence,
so each evaluation target simply carries its own scenario.

A scenario's *catalogue* is the set of items with at least one interaction labelled with it (catalogue order).
With item-field scenarios every item belongs to exactly one; with per-interaction labels an item may belong to
several, and ``item_scenario`` picks its most frequent label (ties: the smallest name).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from recdata.errors import UserError

SCENARIO_COLUMN = "scenarios"


def has_scenarios(sequences: Any) -> bool:
    """True when a sequences table (a ``datasets.Dataset``) carries per-interaction scenario labels."""
    return SCENARIO_COLUMN in sequences.column_names


def _pairs(item_seqs: Iterable[Sequence[str]], scen_seqs: Iterable[Sequence[str]]):
    for items, scens in zip(item_seqs, scen_seqs, strict=True):
        yield from zip(items, scens, strict=True)


def scenario_names(scen_seqs: Iterable[Sequence[str]]) -> list[str]:
    """Distinct scenario labels, sorted."""
    return sorted({s for seq in scen_seqs for s in seq})


def scenario_stats(user_ids: Sequence[str], item_seqs: Sequence[Sequence[str]],
                   scen_seqs: Sequence[Sequence[str]]) -> dict[str, dict[str, int]]:
    """``{scenario: {"users", "items", "interactions"}}``: users with >= 1 interaction in it, distinct items."""
    users: dict[str, set[str]] = defaultdict(set)
    items: dict[str, set[str]] = defaultdict(set)
    inter: Counter[str] = Counter()
    for user, seq, scens in zip(user_ids, item_seqs, scen_seqs, strict=True):
        for item, scen in zip(seq, scens, strict=True):
            users[scen].add(user)
            items[scen].add(item)
            inter[scen] += 1
    return {s: {"users": len(users[s]), "items": len(items[s]), "interactions": inter[s]} for s in sorted(inter)}


def scenario_catalogues(catalogue: Sequence[str], item_seqs: Iterable[Sequence[str]],
                        scen_seqs: Iterable[Sequence[str]]) -> dict[str, list[str]]:
    """``{scenario: [item_id, ...]}`` in ``catalogue`` order: the items a scenario can serve."""
    members: dict[str, set[str]] = defaultdict(set)
    for item, scen in _pairs(item_seqs, scen_seqs):
        members[scen].add(item)
    return {s: [i for i in catalogue if i in members[s]] for s in sorted(members)}


def item_scenario(item_seqs: Iterable[Sequence[str]], scen_seqs: Iterable[Sequence[str]]) -> dict[str, str]:
    """``{item_id: scenario}``: each item's most frequent label (ties: the smallest name)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for item, scen in _pairs(item_seqs, scen_seqs):
        counts[item][scen] += 1
    return {item: min(c, key=lambda s: (-c[s], s)) for item, c in counts.items()}


def validate_scenarios(user_ids: Sequence[str], item_seqs: Sequence[Sequence[str]],
                       scen_seqs: Sequence[Sequence[str]], where: str) -> None:
    """Every interaction has one non-empty label; raise naming the user otherwise."""
    for user, seq, scens in zip(user_ids, item_seqs, scen_seqs, strict=True):
        if len(seq) != len(scens):
            raise UserError(f"{where}: user {user!r} has {len(seq)} items but {len(scens)} scenario labels; "
                             "the scenarios column must hold one label per interaction")
        for item, scen in zip(seq, scens, strict=True):
            if not scen:
                raise UserError(f"{where}: user {user!r}'s interaction with item {item!r} has no scenario; every "
                                 "interaction needs one (is the item missing from the catalogue?)")
