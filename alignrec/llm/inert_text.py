"""Data text in a prompt stays text: it never becomes a special, chat-control or item-code token.

Item code tokens (``<a_12>``) and a chat template's control tokens (``<|im_start|>``) are *added* tokens: the HF
tokenizer matches them in the raw string before anything else, whatever ``split_special_tokens`` says. So a title
``<a_1><b_1>`` would become another item's code and a title holding ``<|im_end|>`` would end the user turn:
prompt injection from catalogue data. The rule, applied to every piece of data text (titles, descriptions,
brands, categories, queries, user knowledge, scenario names) before it is put into a prompt, by both the task
builders and decoding (``sft_tasks`` prompts go through ``PromptFormatter.inert``):

- control characters (ANSI escapes, NUL, bidi overrides) are removed (``recdata.text_safety.strip_controls``);
- every occurrence of an added token of the tokenizer (special or not, whitespace-only and one-character ones aside), of the
  item-code pattern ``<letter_number>`` and of the user-token pattern ``<user_number>`` (both may be added after the
  prompt is built) is broken by a
  zero-width space after its first character: ``<\u200ba_1>`` reads the same and tokenizes as plain text.

The rule is idempotent (a broken occurrence no longer matches), so a text escaped at build time and escaped
again at decoding gives the same prompt.

Prompts to the local generator LLM (knowledge and scenario extraction, LLM-written queries and requests) follow the
same rule with that LLM's tokenizer (``llm_inert_text``): their builders escape every piece of catalogue text, so
the answer cache is keyed by the prompt the model really reads, and ``HFGenerator`` escapes each user message again
before its chat template (a no-op for an escaped prompt, a guard for any other caller).
"""

from __future__ import annotations

import os
import re
from typing import Any

from recdata.text_safety import strip_controls

__all__ = ["BREAK", "CODE_TOKEN_PATTERN", "USER_TOKEN_PATTERN", "InertText", "control_strings", "inert_text", "llm_inert_text"]

BREAK = "\u200b"  # zero-width space: invisible, not part of any added token
CODE_TOKEN_PATTERN = r"<[a-z]_\d+>"  # tokenization.item_tokenizer.code_token's shape
USER_TOKEN_PATTERN = r"<user_\d+>"  # sft_tasks.user_tokens.user_token's shape (added at training, like codes)
_CODE = re.compile(CODE_TOKEN_PATTERN)
_USER = re.compile(USER_TOKEN_PATTERN)


def control_strings(hf_tokenizer: Any) -> list[str]:
    """The strings ``hf_tokenizer`` turns into added tokens: its special tokens and every added token, except
    whitespace-only and one-character ones and code tokens (``CODE_TOKEN_PATTERN`` covers those, present or not)."""
    if hf_tokenizer is None:
        return []
    found = set(getattr(hf_tokenizer, "all_special_tokens", None) or [])
    for token in (getattr(hf_tokenizer, "added_tokens_decoder", None) or {}).values():
        found.add(str(getattr(token, "content", token)))
    return sorted((t for t in found if len(t.strip()) > 1 and not _CODE.fullmatch(t) and not _USER.fullmatch(t)),
                  key=lambda t: (-len(t), t))


class InertText:
    """``inert(text)``: the rule above for one tokenizer (None: the code-token pattern only)."""

    def __init__(self, hf_tokenizer: Any = None) -> None:
        self.control_strings = control_strings(hf_tokenizer)
        self.pattern = re.compile("|".join([*map(re.escape, self.control_strings), CODE_TOKEN_PATTERN,
                                            USER_TOKEN_PATTERN]))

    def __call__(self, text: str) -> str:
        text = strip_controls(text)
        while True:  # one pass breaks every non-overlapping match; overlapping ones need another
            broken = self.pattern.sub(lambda m: m.group(0)[0] + BREAK + m.group(0)[1:], text)
            if broken == text:
                return text
            text = broken


def llm_inert_text(llm_dir: str | os.PathLike, flag: str = "--llm_dir") -> InertText:
    """``InertText`` for the tokenizer of the local LLM folder ``llm_dir`` (the tokenizer only, not the weights); a
    folder without a loadable tokenizer is one error naming ``flag``."""
    from alignrec.llm.hf_tokenizer import load_hf_tokenizer

    return InertText(load_hf_tokenizer(llm_dir, flag))


def inert_text(text: str, hf_tokenizer: Any = None) -> str:
    """``InertText(hf_tokenizer)(text)`` (build an ``InertText`` once when escaping many texts)."""
    return InertText(hf_tokenizer)(text)
