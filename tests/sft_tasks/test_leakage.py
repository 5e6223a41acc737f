"""No leakage: a user's valid/test targets never reach that user's training examples as completion or history."""

from __future__ import annotations

import pytest

from sft_tasks import TaskConfig, build_task_datasets
from sft_tasks.context import TaskContext
from sft_tasks.negatives import build_binary, build_choice, build_preference, make_sampler
from sft_tasks.sequential import build_fusion, build_seqrec


def held_out(split) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for part in ("valid", "test"):
        for row in split.eval_examples(part):
            out.setdefault(row["user_id"], set()).add(row["target"])
    return out


@pytest.mark.parametrize("strategy", ["random", "popular", "hard"])
def test_no_valid_or_test_target_in_user_training_examples(synthetic, tiny_hf_tokenizer, strategy):
    split, item_tokenizer = synthetic
    ctx = TaskContext(TaskConfig(negative_strategy=strategy, binary_negatives=2), split, item_tokenizer, tiny_hf_tokenizer)
    targets = held_out(split)
    assert sum(len(v) for v in targets.values()) == 2 * 40
    # every user-level task is rendered from these windows
    for w in ctx.windows:
        assert w.target not in targets[w.user_id] and not targets[w.user_id] & set(w.history)
    code = ctx.code
    title = {i: ctx.items[i]["title"] for i in ctx.item_ids}
    checked = 0
    for task in (build_seqrec(ctx), build_fusion(ctx), build_choice(ctx, make_sampler(ctx)), build_binary(ctx, make_sampler(ctx))):
        for i in range(len(task)):
            ex, user = task.example(i), task.users[i]
            for item in targets[user]:
                assert ex["completion"] not in (code[item], title[item]), (task.name, user, item)
                if task.name in ("seqrec", "fusion"):  # prompts there are history only
                    assert code[item] not in ex["prompt"] and f'"{title[item]}"' not in ex["prompt"]
            checked += 1
    assert checked > 500
    pairs = build_preference(ctx, make_sampler(ctx))
    for row in pairs:
        for item in targets[row["user_id"]]:
            assert row["chosen"] != code[item] and code[item] not in row["prompt"]


def test_train_completions_come_from_training_parts_only(synthetic, tiny_hf_tokenizer):
    """Across the whole mixture: item codes completed by user-level tasks are all training targets."""
    split, item_tokenizer = synthetic
    cfg = TaskConfig(weights='{"seqrec": 1, "fusion": 1, "choice": 1}')
    dsd = build_task_datasets(cfg, split, item_tokenizer, tiny_hf_tokenizer)
    train_targets = {item_tokenizer.item_to_string(items[i]) for _, items in split.train_sequences() for i in range(1, len(items))}
    coded = [c for c in dsd["train"]["completion"] if c.startswith("<a_")]
    assert coded and set(coded) <= train_targets
    assert len(dsd["validation"]) == 40
