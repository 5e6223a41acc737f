"""TaskMixture: exact allocation, weights honoured, stratified repeats, determinism; config validation."""

from __future__ import annotations

from collections import Counter

import pytest

from sft_tasks import ListTask, TaskConfig, TaskMixture
from sft_tasks.base import allocate


def make_task(name: str, n: int) -> ListTask:
    return ListTask(name, [f"{name}-p{i}" for i in range(n)], [f"{name}-c{i}" for i in range(n)])


def test_allocate_multiplier_and_total_modes():
    sizes = {"a": 10, "b": 4, "c": 0}
    assert allocate(sizes, {"a": 1.0, "b": 2.5}, 0) == {"a": 10, "b": 10}
    assert allocate(sizes, {"a": 0.5, "b": 0.0}, 0) == {"a": 5}
    assert allocate(sizes, {"a": 1.0, "b": 1.0}, 7) == {"a": 4, "b": 3}  # largest remainder, tie -> first
    assert allocate(sizes, {"a": 3.0, "b": 1.0, "c": 5.0}, 1000) == {"a": 750, "b": 250}  # empty task dropped


@pytest.mark.parametrize("total", [0, 999])
def test_mixture_honours_weights_and_repeats_evenly(total):
    tasks = [make_task("a", 50), make_task("b", 7), make_task("c", 30)]
    weights = {"a": 2.0, "b": 3.0, "c": 0.5}
    mix = TaskMixture(tasks, weights, seed=3, total=total)
    ds = mix.to_dataset()
    counts = Counter(ds["task"])
    if total:
        for name, w in weights.items():  # within one example of the exact share
            assert abs(counts[name] - total * w / sum(weights.values())) <= 1
        assert len(ds) == total
    else:
        assert counts == {"a": 100, "b": 21, "c": 15}
    # stratified: an example repeats floor(n/len) or ceil(n/len) times, never more
    for task in tasks:
        n = counts[task.name]
        reps = Counter(p for p, t in zip(ds["prompt"], ds["task"], strict=True) if t == task.name)
        assert set(reps.values()) <= {n // len(task), n // len(task) + 1}
        assert all(p.startswith(task.name) for p in reps)
    # completions stay paired with their prompts
    assert all(p.replace("-p", "-c") == c for p, c in zip(ds["prompt"], ds["completion"], strict=True))


def test_mixture_is_deterministic_for_a_seed():
    tasks = [make_task("a", 20), make_task("b", 9)]
    first = TaskMixture(tasks, {"a": 1.0, "b": 1.5}, seed=7).to_dataset().to_dict()
    again = TaskMixture(tasks, {"a": 1.0, "b": 1.5}, seed=7).to_dataset().to_dict()
    other = TaskMixture(tasks, {"a": 1.0, "b": 1.5}, seed=8).to_dataset().to_dict()
    assert first == again
    assert first["prompt"] != other["prompt"]
    assert sorted(first["task"]) == sorted(other["task"])


def test_mixture_rejects_weights_for_unbuilt_tasks():
    with pytest.raises(ValueError, match=r"not built"):
        TaskMixture([make_task("a", 3)], {"a": 1.0, "zzz": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": '{"seqrec": 1, "bogus": 1}'}, "unknown task"),
        ({"weights": '{"seqrec": -1}'}, "non-negative"),
        ({"weights": '{"seqrec": 0}'}, "at least one task"),
        ({"weights": "seqrec=1"}, "JSON object"),
        ({"negative_strategy": "smart"}, "negative_strategy"),
        ({"item_text_fields": "brand,title"}, "start with 'title'"),
        ({"choice_candidates": 1}, "choice_candidates"),
        ({"hard_prefix_levels": 0}, "hard_prefix_levels"),
        ({"validation_template_index": 99}, "validation_template_index"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskConfig(**kwargs)


def test_config_accepts_weights_as_mapping():
    assert TaskConfig(weights={"seqrec": 2, "choice": 0}).active_weights() == {"seqrec": 2.0}


def test_full_build_is_deterministic_for_a_seed(synthetic, tiny_hf_tokenizer):
    from sft_tasks import build_tasks

    split, item_tokenizer = synthetic
    first = build_tasks(TaskConfig(seed=1), split, item_tokenizer, tiny_hf_tokenizer)
    again = build_tasks(TaskConfig(seed=1), split, item_tokenizer, tiny_hf_tokenizer)
    other = build_tasks(TaskConfig(seed=2), split, item_tokenizer, tiny_hf_tokenizer)
    assert first.datasets["train"].to_dict() == again.datasets["train"].to_dict()
    assert first.preference.to_dict() == again.preference.to_dict()
    assert first.datasets["train"]["prompt"] != other.datasets["train"]["prompt"]
    assert first.datasets["validation"].to_dict() == other.datasets["validation"].to_dict()  # fixed paraphrase
