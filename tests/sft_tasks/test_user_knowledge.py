"""User-knowledge text (REKI, `alignrec knowledge extract`) in front of the seqrec prompts: exact, train = inference."""

from __future__ import annotations

import json

from sft_tasks import TaskConfig
from sft_tasks.context import TaskContext
from sft_tasks.sequential import build_seqrec, build_validation, seqrec_prompt
from tests.sft_tasks.sft_helpers import TINY_CODES, code_string

C = {item: code_string(codes) for item, codes in TINY_CODES.items()}
SYSTEM = "You are a recommender system. Items are written as code tokens."


def _knowledge_dir(tmp_path):
    # u1 trains on i1 i2 i3, u4 on i8 i4 i1 i2; their knowledge read all but the last training item
    rows = [{"user_id": "u1", "text": "likes lab glassware and sterile tips", "group": None, "history_items": 2},
            {"user_id": "u4", "text": "one two three four five six", "group": None, "history_items": 3}]
    (tmp_path / "user_knowledge.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_seqrec_prompts_carry_user_knowledge(tmp_path, tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer):
    cfg = TaskConfig(max_templates=1, queries_per_item=0, query_keywords=0,
                     user_knowledge_dir=str(_knowledge_dir(tmp_path)), user_knowledge_words=4)
    ctx = TaskContext(cfg, tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer)
    task = build_seqrec(ctx)
    assert task.example(1)["prompt"] == (
        f"{SYSTEM}\n\n### Instruction:\nAbout this user: likes lab glassware and ...\n"
        f"The user has interacted with these items in order: {C['i1']}, {C['i2']}. Predict the next item."
        "\n\n### Response:\n")
    assert "About this user: one two three four ...\n" in task.example(5)["prompt"]  # cut to 4 words
    assert "About this user" not in task.example(2)["prompt"]  # u2 has no knowledge
    # windows whose target the knowledge already read (u1 -> i2, u4 -> i4, i1) never carry it: no target leaks
    assert [("About this user" in task.example(r)["prompt"]) for r in range(6)] == [False, True, False, False,
                                                                                   False, True]
    validation = build_validation(ctx)
    valid = tiny_split.eval_examples("valid")
    for row, (user, history) in enumerate(zip(valid["user_id"], valid["history"], strict=True)):
        expected = seqrec_prompt(list(history), tiny_item_tokenizer, tiny_hf_tokenizer,
                                 user_knowledge=ctx.knowledge(user))
        assert validation[row]["prompt"] == expected  # inference builds the same prompt


def test_build_saves_the_prompt_texts_and_preference_pairs_carry_them(tmp_path, tiny_split, tiny_item_tokenizer,
                                                                       tiny_hf_tokenizer):
    from sft_tasks.builder import build_tasks, compute_stats, save_task_build
    from sft_tasks.context import USER_KNOWLEDGE_FILE

    cfg = TaskConfig(max_templates=1, queries_per_item=0, query_keywords=0, preference_negatives=1,
                     user_knowledge_dir=str(_knowledge_dir(tmp_path)), user_knowledge_words=4)
    build = build_tasks(cfg, tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer)
    # exactly the texts the prompts carry: cut to 4 words, users without knowledge absent
    assert build.user_knowledge == {"u1": "likes lab glassware and ...", "u4": "one two three four ..."}
    out = save_task_build(build, tmp_path / "tasks", compute_stats(build, tiny_item_tokenizer, tiny_hf_tokenizer))
    assert json.loads((out / USER_KNOWLEDGE_FILE).read_text()) == build.user_knowledge
    from sft_tasks.negatives import make_sampler
    from sft_tasks.preference import build_validation_preference

    ctx = TaskContext(cfg, tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer)
    last = {"u1": C["i2"], "u4": C["i1"]}  # the last history item of each user's one knowledge-bearing window
    for pairs in (build.preference, build_validation_preference(ctx, make_sampler(ctx))):  # DPO trains on both
        for user, prompt in zip(pairs["user_id"], pairs["prompt"], strict=True):
            text = build.user_knowledge.get(user)
            training_leak_free = pairs is not build.preference or (text is not None and
                                                                   f"{last[user]}. Predict" in prompt)
            assert ("About this user:" in prompt) == (text is not None and training_leak_free), prompt
            assert text is None or not training_leak_free or f"About this user: {text}\n" in prompt
        assert set(pairs["user_id"]) & set(build.user_knowledge)
        assert set(pairs["user_id"]) - set(build.user_knowledge)  # users without knowledge: bare prompts


def test_build_without_knowledge_writes_no_file(tmp_path, tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer):
    from sft_tasks.builder import build_tasks, compute_stats, save_task_build
    from sft_tasks.context import USER_KNOWLEDGE_FILE

    cfg = TaskConfig(max_templates=1, queries_per_item=0, query_keywords=0)
    build = build_tasks(cfg, tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer)
    out = save_task_build(build, tmp_path / "tasks", compute_stats(build, tiny_item_tokenizer, tiny_hf_tokenizer))
    assert build.user_knowledge == {} and not (out / USER_KNOWLEDGE_FILE).exists()
