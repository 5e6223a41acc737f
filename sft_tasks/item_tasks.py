"""Item-level tasks: ``item2code`` (item text -> code) and ``code2item`` (code -> title)."""

from __future__ import annotations

from sft_tasks.base import ListTask
from sft_tasks.context import TaskContext
from sft_tasks.formatting import item_text


def build_item2code(ctx: TaskContext) -> ListTask:
    """One example per coded catalogue item with a title."""
    fields = ctx.cfg.text_fields()
    items = [i for i in ctx.item_ids if ctx.items[i]["title"].strip()]
    templates = ctx.templates("item2code")
    pick = ctx.rng("item2code").integers(0, len(templates), size=len(items))
    prompts = [
        ctx.format(templates[t].format(item=item_text(ctx.items[i], fields, ctx.cfg.max_description_words)))
        for i, t in zip(items, pick, strict=True)
    ]
    return ListTask("item2code", prompts, [ctx.code[i] for i in items])


def build_code2item(ctx: TaskContext) -> ListTask:
    items = [i for i in ctx.item_ids if ctx.items[i]["title"].strip()]
    templates = ctx.templates("code2item")
    pick = ctx.rng("code2item").integers(0, len(templates), size=len(items))
    prompts = [ctx.format(templates[t].format(code=ctx.code[i])) for i, t in zip(items, pick, strict=True)]
    return ListTask("code2item", prompts, [ctx.items[i]["title"].strip() for i in items])
