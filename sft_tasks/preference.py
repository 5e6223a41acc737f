"""DPO preference pairs for the preference stage: training pairs over the training windows and held-out pairs on
the valid targets, built from the split, the ItemTokenizer and the tasks config.

The stage builds them itself (rather than reading ``alignrec tasks build``'s ``preference/``), so a ``beta`` or
negatives sweep never re-runs the task build or SFT. With ``preference_negatives = n`` every prompt appears in
``n`` pairs, one per negative: trl's DPO loss is pairwise, so several negatives per prompt means repeated pairs.
The validation pairs never read the test part; their negatives avoid the user's training items like every other
negative.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import datasets

from recdata import SplitDataset, atomic_path, atomic_write_json
from recdata.errors import ConfigError
from sft_tasks.config import TaskConfig
from sft_tasks.context import TaskContext
from sft_tasks.negatives import PREFERENCE_FEATURES, build_preference, make_sampler
from sft_tasks.sequential import seqrec_window_prompt

__all__ = ["PAIR_COLUMNS", "PAIRS_INFO_FILE", "build_preference_pairs", "build_validation_preference",
           "save_preference_pairs"]

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
PAIRS_INFO_FILE = "pairs_info.json"


def build_validation_preference(ctx: TaskContext, sampler) -> datasets.Dataset:
    """Pairs on the valid targets: the validation seqrec prompt, chosen = valid target, rejected = a negative."""
    rng = ctx.rng("preference_validation")
    examples = ctx.split.eval_examples("valid")
    index = ctx.cfg.validation_template_index
    rows: dict[str, list[str]] = {c: [] for c in PREFERENCE_FEATURES}
    for user, history, target in zip(examples["user_id"], examples["history"], examples["target"], strict=True):
        prompt = seqrec_window_prompt(ctx, history[-ctx.max_history:], index, ctx.knowledge(user))
        for negative in sampler.sample(target, ctx.user_train_items[user], ctx.cfg.preference_negatives, rng):
            rows["prompt"].append(prompt)
            rows["chosen"].append(ctx.code[target])
            rows["rejected"].append(ctx.code[negative])
            rows["user_id"].append(user)
            rows["strategy"].append(sampler.strategy)
    return datasets.Dataset.from_dict(rows, features=PREFERENCE_FEATURES)


def build_preference_pairs(cfg: TaskConfig, split: SplitDataset, item_tokenizer: Any,
                           hf_tokenizer: Any) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    """``DatasetDict(train, validation)`` of pairs and how they were drawn (counts per shared-prefix level)."""
    if cfg.preference_negatives < 1:
        raise ConfigError("preference_negatives must be >= 1 to build preference pairs (it is the number of "
                         "rejected items per prompt)")
    ctx = TaskContext(cfg, split, item_tokenizer, hf_tokenizer)
    sampler = make_sampler(ctx)
    train = build_preference(ctx, sampler)
    train_levels, train_short = dict(sorted(sampler.level_counts.items())), sampler.shortfall
    sampler.level_counts.clear()
    sampler.shortfall = 0
    validation = build_validation_preference(ctx, sampler)
    info = {
        "strategy": cfg.negative_strategy, "negatives_per_prompt": cfg.preference_negatives,
        "prompt_format": cfg.prompt_format,  # must be the SFT run's (its manifest's prompt_format)
        "hard_prefix_levels": cfg.hard_prefix_levels, "train_pairs": len(train), "validation_pairs": len(validation),
        "train_prompts": len(ctx.windows),
        # level L = the negative shares the positive's first L code levels (0 = random fill)
        "train_negatives_by_prefix_level": train_levels, "train_negative_shortfall": train_short,
        "validation_negatives_by_prefix_level": dict(sorted(sampler.level_counts.items())),
    }
    return datasets.DatasetDict({"train": train, "validation": validation}), info


def save_preference_pairs(pairs: datasets.DatasetDict, info: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Atomically write the pairs (``datasets.load_from_disk``) with ``pairs_info.json`` inside."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        pairs.save_to_disk(str(tmp))
        atomic_write_json(tmp / PAIRS_INFO_FILE, info)
    return out_dir
