"""A run trained on ``prompt_format: codes`` rows (seqrec_full, packed rows) records the format, and ranking
validation, evaluation, the cache and ``alignrec recommend`` all prompt with the codes format."""

from __future__ import annotations

import json

from tests.trainer.conftest import logged, run_entry
from tests.trainer.test_user_knowledge_run import _capture_prompts


def _codes_tasks(tmp_path, tiny_split, item_tokenizer, tiny_chat_tokenizer):
    from sft_tasks import TaskConfig, build_tasks, save_task_build

    cfg = TaskConfig(weights='{"seqrec_full": 1}', prompt_format="codes", max_history=3, preference_negatives=0)
    build = build_tasks(cfg, tiny_split, item_tokenizer, tiny_chat_tokenizer)
    return save_task_build(build, tmp_path / "codes_tasks", stats={}), build.datasets["validation"]


def test_codes_run_prompts_the_same_way_everywhere(monkeypatch, base_argv, tmp_path, tiny_split, item_tokenizer,
                                                    tiny_chat_tokenizer):
    from alignrec.cli import main
    from inference import TrainedRun
    from inference.cache.model_recommender import model_recommend_fn
    from sft_tasks import seqrec_prompt

    dataset_dir, validation = _codes_tasks(tmp_path, tiny_split, item_tokenizer, tiny_chat_tokenizer)
    run_entry(monkeypatch, [*base_argv, "--dataset_dir", str(dataset_dir), "--max_steps", "2",
                            "--completion_only_loss", "true", "--packing", "true", "--packed_rows", "true",
                            "--eval_strategy", "steps", "--eval_steps", "2", "--ranking_eval_users", "3",
                            "--ranking_eval_beams", "10"])
    run = tmp_path / "run"
    assert json.loads((run / "alignrec_train.json").read_text())["prompt_format"] == "codes"
    assert set(logged(run, "eval_ranking_ndcg@10")) == {2}  # ranking validation ran on the codes-format rows

    loaded = TrainedRun.load(run, device="cpu")
    assert loaded.prompt_format == "codes"
    tok, itok = loaded.hf_tokenizer, loaded.item_tokenizer
    row = validation[0]
    expected = seqrec_prompt(list(row["history"]), itok, tok, prompt_format="codes")
    assert expected == row["prompt"]  # ranking validation's prompt is the decoding prompt

    seen = _capture_prompts(monkeypatch)
    loaded.recommender(1, 4)([row["user_id"]], [list(row["history"])])  # evaluation and the pipeline's rows
    fn, _ = model_recommend_fn(run, k=1, num_beams=4, batch_size=2, exclude_history=True)  # the cache
    fn([row["user_id"]], [list(row["history"])])
    assert main(["recommend", "--model_dir", str(run), "--history", ",".join(row["history"]), "--k", "1",
                 "--num_beams", "4", "--device", "cpu"]) == 0
    assert seen == [expected] * 3
