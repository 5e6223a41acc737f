"""The ``tasks`` stage: the SFT task mixture (``alignrec tasks build``).

Reads: the split, the item tokenizer, the training model's HF tokenizer and the ``tasks`` section (``TaskConfig``);
with ``use_knowledge`` the knowledge stage's texts. Writes: ``dataset/`` (a ``DatasetDict``).
"""

from __future__ import annotations

from typing import Any

from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    build_section,
    cold_mask_key,
    task_classes,
    train_model_dir,
)


def _tasks_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    from alignrec.llm.hf_tokenizer import CODES_ONLY

    hf = train_model_dir(run_cfg)
    return {"query_file": section.get("query_file", ""), "hf_tokenizer": "" if hf == CODES_ONLY else hf}


def run_tasks(ctx: StageContext) -> dict[str, Any]:
    from sft_tasks.cli import run_build

    injected = {
        "split_dir": str(ctx.upstream("data") / "split"),
        "item_tokenizer_dir": str(ctx.upstream("tokenizer") / "item_tokenizer"),
        "output_dir": str(ctx.out_dir / "dataset"),
        "hf_tokenizer_dir": train_model_dir(ctx.run_config),
    }
    if ctx.config.get("use_knowledge"):
        injected["user_knowledge_dir"] = str(ctx.upstream("knowledge") / "extract")
    (cfg,) = build_section(task_classes(), ctx.config, injected, "tasks")
    stats = run_build(cfg)
    train = stats["train"]
    return {"train_examples": train["total"]["count"], "validation_examples": stats["validation"]["total"]["count"],
            "per_task": {t: v["count"] for t, v in train.items() if t != "total"}}


def _tasks_key(section: dict[str, Any], run_cfg: Any) -> dict[str, Any]:
    """The tokenizer the tasks are tokenised with, with ``use_knowledge`` the knowledge section, and under the
    cold-item protocol the cold items the build now records for training to mask (``cold_mask_key``)."""
    knowledge = ({"knowledge": run_cfg.sections.get("knowledge", {}), "knowledge_prompts": 2}
                 if section.get("use_knowledge") else {})
    return {"hf_tokenizer": train_model_dir(run_cfg), **knowledge, **cold_mask_key(run_cfg)}


# version 2: validation rows carry user_id / history / target (ranking validation)
# version 3: data text in every row goes through InertText (a title holding an added token or the code pattern
# <a_1> is escaped; control characters are stripped), so a run built before rebuilds its rows (issue 33)
# knowledge_prompts 2 (runs with use_knowledge only): the build keeps its prompt texts for the model, and
# the preference pairs carry them too

STAGE = Stage("tasks", run_tasks, ("data", "tokenizer"), version=3, inputs=_tasks_inputs, extra_key=_tasks_key)
