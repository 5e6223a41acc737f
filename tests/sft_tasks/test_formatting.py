"""Prompt formatting: chat template (with our system prompt) vs plain format; seqrec_prompt == training prompt."""

from __future__ import annotations

import pytest

from sft_tasks import PromptFormatter, TaskConfig, build_task_datasets, seqrec_prompt
from sft_tasks.templates import SYSTEM_PROMPT
from tests.sft_tasks.sft_helpers import TINY_CODES, code_string

C1, C2 = code_string(TINY_CODES["i1"]), code_string(TINY_CODES["i2"])


def test_chat_template_prompt_is_exact(tiny_chat_tokenizer, tiny_item_tokenizer):
    prompt = seqrec_prompt(["i1", "i2"], tiny_item_tokenizer, tiny_chat_tokenizer)
    assert prompt == (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
        f"The user has interacted with these items in order: {C1}, {C2}. Predict the next item.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # the fast path equals a real render
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"The user has interacted with these items in order: {C1}, {C2}. Predict the next item."}]
    assert prompt == tiny_chat_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_plain_format_without_chat_template(tiny_hf_tokenizer, tiny_item_tokenizer):
    prompt = seqrec_prompt(["i1"], tiny_item_tokenizer, tiny_hf_tokenizer, template_index=2)
    assert prompt == (f"{SYSTEM_PROMPT}\n\n### Instruction:\nGiven the purchase sequence {C1}, recommend the next item "
                      "for this user.\n\n### Response:\n")


def test_template_without_system_role_gets_system_text_in_user_turn(tiny_hf_tokenizer):
    tiny_hf_tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "<u>{{ m['content'] }}</u>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    )
    fmt = PromptFormatter(tiny_hf_tokenizer)
    assert fmt("hi") == f"<u>{SYSTEM_PROMPT}\n\nhi</u><a>"
    fmt.check("hi")


def test_template_that_rewrites_content_is_refused(tiny_hf_tokenizer):
    tiny_hf_tokenizer.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(ValueError, match="verbatim"):
        PromptFormatter(tiny_hf_tokenizer)


def test_seqrec_prompt_matches_the_training_prompt(tiny_split, tiny_item_tokenizer, tiny_chat_tokenizer):
    cfg = TaskConfig(weights='{"seqrec": 1}', max_templates=1)
    dsd = build_task_datasets(cfg, tiny_split, tiny_item_tokenizer, tiny_chat_tokenizer)
    expected = {(seqrec_prompt(h, tiny_item_tokenizer, tiny_chat_tokenizer), tiny_item_tokenizer.item_to_string(t))
                for h, t in [(["i1"], "i2"), (["i1", "i2"], "i3"), (["i2"], "i3"), (["i8"], "i4"), (["i8", "i4"], "i1"),
                             (["i8", "i4", "i1"], "i2")]}
    assert set(zip(dsd["train"]["prompt"], dsd["train"]["completion"], strict=True)) == expected
    valid = dsd["validation"][0]
    assert valid["prompt"] == seqrec_prompt(["i1", "i2", "i3"], tiny_item_tokenizer, tiny_chat_tokenizer)


@pytest.mark.parametrize(("history", "index", "message"), [([], 0, "non-empty"), (["i1"], 9, "template_index")])
def test_seqrec_prompt_rejects_bad_input(tiny_item_tokenizer, tiny_hf_tokenizer, history, index, message):
    with pytest.raises(ValueError, match=message):
        seqrec_prompt(history, tiny_item_tokenizer, tiny_hf_tokenizer, template_index=index)


def test_check_catches_templates_that_depend_on_content(tiny_hf_tokenizer):
    tiny_hf_tokenizer.chat_template = "{% for m in messages %}[{{ m['content'] | trim }}]{% endfor %}"
    fmt = PromptFormatter(tiny_hf_tokenizer)
    fmt.check("no padding")
    with pytest.raises(ValueError, match="beyond plain substitution"):
        fmt.check("  padded  ")
