"""The tasks build streams its rows to disk (issue 34: the stage held every row, 5.8 GB at 100k users).

The rows it writes are the rows of the list-based reference below (the build before streaming), in the same
order; the files are those the in-memory build saves, byte for byte; and the build never holds every row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import datasets
import pytest

from sft_tasks import TaskConfig, build_tasks, compute_stats, save_task_build
from sft_tasks.base import ListTask, TaskMixture
from sft_tasks.builder import write_tasks
from sft_tasks.context import TaskContext, Windows
from sft_tasks.formatting import codes_prompt
from sft_tasks.negatives import make_sampler
from sft_tasks.sequential import SeqrecFullTask, build_fusion, seqrec_instruction, seqrec_window_prompt
from sft_tasks.templates import HISTORY_SEPARATOR
from tests.sft_tasks.sft_helpers import synthetic_split

CONFIGS = {  # the scale recipe's mixture (codes-only model), and codes prompts beside a text task
    "codes_only": ({"weights": '{"seqrec_full": 1.0}', "max_history": 4}, "codes_only"),
    "codes_mix": ({"weights": '{"seqrec_full": 1, "fusion": 0.5}', "prompt_format": "codes", "max_history": 3,
                   "preference_negatives": 2, "negative_strategy": "popular", "stats_sample": 7}, "tiny"),
}


def _tokenizer(kind: str, tiny_hf_tokenizer):
    from alignrec.llm import build_codes_only_tokenizer

    return build_codes_only_tokenizer() if kind == "codes_only" else tiny_hf_tokenizer


# ---- the reference: the list-based build as it was before streaming --------------------------------------
def _reference_seqrec_full(ctx: TaskContext) -> ListTask:
    from sft_tasks.sequential import full_sequence_windows

    prompts, completions, users = [], [], []
    for user_id, items in ctx.train_sequences:
        for window in full_sequence_windows(list(items), ctx.max_history + 1):
            if ctx.cfg.prompt_format == "codes":
                prompts.append(codes_prompt([ctx.code[window[0]]], ctx.format.hf_tokenizer))
                completions.append("".join(ctx.code[i] for i in window[1:]))
            else:
                prompts.append(ctx.format(seqrec_instruction(ctx.code[window[0]])))
                completions.append(HISTORY_SEPARATOR.join(ctx.code[i] for i in window[1:]))
            users.append(user_id)
    return ListTask("seqrec_full", prompts, completions, users)


def _reference_windows(ctx: TaskContext) -> list[tuple]:
    out = []
    for user_id, items in ctx.train_sequences:
        for i in range(1, len(items)):
            out.append((user_id, tuple(items[max(0, i - ctx.max_history):i]), items[i], i))
    return out


def _reference(ctx: TaskContext) -> dict[str, list[dict]]:
    cfg = ctx.cfg
    tasks = [_reference_seqrec_full(ctx)] + ([build_fusion(ctx)] if "fusion" in cfg.active_weights() else [])
    mixture = TaskMixture(tasks, cfg.active_weights(), seed=cfg.seed, total=cfg.mixture_size)
    train = [mixture.example(i) for i in range(len(mixture))]
    examples = ctx.split.eval_examples("valid")
    validation = [{"prompt": seqrec_window_prompt(ctx, h[-ctx.max_history:], cfg.validation_template_index, None),
                   "completion": ctx.code[t], "task": "seqrec", "user_id": u, "history": list(h[-ctx.max_history:]),
                   "target": t}
                  for u, h, t in zip(examples["user_id"], examples["history"], examples["target"], strict=True)]
    sampler, rng = make_sampler(ctx), ctx.rng("preference")
    train_items = dict(ctx.train_sequences)
    preference = []
    for user_id, history, target, position in _reference_windows(ctx):
        prompt = seqrec_window_prompt(ctx, history, int(rng.integers(len(ctx.templates("seqrec")))),
                                      ctx.knowledge(user_id, position))
        for negative in sampler.sample(target, frozenset(train_items[user_id]), cfg.preference_negatives, rng):
            preference.append({"prompt": prompt, "chosen": ctx.code[target], "rejected": ctx.code[negative],
                               "user_id": user_id, "strategy": sampler.strategy})
    return {"train": train, "validation": validation, "preference": preference}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_written_rows_equal_the_reference_and_the_in_memory_build(tmp_path, tiny_hf_tokenizer, name):
    overrides, kind = CONFIGS[name]
    split, item_tokenizer = synthetic_split(num_users=60, max_history=6)
    hf_tokenizer = _tokenizer(kind, tiny_hf_tokenizer)
    cfg = TaskConfig(**overrides)
    stats = write_tasks(cfg, split, item_tokenizer, hf_tokenizer, tmp_path / "streamed")
    written = datasets.load_from_disk(str(tmp_path / "streamed"))
    preference = datasets.load_from_disk(str(tmp_path / "streamed" / "preference"))
    expected = _reference(TaskContext(cfg, split, item_tokenizer, hf_tokenizer))
    assert written["train"].to_list() == expected["train"]
    assert written["validation"].to_list() == expected["validation"]
    assert preference.to_list() == expected["preference"]
    assert {r["task"] for r in expected["train"]} == set(cfg.active_weights())

    # the in-memory build saves the same files, byte for byte, and the same statistics
    build = build_tasks(cfg, split, item_tokenizer, hf_tokenizer)
    saved = save_task_build(build, tmp_path / "in_memory",
                            compute_stats(build, item_tokenizer, hf_tokenizer, cfg.stats_sample, cfg.seed))
    for folder in ("train", "validation", "preference"):
        for path in sorted((saved / folder).glob("*.arrow")):
            assert path.read_bytes() == (tmp_path / "streamed" / folder / path.name).read_bytes(), path
        for meta in ("dataset_info.json",):
            assert (saved / folder / meta).read_text() == (tmp_path / "streamed" / folder / meta).read_text()
    in_memory, on_disk = (json.loads((folder / "stats.json").read_text()) for folder in (saved, tmp_path / "streamed"))
    for s in (in_memory, on_disk):
        s["build"].pop("build_seconds")
    assert in_memory == on_disk and on_disk["train"] == json.loads(json.dumps(stats["train"]))


def test_build_holds_no_list_of_rows(tmp_path, tiny_hf_tokenizer, monkeypatch):
    """Structure, not timing: windows and seqrec_full examples are made on demand, and every output reaches the
    writer as an iterator it pulls one row at a time."""
    from sft_tasks import builder

    split, item_tokenizer = synthetic_split(num_users=30)
    cfg = TaskConfig(weights='{"seqrec_full": 1.0}', prompt_format="codes", max_history=4)
    ctx = TaskContext(cfg, split, item_tokenizer, tiny_hf_tokenizer)
    assert isinstance(ctx.windows, Windows) and not isinstance(ctx.windows, list)
    assert list(ctx.windows) == ctx.windows[:] and ctx.windows[-1] == list(ctx.windows)[-1]
    task = builder.build_seqrec_full(ctx)
    assert isinstance(task, SeqrecFullTask)
    assert not [k for k, v in vars(task).items() if isinstance(v, list | tuple | dict)]  # integers only

    fed = {}
    real = builder.save_dataset_rows

    def spy(rows, features, path, **kwargs):
        assert isinstance(rows, Iterator) and not isinstance(rows, Sequence)
        fed[path.name] = real(rows, features, path, **kwargs)
        return fed[path.name]

    monkeypatch.setattr(builder, "save_dataset_rows", spy)
    stats = write_tasks(cfg, split, item_tokenizer, tiny_hf_tokenizer, tmp_path / "out")
    assert fed == {"train": stats["train"]["total"]["count"], "validation": stats["validation"]["total"]["count"],
                   "preference": stats["preference"]["pairs"]}
    assert fed["train"] == len(task) and fed["preference"] == len(ctx.windows)
