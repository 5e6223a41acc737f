"""User tokens (``tasks.user_tokens``): one token per training user in front of each of their seqrec prompts, exact
assignment, the same prompt at training and decoding, and data text that can never become one."""

from __future__ import annotations

import json
import re

import pytest

from sft_tasks import (
    TaskConfig,
    build_tasks,
    compute_stats,
    read_build_user_tokens,
    save_task_build,
    seqrec_prompt,
)
from sft_tasks.context import TaskContext
from sft_tasks.sequential import build_seqrec, build_seqrec_full
from sft_tasks.user_tokens import (
    add_user_tokens,
    assign_user_tokens,
    is_user_token,
    user_token,
)

CODE = re.compile(r"<a_\d+><b_\d+><c_\d+>")
USER = re.compile(r"<user_\d+>")


def test_assignment_is_sorted_and_shares_tokens_round_robin_past_the_limit():
    assert assign_user_tokens(["u3", "u1", "u2", "u1"], 5) == {"u1": "<user_0>", "u2": "<user_1>", "u3": "<user_2>"}
    assert assign_user_tokens(["u3", "u1", "u2", "u4"], 2) == {"u1": "<user_0>", "u2": "<user_1>", "u3": "<user_0>",
                                                               "u4": "<user_1>"}
    with pytest.raises(ValueError, match=">= 1"):
        assign_user_tokens(["u1"], 0)
    assert is_user_token("<user_12>") and not is_user_token("<a_12>") and not is_user_token("x <user_1>")


def test_user_tokens_go_before_the_code_tokens(tiny_hf_tokenizer, tiny_item_tokenizer):
    base = len(tiny_hf_tokenizer)
    assert add_user_tokens(tiny_hf_tokenizer, 3) == [base, base + 1, base + 2]
    assert add_user_tokens(tiny_hf_tokenizer, 3) == [base, base + 1, base + 2]  # idempotent
    codes = tiny_item_tokenizer.add_to_tokenizer(tiny_hf_tokenizer)
    assert codes[0] == base + 3  # the code tokens stay last (new items' tokens follow them)
    with pytest.raises(ValueError, match="before the item code tokens"):
        add_user_tokens(tiny_hf_tokenizer, 4)


def test_data_text_never_becomes_a_user_token(tiny_hf_tokenizer):
    from alignrec.llm.inert_text import InertText

    add_user_tokens(tiny_hf_tokenizer, 2)
    text = InertText(tiny_hf_tokenizer)("buys <user_1> and <user_77>")
    assert "<user_1>" not in text and "<user_77>" not in text
    ids = tiny_hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_hf_tokenizer.convert_tokens_to_ids("<user_1>") not in ids


def test_every_row_of_a_user_starts_with_their_token_and_decoding_prompts_the_same(
        tmp_path, tiny_split, tiny_item_tokenizer, tiny_chat_tokenizer):
    """Training rows as TRL tokenizes them: BOS, the user's token, then codes; after every item of a row the
    tokens so far are exactly the decoding prompt of that user's history (``seqrec_prompt`` with the token)."""
    itok = tiny_item_tokenizer
    cfg = TaskConfig(weights='{"seqrec_full": 1, "seqrec": 1}', prompt_format="codes", max_history=3,
                     user_tokens=3, preference_negatives=0)
    build = build_tasks(cfg, tiny_split, itok, tiny_chat_tokenizer)
    # u1..u5 train; 3 tokens: u4 shares u1's, u5 shares u2's
    assert build.user_knowledge == {"u1": "<user_0>", "u2": "<user_1>", "u3": "<user_2>", "u4": "<user_0>",
                                    "u5": "<user_1>"}
    out = save_task_build(build, tmp_path / "tasks", compute_stats(build, itok, tiny_chat_tokenizer))
    assert read_build_user_tokens(out) == 3 and read_build_user_tokens(tmp_path) == 0
    assert json.loads((out / "user_knowledge.json").read_text()) == build.user_knowledge

    tok = tiny_chat_tokenizer
    user_ids = add_user_tokens(tok, 3)
    itok.add_to_tokenizer(tok)
    ctx = TaskContext(cfg, tiny_split, itok, tiny_chat_tokenizer)
    rows = [(task.example(i), user) for task in (build_seqrec_full(ctx), build_seqrec(ctx))
            for i, user in enumerate(task.users)]
    assert sorted(r["prompt"] + r["completion"] for r, _ in rows) == sorted(
        r["prompt"] + r["completion"] for r in build.datasets["train"])  # the build's rows
    for row, user in rows:
        token = build.user_knowledge[user]
        text = row["prompt"] + row["completion"]
        items = [itok.string_to_item(code) for code in CODE.findall(text)]
        ids = tok(text + tok.eos_token, add_special_tokens=False)["input_ids"]
        assert ids[:2] == [tok.bos_token_id, tok.convert_tokens_to_ids(token)]
        assert sum(i in user_ids for i in ids) == 1  # the token once, in front
        first_target = 1 if row["task"] == "seqrec_full" else len(items) - 1
        for k in range(first_target, len(items)):
            prefix = tok(seqrec_prompt(items[:k], itok, tok, user_knowledge=token, prompt_format="codes"),
                         add_special_tokens=False)["input_ids"]
            assert ids[:len(prefix)] == prefix
    for row in build.datasets["validation"]:  # ranking validation prompts as decoding does, token included
        token = build.user_knowledge[row["user_id"]]
        assert row["prompt"] == seqrec_prompt(list(row["history"]), itok, tok, user_knowledge=token,
                                              prompt_format="codes")
        assert USER.findall(row["prompt"]) == [token]


def test_user_tokens_and_knowledge_text_are_one_or_the_other():
    with pytest.raises(ValueError, match="user_tokens and user_knowledge_dir"):
        TaskConfig(user_tokens=4, user_knowledge_dir="some/folder")
    with pytest.raises(ValueError, match="user_tokens must be >= 0"):
        TaskConfig(user_tokens=-1)
    assert user_token(7) == "<user_7>"
