"""Quality regression: the shipped CPU recipe, scaled down, must recover a planted sequential pattern.

Catalogue of 48 items; every user walks ``i -> (i + 7) % 48`` (one 48-cycle, so the next item is never in the
history). The recipe: random unique codes, whole-sequence ``seqrec_full`` task, a Phi decoder with dropout trained from
scratch on the ``codes_only`` tokenizer, best checkpoint by ranking validation (constrained beam search on valid
users), evaluation with exclude_history on the test targets. Popularity is near 1/48 here. The test fails when
training, the task, decoding, history masking or checkpoint selection breaks.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

NUM_ITEMS, NUM_USERS, STEP = 48, 160, 7


def _split():
    from recdata import RecDataset, leave_one_out_split

    rng = np.random.default_rng(0)
    items = [{"item_id": f"i{i}", "title": f"item {i}"} for i in range(NUM_ITEMS)]
    sequences = []
    for u in range(NUM_USERS):
        start, length = int(rng.integers(NUM_ITEMS)), int(rng.integers(5, 10))
        sequences.append({"user_id": f"u{u}", "item_ids": [f"i{(start + STEP * j) % NUM_ITEMS}" for j in range(length)]})
    return leave_one_out_split(RecDataset.from_records(items, sequences, name="planted").validate(), max_history=8)


def _item_tokenizer(item_ids, item_id_level: bool):
    """Random unique 2-level codes (no content shortcut); with ``item_id_level`` the second is the item's own."""
    from tokenization import ItemTokenizer

    rng = np.random.default_rng(1)
    flat = rng.choice(8 * 8, size=len(item_ids), replace=False)
    if item_id_level:  # the shipped layout: a cluster, then the item's own token
        codes = np.stack([flat // 8, np.arange(len(item_ids))], 1).astype(np.int64)
        return ItemTokenizer.from_codes(item_ids, codes, [8, len(item_ids)])
    return ItemTokenizer.from_codes(item_ids, np.stack([flat // 8, flat % 8], 1).astype(np.int64), [8, 8])


@pytest.mark.parametrize("item_head_weight", [0.0, 4.0])  # 4.0: the shipped flat item head (item-id level codes)
def test_shipped_recipe_recovers_a_planted_pattern(tmp_path, monkeypatch, item_head_weight):
    from alignrec.llm.hf_tokenizer import build_codes_only_tokenizer
    from inference import TrainedRun, evaluate_recommender, popularity_recommender, train_popularity
    from sft_tasks import build_task_datasets
    from sft_tasks.config import TaskConfig
    from trainer.callbacks import read_metrics
    from trainer.sft import main

    split = _split()
    item_tok = _item_tokenizer(split.dataset.item_ids(), item_id_level=item_head_weight > 0)
    item_tok.save_pretrained(tmp_path / "item_tokenizer")
    hf_tok = build_codes_only_tokenizer()
    item_tok.add_to_tokenizer(hf_tok)
    dd = build_task_datasets(TaskConfig(weights='{"seqrec_full": 1.0}', max_history=8, stats_sample=0), split,
                             item_tok, hf_tok)
    assert set(dd["train"]["task"]) == {"seqrec_full"}
    dd.save_to_disk(str(tmp_path / "tasks"))
    every = 25 if not item_head_weight else 5  # the item-id layout is perfect by step 25: validate earlier
    argv = [
        "--model_init", "scratch", "--tokenizer_name_or_path", "codes_only", "--finetune_mode", "full",
        "--scratch_architecture", "phi", "--scratch_dropout", "0.1", "--scratch_layers", "2",
        "--scratch_hidden", "64", "--scratch_heads", "2", "--scratch_max_positions", "64",
        "--dataset_dir", str(tmp_path / "tasks"), "--item_tokenizer_dir", str(tmp_path / "item_tokenizer"),
        "--output_dir", str(tmp_path / "run"), "--per_device_train_batch_size", "32", "--learning_rate", "5e-3",
        "--num_train_epochs", "40", "--max_length", "64", "--logging_steps", "10", "--eval_strategy", "steps",
        "--eval_steps", str(every), "--save_strategy", "steps", "--save_steps", str(every), "--save_total_limit", "1",
        "--ranking_eval_users", "60", "--ranking_eval_beams", "10", "--metric_for_best_model",
        "eval_ranking_ndcg@10", "--greater_is_better", "true", "--load_best_model_at_end", "true",
        "--early_stopping_patience", "4", "--seed", "0", "--report_to", "none", "--tensorboard", "false",
        "--dataloader_num_workers", "0", "--max_eval_samples", "64", "--item_head_weight", str(item_head_weight),
    ]
    monkeypatch.setattr(sys, "argv", ["trainer/sft.py", *argv])
    assert main() == 0

    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    ranking = [r["eval_ranking_ndcg@10"] for r in rows if "eval_ranking_ndcg@10" in r]
    assert len(ranking) >= 2 and max(ranking) > ranking[0]  # validated by ranking, and it improved
    run = TrainedRun.load(tmp_path / "run")
    assert run.item_head_weight == (1.0 if item_head_weight else 0.0)  # the run names its decoding (default weight 1)
    catalogue, popularity = split.dataset.item_ids(), train_popularity(split)
    test = split.eval_examples("test")
    ours = evaluate_recommender(run.recommender(10, 10, exclude_history=True),
                                test, (1, 10), catalogue, popularity, show_progress=False)
    pop = evaluate_recommender(popularity_recommender(split, 10, exclude_history=True), test, (1, 10), catalogue,
                               popularity, show_progress=False)
    assert ours["invalid_rate"] == 0.0
    assert ours["overall"]["recall@1"] >= 0.9, ours["overall"]
    assert ours["overall"]["ndcg@10"] > pop["overall"]["ndcg@10"] + 0.5
    # the kept weights are the best validated checkpoint: re-ranking the validation subset reproduces its score
    valid = split.eval_examples("valid")
    again = evaluate_recommender(run.recommender(10, 10, exclude_history=True),
                                 valid, (10,), catalogue, popularity, show_progress=False)
    assert again["overall"]["ndcg@10"] == pytest.approx(max(ranking), abs=0.1)
