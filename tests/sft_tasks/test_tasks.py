"""Exact outputs of each task on the hand-made tiny dataset (plain format, first paraphrase only)."""

from __future__ import annotations

import json

import pytest

from sft_tasks import TaskConfig
from sft_tasks.context import TaskContext, Window
from sft_tasks.item_tasks import build_code2item, build_item2code
from sft_tasks.negatives import build_binary, build_choice, build_preference, make_sampler
from sft_tasks.queries import build_query2item, description_keywords
from sft_tasks.sequential import build_fusion, build_seqrec, build_validation
from tests.sft_tasks.sft_helpers import TINY_CODES, code_string

C = {item: code_string(codes) for item, codes in TINY_CODES.items()}
SYSTEM = "You are a recommender system. Items are written as code tokens."


def plain(instruction: str) -> str:
    return f"{SYSTEM}\n\n### Instruction:\n{instruction}\n\n### Response:\n"


@pytest.fixture
def ctx(tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer):
    cfg = TaskConfig(max_templates=1, queries_per_item=0, query_keywords=0)
    return TaskContext(cfg, tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer)


def test_windows_are_sliding_over_the_training_part_only(ctx):
    assert ctx.windows == [
        Window("u1", ("i1",), "i2", position=1), Window("u1", ("i1", "i2"), "i3", position=2),
        Window("u2", ("i2",), "i3", position=1), Window("u4", ("i8",), "i4", position=1),
        Window("u4", ("i8", "i4"), "i1", position=2), Window("u4", ("i8", "i4", "i1"), "i2", position=3),
    ]  # position: the target's index in the training part (user knowledge joins only targets it did not read)


def test_max_history_truncates_to_most_recent(tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer):
    ctx = TaskContext(TaskConfig(max_history=2), tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer)
    assert ctx.windows[-1] == Window("u4", ("i4", "i1"), "i2", position=3)  # truncation keeps the true index
    assert max(len(w.history) for w in ctx.windows) == 2


def test_seqrec_exact(ctx):
    task = build_seqrec(ctx)
    assert len(task) == 6
    assert task.example(1) == {
        "prompt": plain(f"The user has interacted with these items in order: {C['i1']}, {C['i2']}. Predict the next item."),
        "completion": C["i3"], "task": "seqrec",
    }
    assert task.users == ["u1", "u1", "u2", "u4", "u4", "u4"]


def test_item2code_and_code2item_exact(ctx):
    item2code, code2item = build_item2code(ctx), build_code2item(ctx)
    assert len(item2code) == len(code2item) == 8
    assert item2code.example(0) == {
        "prompt": plain("Which item code corresponds to this item? Pipette tips (brand: LabCo; categories: Lab > Pipettes)"),
        "completion": C["i1"], "task": "item2code",
    }
    assert code2item.example(3) == {"prompt": plain(f"What is the title of item {C['i4']}?"),
                                    "completion": "Digital scale", "task": "code2item"}


def test_item2code_description_is_cut(tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer):
    cfg = TaskConfig(max_templates=1, item_text_fields="title,description", max_description_words=2)
    task = build_item2code(TaskContext(cfg, tiny_split, tiny_item_tokenizer, tiny_hf_tokenizer))
    assert task.example(1)["prompt"] == plain("Which item code corresponds to this item? Nitrile gloves (description: Box of ...)")
    assert task.example(2)["prompt"] == plain("Which item code corresponds to this item? Safety glasses")  # empty description


def test_fusion_exact(ctx):
    task = build_fusion(ctx)
    assert len(task) == 12  # both directions per window
    assert task.example(2)["prompt"] == plain(
        'The user has bought these items in order: "Pipette tips", "Nitrile gloves". Predict the code of the next item.')
    assert task.example(2)["completion"] == C["i3"]
    assert task.example(3)["prompt"] == plain(
        f"The user has interacted with these items in order: {C['i1']}, {C['i2']}. What is the title of the next item?")
    assert task.example(3)["completion"] == "Safety glasses"


def test_query2item_attribute_queries_exact(ctx):
    task = build_query2item(ctx)
    by_item = {}
    for i in range(len(task)):
        ex = task.example(i)
        by_item.setdefault(ex["completion"], []).append(ex["prompt"])
    assert by_item[C["i1"]] == [plain(f"A user is searching for: {q}. Recommend an item.") for q in
                                ["I need something in Pipettes", "Pipettes from LabCo", "an item in the category Lab > Pipettes"]]
    assert len(task) == 8 * 3


