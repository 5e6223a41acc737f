"""A run trained on user-token prompts (``tasks.user_tokens``): the tokens sit before the code tokens, their rows
train, and evaluation and the cache prompt each known user with their token (an unknown user without one)."""

from __future__ import annotations

import json

import torch

from tests.trainer.conftest import run_entry


def _build_tasks(tmp_path, tiny_split, item_tokenizer, tiny_model_dir):
    from transformers import AutoTokenizer

    from sft_tasks import TaskConfig, build_tasks, compute_stats, save_task_build

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = TaskConfig(weights='{"seqrec": 1.0}', prompt_format="plain", max_templates=1, user_tokens=3,
                     preference_negatives=0,
                     queries_per_item=0, query_keywords=0)
    build = build_tasks(cfg, tiny_split, item_tokenizer, tok)
    return save_task_build(build, tmp_path / "user_tasks", compute_stats(build, item_tokenizer, tok)), build


def test_user_token_rows_train_and_every_consumer_prompts_with_them(monkeypatch, base_argv, tmp_path, tiny_split,
                                                                   item_tokenizer, tiny_model_dir):
    import inference.recommender
    from inference.cache.model_recommender import model_recommend_fn
    from sft_tasks import seqrec_prompt
    from trainer import load_for_inference, read_user_knowledge
    from trainer.config import ModelArguments
    from trainer.model_setup import setup_model

    tasks_dir, build = _build_tasks(tmp_path, tiny_split, item_tokenizer, tiny_model_dir)
    argv = [*base_argv, "--max_steps", "4"]
    argv[argv.index("--dataset_dir") + 1] = str(tasks_dir)
    argv[argv.index("--max_length") + 1] = "256"
    run_entry(monkeypatch, argv)
    run = tmp_path / "run"
    manifest = json.loads((run / "alignrec_train.json").read_text())
    assert manifest["user_tokens"] == 3
    assert read_user_knowledge(run) == build.user_knowledge

    model, tok, itok = load_for_inference(run, device="cpu")
    user_ids = tok.convert_tokens_to_ids(["<user_0>", "<user_1>", "<user_2>"])
    first_code = itok.code_token_ids(tok)[0]
    assert user_ids == [first_code - 3, first_code - 2, first_code - 1]  # before the codes, which stay last

    start = setup_model(ModelArguments(model_name_or_path=str(tiny_model_dir)), itok, torch.float32, seed=0,
                        user_tokens=3)
    before = start.model.get_input_embeddings().weight.detach()
    after = model.get_input_embeddings().weight.detach()
    assert start.user_token_ids == user_ids
    assert not torch.allclose(after[user_ids], before[user_ids])  # the user rows trained ...
    assert torch.equal(after[:user_ids[0]], before[:user_ids[0]])  # ... the base vocabulary's did not (LoRA)

    seen: list[str] = []

    def fake_recommend(model, hf_tokenizer, item_tokenizer, prompts, k, num_beams, **_):
        seen.extend(prompts)
        return [[] for _ in prompts]

    monkeypatch.setattr(inference.recommender, "recommend", fake_recommend)
    fn, _ = model_recommend_fn(run, k=1, num_beams=4, batch_size=2, exclude_history=True)
    fn(["u4", "u9"], [["i1", "i2"], ["i1", "i2"]])
    assert seen == [seqrec_prompt(["i1", "i2"], itok, tok, user_knowledge="<user_0>", prompt_format="plain"),
                    seqrec_prompt(["i1", "i2"], itok, tok, prompt_format="plain")]  # u9 never trained: no token
    ids = tok(seen[0], add_special_tokens=False)["input_ids"]
    assert user_ids[0] in ids and not set(user_ids[1:]) & set(ids)
