"""Token statistics: exact without sampling, exact counts and bounded work with sampling."""

from __future__ import annotations

import datasets
import numpy as np

from sft_tasks.stats import dataset_stats, token_lengths, tokenizer_with_codes


def make_ds(n_a: int, n_b: int) -> datasets.Dataset:
    prompts = [f"Recommend item {'the next ' * (i % 4)}" for i in range(n_a)] + ["What is the title?"] * n_b
    return datasets.Dataset.from_dict(
        {"prompt": prompts, "completion": ["yes"] * n_a + ["no"] * n_b, "task": ["a"] * n_a + ["b"] * n_b}
    )


def test_exact_stats_match_direct_tokenization(tiny_hf_tokenizer):
    ds = make_ds(9, 3)
    stats = dataset_stats(ds, tiny_hf_tokenizer)
    direct = [len(tiny_hf_tokenizer(p, add_special_tokens=False)["input_ids"]) for p in ds["prompt"]]
    assert token_lengths(tiny_hf_tokenizer, ds["prompt"][:]).tolist() == direct
    assert stats["a"]["count"] == 9 and stats["b"]["count"] == 3 and stats["total"]["count"] == 12
    assert stats["a"]["prompt_tokens"]["max"] == max(direct[:9])
    assert stats["a"]["prompt_tokens"]["mean"] == round(float(np.mean(direct[:9])), 2)
    completion = [len(tiny_hf_tokenizer(c, add_special_tokens=False)["input_ids"]) for c in ds["completion"]]
    assert stats["total"]["total_tokens"] == sum(direct) + sum(completion) + 12  # + one EOS each


def test_sampled_stats_keep_counts_exact(tiny_hf_tokenizer):
    stats = dataset_stats(make_ds(40, 3), tiny_hf_tokenizer, sample=5, seed=1)
    assert (stats["a"]["count"], stats["a"]["sampled"]) == (40, 5)
    assert (stats["b"]["count"], stats["b"]["sampled"]) == (3, 3)
    assert stats["total"]["count"] == 43 and stats["total"]["sampled"] == 8


def test_tokenizer_with_codes_leaves_the_callers_tokenizer_alone(tiny_hf_tokenizer, tiny_item_tokenizer):
    size = len(tiny_hf_tokenizer)
    extended = tokenizer_with_codes(tiny_hf_tokenizer, tiny_item_tokenizer)
    assert len(tiny_hf_tokenizer) == size and len(extended) == size + 7
    assert tokenizer_with_codes(extended, tiny_item_tokenizer) is extended
