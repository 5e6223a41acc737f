"""Turn an instruction into the model's prompt (``prompt_format``): ``chat`` = the tokenizer's chat template with our
system prompt (``PLAIN_FORMAT`` with it when the tokenizer has no template); ``plain`` = the instruction alone and a
newline; ``codes`` = ``plain`` for text tasks, while the codes-only tasks (seqrec, seqrec_full, validation) are
prompted by their codes alone (``codes_prompt``), so one training row holds a whole item sequence whose every prefix
is the decoding prompt of the next item.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from alignrec.llm.inert_text import InertText
from sft_tasks.templates import PLAIN_FORMAT, SYSTEM_PROMPT

logger = logging.getLogger(__name__)

_SENTINEL = "\u241fAlignRec instruction\u241f"  # mixed case: a template that upper/lowercases fails

# How prompts are written (TaskConfig.prompt_format); the tasks build records it and a trained run's manifest
# carries it, so every consumer of the run prompts as the tasks did (``seqrec_prompt(..., prompt_format=)``).
PROMPT_FORMATS = ("chat", "plain", "codes")
DEFAULT_PROMPT_FORMAT = "chat"
PLAIN_SUFFIX = "\n"  # plain / codes formats: ends the instruction on a token boundary before the completion


def check_prompt_format(prompt_format: str) -> str:
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {list(PROMPT_FORMATS)}, got {prompt_format!r}")
    return prompt_format


def codes_prompt(codes: list[str], hf_tokenizer: Any, user_knowledge_prefix: str = "") -> str:
    """The ``codes`` format's prompt: the tokenizer's BOS token (an anchor the pretrained model has always seen
    first; none when it has no BOS), the optional user-knowledge line, then the item codes back to back (every code
    has the same length, so no separator is needed). A history's prompt is a prefix of any longer history's, which
    is what lets ``seqrec_full`` train every next item of a sequence in one row."""
    bos = getattr(hf_tokenizer, "bos_token", None) or ""
    return f"{bos}{user_knowledge_prefix}{''.join(codes)}"


class PromptFormatter:
    """Formats instructions for one HF tokenizer.

    The chat template is rendered once around a sentinel and split into a prefix and a suffix, so formatting
    100k examples is string concatenation rather than 100k Jinja renders. ``check`` compares against a real
    render, and the builder calls it on one example per task.
    """

    def __init__(self, hf_tokenizer: Any, prompt_format: str = DEFAULT_PROMPT_FORMAT) -> None:
        self.hf_tokenizer = hf_tokenizer
        self.prompt_format = check_prompt_format(prompt_format)
        self.uses_chat_template = prompt_format == "chat" and bool(getattr(hf_tokenizer, "chat_template", None))
        # Every piece of data text (titles, queries, user knowledge, scenario names) goes through ``inert``
        # before it enters an instruction: it can never become a special, chat-control or code token.
        self.inert = InertText(hf_tokenizer)
        self._system_in_user = False
        if prompt_format != "chat":  # no template, no system text: the instruction, then a newline
            self.prefix, self.suffix = "", PLAIN_SUFFIX
        elif self.uses_chat_template:
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

