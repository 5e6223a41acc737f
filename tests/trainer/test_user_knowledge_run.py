"""A run trained on knowledge-prefixed prompts keeps the texts, and every consumer builds the same prompts."""

from __future__ import annotations

import json

from tests.trainer.conftest import run_entry

KNOWLEDGE = {"u1": "likes sterile lab glassware ...", "u3": "buys pipettes in bulk"}


def _capture_prompts(monkeypatch) -> list[str]:
    """Replace the beam search by a recorder: the test is about the prompts the model is asked with."""
    import inference.recommender

    seen: list[str] = []

    def fake_recommend(model, hf_tokenizer, item_tokenizer, prompts, k, num_beams, **_):
        seen.extend(prompts)
        return [[] for _ in prompts]

    monkeypatch.setattr(inference.recommender, "recommend", fake_recommend)
    return seen


def test_run_keeps_user_knowledge_and_evaluation_and_cache_prompt_with_it(monkeypatch, base_argv, tmp_path,
                                                                          task_dataset_dir, tiny_split):
    from alignrec.cli import main
    from inference.cache.model_recommender import model_recommend_fn
    from sft_tasks import seqrec_prompt
    from sft_tasks.context import USER_KNOWLEDGE_FILE
    from trainer import load_for_inference, read_user_knowledge

    (task_dataset_dir / USER_KNOWLEDGE_FILE).write_text(json.dumps(KNOWLEDGE))
    run_entry(monkeypatch, [*base_argv, "--max_steps", "2", "--merge", "true"])
    run = tmp_path / "run"
    manifest = json.loads((run / "alignrec_train.json").read_text())
    assert manifest["user_knowledge_file"] == USER_KNOWLEDGE_FILE
    assert read_user_knowledge(run) == read_user_knowledge(run / "merged") == KNOWLEDGE  # merging keeps them

    _, tok, itok = load_for_inference(run, device="cpu")
    seen = _capture_prompts(monkeypatch)
    tiny_split.save(tmp_path / "split")
    assert main(["evaluate", "--model_dir", str(run), "--split_dir", str(tmp_path / "split"), "--out_dir",
                 str(tmp_path / "eval"), "--ks", "1", "--num_beams", "4", "--popularity_baseline", "false"]) == 0
    test = tiny_split.eval_examples("test")
    expected = [seqrec_prompt(list(h), itok, tok, user_knowledge=KNOWLEDGE.get(u))
                for u, h in zip(test["user_id"], test["history"], strict=True)]
    assert seen == expected
    assert sum("About this user:" in p for p in seen) == sum(u in KNOWLEDGE for u in test["user_id"]) == 2

    seen.clear()
    fn, _ = model_recommend_fn(run, k=1, num_beams=4, batch_size=2, exclude_history=True)
    fn(["u1", "u2"], [["i1", "i2"], ["i1", "i2"]])
    assert seen == [seqrec_prompt(["i1", "i2"], itok, tok, user_knowledge=KNOWLEDGE["u1"]),
                    seqrec_prompt(["i1", "i2"], itok, tok)]


def test_run_without_user_knowledge_has_none(tmp_path):
    from trainer import read_user_knowledge

    (tmp_path / "alignrec_train.json").write_text(json.dumps({"format_version": 1, "kind": "full"}))
    assert read_user_knowledge(tmp_path) is None
