"""Sequential tasks: ``seqrec`` (codes -> next code), ``fusion`` (titles <-> codes), and the validation set."""

from __future__ import annotations

from typing import Any

import datasets

from sft_tasks.base import FEATURES, ListTask
from sft_tasks.context import TaskContext
from sft_tasks.formatting import PromptFormatter
from sft_tasks.templates import HISTORY_SEPARATOR, TEMPLATES

_FORMATTERS: dict[tuple[int, str | None], PromptFormatter] = {}


def _formatter(hf_tokenizer: Any) -> PromptFormatter:
    key = (id(hf_tokenizer), getattr(hf_tokenizer, "chat_template", None))
    if key not in _FORMATTERS:
        _FORMATTERS.clear()  # one tokenizer at a time; never keep stale ones alive
        _FORMATTERS[key] = PromptFormatter(hf_tokenizer)
    return _FORMATTERS[key]


def seqrec_instruction(history_codes: str, template_index: int = 0) -> str:
    options = TEMPLATES["seqrec"]
    if not 0 <= template_index < len(options):
        raise ValueError(f"template_index must be in [0, {len(options)}), got {template_index}")
    return options[template_index].format(history=history_codes)


def seqrec_prompt(history: list[str], item_tokenizer: Any, hf_tokenizer: Any, template_index: int = 0) -> str:
    """The exact prompt ``seqrec`` trains on for ``history`` (oldest first; truncate before calling).

    The expected completion is ``item_tokenizer.item_to_string(target)``.
    """
    if not history:
        raise ValueError("seqrec_prompt needs a non-empty history; a user with no items has nothing to condition on")
    codes = HISTORY_SEPARATOR.join(item_tokenizer.item_to_string(i) for i in history)
    return _formatter(hf_tokenizer)(seqrec_instruction(codes, template_index))


def build_seqrec(ctx: TaskContext) -> ListTask:
    n_templates = len(ctx.templates("seqrec"))
    choice = ctx.rng("seqrec").integers(0, n_templates, size=len(ctx.windows))
    prompts = [ctx.format(seqrec_instruction(ctx.codes_text(w.history), int(t))) for w, t in zip(ctx.windows, choice, strict=True)]
    return ListTask("seqrec", prompts, [ctx.code[w.target] for w in ctx.windows], [w.user_id for w in ctx.windows])


def build_fusion(ctx: TaskContext) -> ListTask:
    """Two examples per window: titles -> next code, then codes -> next title."""
    t2c, c2t = ctx.templates("fusion_title2code"), ctx.templates("fusion_code2title")
    rng = ctx.rng("fusion")
    pick_a = rng.integers(0, len(t2c), size=len(ctx.windows))
    pick_b = rng.integers(0, len(c2t), size=len(ctx.windows))
    prompts, completions, users = [], [], []
    for w, a, b in zip(ctx.windows, pick_a, pick_b, strict=True):
        prompts.append(ctx.format(t2c[a].format(history=ctx.titles_text(w.history))))
        completions.append(ctx.code[w.target])
        users.append(w.user_id)
        title = ctx.items[w.target]["title"].strip()
        if title:
            prompts.append(ctx.format(c2t[b].format(history=ctx.codes_text(w.history))))
            completions.append(title)
            users.append(w.user_id)
    return ListTask("fusion", prompts, completions, users)


def build_validation(ctx: TaskContext) -> datasets.Dataset:
    """``seqrec`` on the valid targets (history = everything before the target, truncated)."""
    examples = ctx.split.eval_examples("valid")
    index = ctx.cfg.validation_template_index
    prompts, completions = [], []
    for history, target in zip(examples["history"], examples["target"], strict=True):
        history = history[-ctx.max_history:]
        prompts.append(ctx.format(seqrec_instruction(ctx.codes_text(history), index)))
        completions.append(ctx.code[target])
    return datasets.Dataset.from_dict(
        {"prompt": prompts, "completion": completions, "task": ["seqrec"] * len(prompts)}, features=FEATURES
    )
