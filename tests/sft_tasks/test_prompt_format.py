"""``prompt_format`` plain / codes: exact token layouts, seqrec_full rows whose every prefix is the decoding prompt of
the next item, and the build's manifest that carries the format to training and decoding."""

from __future__ import annotations

import re

import pytest

from sft_tasks import (
    TaskConfig,
    build_task_datasets,
    build_tasks,
    read_build_prompt_format,
    save_task_build,
    seqrec_prompt,
    seqrec_scenario_prompt,
)
from sft_tasks.templates import SYSTEM_PROMPT
from tests.sft_tasks.sft_helpers import TINY_CODES, code_string

C1, C2 = code_string(TINY_CODES["i1"]), code_string(TINY_CODES["i2"])
CODE = re.compile(r"<a_\d+><b_\d+><c_\d+>")


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture
def coded_tokenizer(tiny_chat_tokenizer, tiny_item_tokenizer):
    """The tiny tokenizer WITH a chat template (the formats must not use it) and the code tokens added."""
    tiny_item_tokenizer.add_to_tokenizer(tiny_chat_tokenizer)
    return tiny_chat_tokenizer


def _code_ids(tok, itok, item: str) -> list[int]:
    return [tok.convert_tokens_to_ids(t) for t in itok.item_to_tokens(item)]


def test_plain_format_is_the_instruction_and_a_newline(coded_tokenizer, tiny_item_tokenizer):
    tok, itok = coded_tokenizer, tiny_item_tokenizer
    prompt = seqrec_prompt(["i1", "i2"], itok, tok, prompt_format="plain")
    assert prompt == f"The user has interacted with these items in order: {C1}, {C2}. Predict the next item.\n"
    expected = (_ids(tok, "The user has interacted with these items in order: ") + _code_ids(tok, itok, "i1")
                + _ids(tok, ", ") + _code_ids(tok, itok, "i2") + _ids(tok, ". Predict the next item.\n"))
    assert _ids(tok, prompt) == expected  # no template tokens, no system text
    assert SYSTEM_PROMPT not in prompt and "<|im_start|>" not in prompt


def test_codes_format_is_bos_then_the_codes(coded_tokenizer, tiny_item_tokenizer):
    tok, itok = coded_tokenizer, tiny_item_tokenizer
    prompt = seqrec_prompt(["i1", "i2"], itok, tok, template_index=3, prompt_format="codes")  # no template to pick
    assert prompt == f"<|endoftext|>{C1}{C2}"
    assert _ids(tok, prompt) == [tok.bos_token_id, *_code_ids(tok, itok, "i1"), *_code_ids(tok, itok, "i2")]
    with_knowledge = seqrec_prompt(["i1"], itok, tok, user_knowledge="likes lab glass", prompt_format="codes")
    assert with_knowledge == f"<|endoftext|>About this user: likes lab glass\n{C1}"


def _parse_items(text: str, itok) -> list[str]:
    return [itok.string_to_item(code) for code in CODE.findall(text)]


def test_codes_rows_and_the_decoding_prompt_share_every_prefix(tiny_split, tiny_item_tokenizer, tiny_chat_tokenizer):
    """Training rows as TRL tokenizes them (prompt + completion + EOS): after every item of a row, the tokens so
    far are exactly ``seqrec_prompt(items so far, prompt_format="codes")``, and the next tokens are the next item."""
    itok = tiny_item_tokenizer
    cfg = TaskConfig(weights='{"seqrec_full": 1, "seqrec": 1}', prompt_format="codes", max_history=3)
    dsd = build_task_datasets(cfg, tiny_split, itok, tiny_chat_tokenizer)
    tok = tiny_chat_tokenizer
    itok.add_to_tokenizer(tok)
    checked = {"seqrec_full": 0, "seqrec": 0}
    for row in dsd["train"]:
        items = _parse_items(row["prompt"] + row["completion"], itok)
        ids = _ids(tok, row["prompt"] + row["completion"] + tok.eos_token)
        first_target = 1 if row["task"] == "seqrec_full" else len(items) - 1
        assert _ids(tok, row["prompt"]) == _ids(tok, seqrec_prompt(items[:first_target], itok, tok,
                                                                     prompt_format="codes"))
        for k in range(first_target, len(items)):
            prefix = _ids(tok, seqrec_prompt(items[:k], itok, tok, prompt_format="codes"))
            assert ids[:len(prefix)] == prefix
            assert ids[len(prefix):len(prefix) + 3] == _code_ids(tok, itok, items[k])
            checked[row["task"]] += 1
    assert checked["seqrec_full"] == checked["seqrec"] > 0  # both supervise every training transition once
    full = [r for r in dsd["train"] if r["task"] == "seqrec_full"]
    assert max(len(_parse_items(r["completion"], itok)) for r in full) == 3  # windows of max_history + 1 items
    for row in dsd["validation"]:  # ranking validation prompts as decoding does
        assert row["prompt"] == seqrec_prompt(list(row["history"]), itok, tok, prompt_format="codes")


def test_seqrec_full_needs_codes_prompts_on_a_text_llm(tiny_split, tiny_item_tokenizer, tiny_chat_tokenizer):
    from recdata.errors import ConfigError

    for fmt in ("chat", "plain"):
        with pytest.raises(ConfigError, match="prompt_format: codes"):
            build_task_datasets(TaskConfig(weights='{"seqrec_full": 1}', prompt_format=fmt), tiny_split,
                                tiny_item_tokenizer, tiny_chat_tokenizer)


def test_seqrec_full_refuses_user_knowledge_it_cannot_carry(tiny_split, tiny_item_tokenizer, tiny_chat_tokenizer):
    from recdata.errors import ConfigError
    from sft_tasks.context import TaskContext
    from sft_tasks.sequential import build_seqrec_full

    ctx = TaskContext(TaskConfig(weights='{"seqrec_full": 1}', prompt_format="codes"), tiny_split,
                      tiny_item_tokenizer, tiny_chat_tokenizer)
    ctx.user_knowledge = {"u1": "likes lab glass"}
    with pytest.raises(ConfigError, match="user knowledge"):
        build_seqrec_full(ctx)


def test_codes_format_has_no_scenario_text(tiny_item_tokenizer, tiny_chat_tokenizer):
    with pytest.raises(ValueError, match="scenario_prompts"):
        TaskConfig(prompt_format="codes", scenario_prompts=True)
    with pytest.raises(ValueError, match="chat or plain"):
        seqrec_scenario_prompt(["i1"], ["s"], "s", tiny_item_tokenizer, tiny_chat_tokenizer, prompt_format="codes")
    with pytest.raises(ValueError, match="prompt_format"):
        TaskConfig(prompt_format="chatml")


@pytest.mark.parametrize("fmt", ["chat", "plain", "codes"])
def test_build_records_its_prompt_format(tmp_path, tiny_split, tiny_item_tokenizer, tiny_chat_tokenizer, fmt):
    cfg = TaskConfig(weights='{"seqrec": 1}', prompt_format=fmt, preference_negatives=0)
    build = build_tasks(cfg, tiny_split, tiny_item_tokenizer, tiny_chat_tokenizer)
    out = save_task_build(build, tmp_path / "tasks", stats={})
    assert read_build_prompt_format(out) == fmt == build.info["prompt_format"]
    valid = build.datasets["validation"][0]
    assert valid["prompt"] == seqrec_prompt(list(valid["history"]), tiny_item_tokenizer, tiny_chat_tokenizer,
                                            prompt_format=fmt)
    assert read_build_prompt_format(tmp_path) == "chat"  # a build older than the manifest was chat-formatted
