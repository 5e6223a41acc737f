"""amazon18-scientific with the real SmolLM2 tokenizer (slow): invariants of a full build at real scale."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.conftest import shared_dataset_dir

pytestmark = pytest.mark.slow


def test_scientific_build(tmp_path):
    from transformers import AutoTokenizer

    from recdata import leave_one_out_split
    from recdata.loaders import load_dataset
    from recdata.paths import default_llm_dir
    from sft_tasks import TaskConfig, build_tasks, compute_stats, seqrec_prompt
    from sft_tasks.context import TaskContext
    from tokenization import ItemTokenizer

    if not default_llm_dir().is_dir():
        pytest.skip(f"{default_llm_dir()} not present")
    split = leave_one_out_split(load_dataset(shared_dataset_dir("amazon18-scientific")), max_history=20)
    ids = split.dataset.item_ids()
    flat = np.random.default_rng(0).choice(256**4, len(ids), replace=False)
    codes = np.stack([(flat // 256**k) % 256 for k in (3, 2, 1, 0)], axis=1)
    item_tokenizer = ItemTokenizer.from_codes(ids, codes, [256] * 4)
    hf_tokenizer = AutoTokenizer.from_pretrained(str(default_llm_dir()))
    cfg = TaskConfig(stats_sample=2000)
    build = build_tasks(cfg, split, item_tokenizer, hf_tokenizer)
    train, valid = build.datasets["train"], build.datasets["validation"]
    assert Counter(train["task"]) == build.info["mixture_counts"]
    assert len(valid) == len(split.dataset.sequences)
    assert "You are a helpful AI assistant named SmolLM" not in train[0]["prompt"]  # our system prompt replaces it
    history = split.eval_examples("valid")[0]["history"]
    assert valid[0]["prompt"] == seqrec_prompt(history, item_tokenizer, hf_tokenizer)
    ctx = TaskContext(cfg, split, item_tokenizer, hf_tokenizer)
    held = {}
    for part in ("valid", "test"):
        for row in split.eval_examples(part):
            held.setdefault(row["user_id"], set()).add(row["target"])
    train_items = dict(split.train_sequences())
    for w in ctx.windows:  # held-out items reach a window only where the user also had them in training (repeats)
        leaked = held[w.user_id] & ({w.target} | set(w.history))
        assert leaked <= set(train_items[w.user_id])
    stats = compute_stats(build, item_tokenizer, hf_tokenizer, sample=2000)
    assert stats["train"]["seqrec"]["completion_tokens"]["max"] == 4  # one token per code level
