"""LLM4MSR's two prompt levels, in one place: scenario level (per dataset) and user level (per user / user group).

- scenario level: one prompt per scenario of the dataset; each lists *every* scenario with a few of its most
  bought training items, then asks for the named scenario and how it relates to the others, so the answers carry
  the correlations between scenarios;
- user level: a user's training history, each item tagged with its scenario, asking for the user's interests
  in each scenario and what connects them; a group prompt does the same for a cluster of similar users.

Histories are the training part only (``alignrec.knowledge.user_training_histories``); item text is the title
(``alignrec.knowledge.prompts.item_line``). Titles and scenario names go through ``inert`` (the generator LLM's
``InertText``; default: the code-token pattern only), so catalogue text never becomes a control or code token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from alignrec.knowledge.prompts import DEFAULT_INERT, Inert, item_line

__all__ = ["SCENARIO_PROMPT", "USER_GROUP_PROMPT", "USER_PROMPT", "scenario_prompt", "tagged_items",
           "user_group_prompt", "user_prompt"]

SCENARIO_PROMPT = (
    "An online shop has {count} scenarios: {overview}.\n"
    'Describe the scenario "{name}": what its customers look for, and how it relates to the other scenarios '
    "(shared interests and differences)."
)
USER_PROMPT = (
    "A customer's purchases, oldest first, each with its scenario: {history}.\n"
    "Summarise the customer's interests in each scenario ({scenarios}) and what connects them across scenarios."
)
USER_GROUP_PROMPT = (
    "A group of customers with similar tastes often bought these products, each with its scenario: {history}.\n"
    "Summarise the group's interests in each scenario ({scenarios}) and what connects them across scenarios."
)


def scenario_prompt(name: str, examples: Mapping[str, Sequence[dict[str, str]]], max_title_words: int = 12,
                    inert: Inert | None = None) -> str:
    """The prompt for scenario ``name``; ``examples``: ``{scenario: [item rows]}`` for every scenario (sorted)."""
    inert = inert or DEFAULT_INERT
    overview = "; ".join(
        f"{inert(scen)} (e.g. {', '.join(item_line(i, max_title_words, with_details=False, inert=inert) for i in items)})"
        for scen, items in sorted(examples.items()))
    return SCENARIO_PROMPT.format(count=len(examples), overview=overview, name=inert(name))


def tagged_items(items: Sequence[dict[str, str]], scenarios: Sequence[str], max_title_words: int = 12,
                 inert: Inert | None = None) -> str:
    """``"title" [scenario]; ...``: items with the scenario of each."""
    inert = inert or DEFAULT_INERT
    return "; ".join(f"{item_line(i, max_title_words, with_details=False, inert=inert)} [{inert(s)}]"
                     for i, s in zip(items, scenarios, strict=True))


def user_prompt(items: Sequence[dict[str, str]], scenarios: Sequence[str], all_scenarios: Sequence[str],
                max_title_words: int = 12, inert: Inert | None = None) -> str:
    return USER_PROMPT.format(history=tagged_items(items, scenarios, max_title_words, inert),
                              scenarios=", ".join(map(inert or DEFAULT_INERT, all_scenarios)))


def user_group_prompt(items: Sequence[dict[str, str]], scenarios: Sequence[str], all_scenarios: Sequence[str],
                      max_title_words: int = 12, inert: Inert | None = None) -> str:
    return USER_GROUP_PROMPT.format(history=tagged_items(items, scenarios, max_title_words, inert),
                                    scenarios=", ".join(map(inert or DEFAULT_INERT, all_scenarios)))
