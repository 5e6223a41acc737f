"""``scenario_prompts``: seqrec and validation prompts name the target scenario and tag history items."""

from __future__ import annotations

import pytest

from recdata import RecDataset, leave_one_out_split
from sft_tasks import TaskConfig, build_task_datasets, seqrec_scenario_prompt
from sft_tasks.context import TaskContext, Window
from sft_tasks.sequential import build_seqrec, build_validation
from tests.conftest import TINY_ITEMS, TINY_SEQUENCES
from tests.sft_tasks.sft_helpers import TINY_CODES, code_string

C = {item: code_string(codes) for item, codes in TINY_CODES.items()}
SCEN = {"i1": "lab", "i2": "safety", "i3": "safety", "i4": "lab", "i5": "lab", "i6": "safety", "i7": "safety",
        "i8": "lab"}


@pytest.fixture
def scenario_split():
    seqs = [{**s, "scenarios": [SCEN[i] for i in s["item_ids"]]} for s in TINY_SEQUENCES]
    return leave_one_out_split(RecDataset.from_records(TINY_ITEMS, seqs, name="tiny").validate(), max_history=20)


def test_windows_carry_labels_and_prompts_name_the_scenario(scenario_split, tiny_item_tokenizer, tiny_hf_tokenizer):
    cfg = TaskConfig(max_templates=1, scenario_prompts=True, weights='{"seqrec": 1.0}')
    ctx = TaskContext(cfg, scenario_split, tiny_item_tokenizer, tiny_hf_tokenizer)
    assert ctx.windows[0] == Window("u1", ("i1",), "i2", ("lab",), "safety", position=1)
    task = build_seqrec(ctx)
    assert task.prompts[1] == seqrec_scenario_prompt(["i1", "i2"], ["lab", "safety"], "safety", tiny_item_tokenizer,
                                                     tiny_hf_tokenizer)
    assert f"{C['i1']} (lab), {C['i2']} (safety). Predict the next item in safety." in task.prompts[1]
    assert task.completions[1] == C["i3"]
    valid = build_validation(ctx)  # u1's valid target i4 is a lab item
    assert valid["prompt"][0].rstrip().endswith("### Response:")
    assert "Predict the next item in lab." in valid["prompt"][0] and f"{C['i3']} (safety)" in valid["prompt"][0]
    dsd = build_task_datasets(cfg, scenario_split, tiny_item_tokenizer, tiny_hf_tokenizer)
    assert all(" in " in p for p in dsd["train"]["prompt"])


def test_scenario_prompts_need_labels(tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer):
    with pytest.raises(ValueError, match="scenario_prompts is set but dataset 'tiny' has no scenario labels"):
        TaskContext(TaskConfig(scenario_prompts=True), tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer)


def test_plain_prompts_unchanged_on_a_scenario_split(scenario_split, tiny_split, tiny_item_tokenizer,
                                                     tiny_hf_tokenizer):
    cfg = TaskConfig(max_templates=1)
    with_labels = build_seqrec(TaskContext(cfg, scenario_split, tiny_item_tokenizer, tiny_hf_tokenizer))
    without = build_seqrec(TaskContext(cfg, tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer))
    assert with_labels.prompts == without.prompts
