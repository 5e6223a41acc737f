"""Turn an instruction into the model's prompt: its chat template when it has one, else a plain format."""

from __future__ import annotations

import logging
import re
from typing import Any

from sft_tasks.templates import PLAIN_FORMAT, SYSTEM_PROMPT

logger = logging.getLogger(__name__)

_SENTINEL = "\u241fAlignRec instruction\u241f"  # mixed case: a template that upper/lowercases fails


class PromptFormatter:
    """Formats instructions for one HF tokenizer.

    The chat template is rendered once around a sentinel and split into a prefix and a suffix, so formatting
    100k examples is string concatenation rather than 100k Jinja renders. ``check`` compares against a real
    render, and the builder calls it on one example per task.
    """

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf_tokenizer = hf_tokenizer
        self.uses_chat_template = bool(getattr(hf_tokenizer, "chat_template", None))
        self._system_in_user = False
        if self.uses_chat_template:
            rendered = self._render(_SENTINEL)
            if rendered.count(_SENTINEL) != 1:
                raise ValueError(
                    "the tokenizer's chat template does not reproduce the user message verbatim; "
                    "remove chat_template from the tokenizer to use the plain instruction format"
                )
            self.prefix, self.suffix = rendered.split(_SENTINEL)
        else:
            self.prefix, self.suffix = PLAIN_FORMAT.format(system=SYSTEM_PROMPT, instruction=_SENTINEL).split(_SENTINEL)

    def _messages(self, instruction: str, with_system: bool) -> list[dict[str, str]]:
        if with_system:
            return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": instruction}]
        return [{"role": "user", "content": f"{SYSTEM_PROMPT}\n\n{instruction}"}]

    def _render(self, instruction: str) -> str:
        try:
            return self.hf_tokenizer.apply_chat_template(
                self._messages(instruction, not self._system_in_user), tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:
            if self._system_in_user:
                raise  # e.g. templates that reject a system role (Gemma)
            logger.warning("chat template rejects a system message (%s); the system prompt goes into the user turn", exc)
            self._system_in_user = True
            return self.hf_tokenizer.apply_chat_template(
                self._messages(instruction, False), tokenize=False, add_generation_prompt=True
            )

    def __call__(self, instruction: str) -> str:
        return f"{self.prefix}{instruction}{self.suffix}"

    def check(self, instruction: str) -> None:
        """Raise if the fast path differs from a real render for ``instruction``."""
        if not self.uses_chat_template:
            return
        expected = self._render(instruction)
        if expected != self(instruction):
            raise ValueError(
                "chat template output depends on the message content beyond plain substitution; "
                f"expected {expected!r}, fast path gave {self(instruction)!r}"
            )


_COMMA_LEVEL = re.compile(r",(?! )")


def category_path(categories: str) -> list[str]:
    """Levels of a category string: ``"A > B"`` (our format) or LC-Rec's ``"A,B,C"``; a comma followed by a
    space stays inside a name (``"Tapes, Adhesives & Sealants"``)."""
    parts = categories.split(">") if ">" in categories else _COMMA_LEVEL.split(categories)
    return [p.strip() for p in parts if p.strip()]


def item_text(row: dict[str, str], fields: list[str], max_description_words: int) -> str:
    """``Title (brand: X; categories: Y; description: Z)`` with empty fields left out."""
    title = row.get("title", "").strip()
    extras = []
    for name in fields[1:]:
        value = (row.get(name) or "").strip()
        if name == "categories":
            value = " > ".join(category_path(value))
        if name == "description" and max_description_words:
            words = value.split()
            value = " ".join(words[:max_description_words]) + (" ..." if len(words) > max_description_words else "")
        if value:
            extras.append(f"{name}: {value}")
    return f"{title} ({'; '.join(extras)})" if extras else title