def test_query_file_is_merged_and_validated(ctx, tmp_path):
    path = tmp_path / "queries.json"
    path.write_text(json.dumps({"i2": ["hand protection for the lab"]}))
    ctx.cfg.query_file = str(path)
    task = build_query2item(ctx)
    assert len(task) == 8 * 3 + 1
    assert plain("A user is searching for: hand protection for the lab. Recommend an item.") in task.prompts
    path.write_text(json.dumps({"nope": ["x"]}))
    with pytest.raises(ValueError, match="item 'nope' is not in the dataset"):
        build_query2item(ctx)


def test_description_keywords_rank_rare_terms_and_skip_nested():
    assert description_keywords({"a": "alpha beta", "b": "gamma"}, 2) == {"a": ["alpha", "beta"], "b": ["gamma"]}
    docs = {"a": "sterile pipette", "b": "glass pipette", "c": "steel pipette"}  # "pipette" is common
    assert description_keywords(docs, 1) == {"a": ["sterile"], "b": ["glass"], "c": ["steel"]}


def test_binary_labels_and_candidates(ctx):
    ctx.cfg.binary_negatives = 2
    task = build_binary(ctx, make_sampler(ctx))
    assert len(task) == 6 * 3
    assert [task.example(i)["completion"] for i in range(3)] == ["yes", "no", "no"]
    assert task.example(0)["prompt"] == plain(
        f"The user has interacted with these items in order: {C['i1']}. Will the user choose {C['i2']} next? Answer yes or no.")


def test_hard_negatives_on_tiny_share_the_prefix(ctx):
    ctx.cfg.hard_prefix_levels = 2
    sampler = make_sampler(ctx)
    # u4's target i4 = (1,0,0): i5 = (1,0,1) is the only other item with prefix (1,0) and not in u4's train items.
    assert sampler.sample("i4", ctx.user_train_items["u4"], 1, ctx.rng("t")) == ["i5"]


def test_choice_contains_positive_once(ctx):
    task = build_choice(ctx, make_sampler(ctx))
    for i in range(len(task)):
        ex = task.example(i)
        candidates = ex["prompt"].split("candidates: ")[1].split(".\n")[0].split(", ")
        assert candidates.count(ex["completion"]) == 1 and len(set(candidates)) == len(candidates)
        assert 2 <= len(candidates) <= 5


def test_preference_pairs(ctx):
    pairs = build_preference(ctx, make_sampler(ctx))
    assert len(pairs) == 6
    assert pairs[0]["prompt"] == build_seqrec(ctx).example(0)["prompt"]
    assert pairs[0]["chosen"] == C["i2"] and pairs[0]["rejected"] not in (C["i1"], C["i2"], C["i3"])


def test_validation_is_seqrec_on_valid_targets(ctx):
    val = build_validation(ctx)
    assert val["completion"] == [C["i4"], C["i6"], C["i6"], C["i6"], C["i8"]]
    assert val[2]["prompt"] == plain(f"The user has interacted with these items in order: {C['i5']}. Predict the next item.")
    assert set(val["task"]) == {"seqrec"}


def test_uncoded_item_is_rejected(tiny_split, tiny_hf_tokenizer):
    import numpy as np

    from tokenization import ItemTokenizer

    partial = ItemTokenizer.from_codes(["i1", "i2"], np.array([[0], [1]]), [2])
    with pytest.raises(ValueError, match="have no code in the ItemTokenizer"):
        TaskContext(TaskConfig(), tiny_split, partial, tiny_hf_tokenizer)


def test_fusion_history_titles_are_cut(ctx):
    ctx.cfg.max_title_words = 1
    assert build_fusion(ctx).example(2)["prompt"] == plain(
        'The user has bought these items in order: "Pipette ...", "Nitrile ...". Predict the code of the next item.')


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("Lab > Glassware", ["Lab", "Glassware"]),
        ("Industrial & Scientific,Tapes, Adhesives & Sealants,Glue", ["Industrial & Scientific", "Tapes, Adhesives & Sealants", "Glue"]),
        ("", []),
    ],
)
def test_category_path_reads_both_formats(text, levels):
    from sft_tasks.formatting import category_path

    assert category_path(text) == levels
