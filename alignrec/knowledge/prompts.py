"""Every prompt of REKI's factorization prompting, in one place, and the item / history text they show.

Factorization prompting first asks which factors drive preferences in the domain, then asks for item
factual knowledge and user preference reasoning *along those factors*, so answers stay on the aspects a
recommender can use. Collective prompts describe a group (a cluster of similar items / users) once.

Every piece of data text (titles, brands, categories, the domain, factor names) goes through ``inert`` before it
enters a prompt (``alignrec.llm.inert_text``): the extraction passes the generator LLM's ``InertText``, so a title
``<|im_end|>`` or ``<a_1><b_1>`` stays text; without one, the code-token pattern and control characters are escaped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from alignrec.llm.inert_text import InertText

__all__ = [
    "DEFAULT_INERT",
    "FACTOR_PROMPT",
    "Inert",
    "ITEM_GROUP_PROMPT",
    "ITEM_PROMPT",
    "USER_GROUP_PROMPT",
    "USER_PROMPT",
    "factor_prompt",
    "item_group_prompt",
    "item_line",
    "item_prompt",
    "parse_factors",
    "user_group_prompt",
    "user_prompt",
]

FACTOR_PROMPT = (
    "List the {count} most important factors that shape a customer's preferences when buying {domain}. "
    "Answer with a comma-separated list of short factor names only."
)
ITEM_PROMPT = (
    "Introduce this product and describe its attributes along these factors: {factors}.\n"
    "Product: {item}"
)
USER_PROMPT = (
    "A customer bought these products, oldest first: {history}.\n"
    "Analyse the customer's preferences along these factors: {factors}."
)
ITEM_GROUP_PROMPT = (
    "These products are similar: {items}.\n"
    "Describe what they have in common along these factors: {factors}."
)
USER_GROUP_PROMPT = (
    "A group of customers with similar tastes often bought these products: {history}.\n"
    "Analyse the group's preferences along these factors: {factors}."
)


Inert = Callable[[str], str]  # data text -> text that tokenizes as plain text (``InertText``)
DEFAULT_INERT = InertText()  # no tokenizer given: the code-token pattern and control characters only


def _factor_list(factors: Sequence[str], inert: Inert | None) -> str:
    return ", ".join((inert or DEFAULT_INERT)(f) for f in factors)


def _clip(text: str, max_words: int) -> str:
    words = re.sub(r"\s+", " ", text or "").strip().split(" ")
    words = [w for w in words if w]
    return " ".join(words[:max_words]) + (" ..." if max_words and len(words) > max_words else "")


def item_line(item: dict[str, str], max_title_words: int = 16, with_details: bool = True,
              inert: Inert | None = None) -> str:
    """``"<title>" (brand: B; category: leaf)`` with empty parts left out; the title alone when no details.
    Each part goes through ``inert`` (default: the code-token pattern only)."""
    inert = inert or DEFAULT_INERT
    title = f'"{_clip(inert(item.get("title") or ""), max_title_words)}"'
    if not with_details:
        return title
    details = []
    if (item.get("brand") or "").strip():
        details.append(f"brand: {inert(item['brand'].strip())}")
    categories = (item.get("categories") or "").strip()
    if categories:
        leaf = re.split(r">|,(?! )", categories)[-1].strip()
        if leaf:
            details.append(f"category: {inert(leaf)}")
    return f"{title} ({'; '.join(details)})" if details else title


def factor_prompt(domain: str, count: int, inert: Inert | None = None) -> str:
    return FACTOR_PROMPT.format(domain=(inert or DEFAULT_INERT)(domain), count=count)


def item_prompt(item: dict[str, str], factors: Sequence[str], max_title_words: int = 16,
                inert: Inert | None = None) -> str:
    return ITEM_PROMPT.format(item=item_line(item, max_title_words, inert=inert), factors=_factor_list(factors, inert))


def user_prompt(history: Sequence[dict[str, str]], factors: Sequence[str], max_title_words: int = 16,
                inert: Inert | None = None) -> str:
    titles = "; ".join(item_line(i, max_title_words, with_details=False, inert=inert) for i in history)
    return USER_PROMPT.format(history=titles, factors=_factor_list(factors, inert))


def item_group_prompt(members: Sequence[dict[str, str]], factors: Sequence[str], max_title_words: int = 16,
                      inert: Inert | None = None) -> str:
    return ITEM_GROUP_PROMPT.format(items="; ".join(item_line(i, max_title_words, inert=inert) for i in members),
                                    factors=_factor_list(factors, inert))


def user_group_prompt(items: Sequence[dict[str, str]], factors: Sequence[str], max_title_words: int = 16,
                      inert: Inert | None = None) -> str:
    titles = "; ".join(item_line(i, max_title_words, with_details=False, inert=inert) for i in items)
    return USER_GROUP_PROMPT.format(history=titles, factors=_factor_list(factors, inert))


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")


def parse_factors(answer: str, count: int, max_words: int = 4) -> list[str]:
    """Factor names from the LLM's answer: comma / newline separated, bullets and numbering stripped.

    Keeps at most ``count`` distinct names of 1..``max_words`` words, lower-cased, in answer order.
    """
    out: list[str] = []
    for chunk in re.split(r"[,\n;]", answer):
        name = _BULLET.sub("", chunk).strip().strip(".:\"'*` ").lower()
        name = re.sub(r"\s+", " ", name)
        if name and len(name.split()) <= max_words and name not in out and re.search(r"[a-z]", name):
            out.append(name)
        if len(out) == count:
            break
    return out
