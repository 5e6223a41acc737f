"""LLM-written queries: cached by (model, prompt, settings); the model loads only for missing answers."""

from __future__ import annotations

import json

import pytest

from alignrec.cli import main
from sft_tasks.query_gen import clean_query, generate_queries

ITEMS = {"a": {"title": "Pipette tips", "brand": "LabCo", "categories": "Lab", "description": "sterile"},
         "b": {"title": "Gloves", "brand": "", "categories": "", "description": ""}}


@pytest.mark.parametrize(("answer", "expected"), [
    ('"sterile tips for lab pipettes"\nmore text', "sterile tips for lab pipettes"),
    ("Query: nitrile gloves", "nitrile gloves"),
    ("   ", ""),
    ("word " * 30, ""),
])
def test_clean_query(answer, expected):
    assert clean_query(answer) == expected


def test_generation_is_cached_and_resumed(tmp_path):
    calls = []

    def make_generator():
        def generate(prompts):
            calls.append(list(prompts))
            return [f"query {len(p)}" for p in prompts]
        return generate

    cache = tmp_path / "q.cache.jsonl"
    first = generate_queries(ITEMS, ["a"], cache, "m1", make_generator)
    assert len(calls) == 1 and "Pipette tips" in calls[0][0]
    both = generate_queries(ITEMS, ["a", "b"], cache, "m1", make_generator)
    assert len(calls) == 2 and len(calls[1]) == 1 and "Gloves" in calls[1][0]  # only the missing item
    assert both["a"] == first["a"] and set(both) == {"a", "b"}
    generate_queries(ITEMS, ["a", "b"], cache, "m1", lambda: pytest.fail("model loaded although all cached"))
    generate_queries(ITEMS, ["a"], cache, "m2", make_generator)  # another model: regenerated
    assert len(calls) == 3
    with open(cache, "a") as f:
        f.write('{"key": "torn')  # an interrupted write is skipped, not fatal
    assert generate_queries(ITEMS, ["a", "b"], cache, "m1", make_generator) == both


def test_cli_with_tiny_model_writes_a_query_file(tmp_path, tiny_split, tiny_model_dir):
    tiny_split.save(tmp_path / "split")
    out = tmp_path / "queries.json"
    argv = ["tasks", "queries", "--split_dir", str(tmp_path / "split"), "--llm_dir", str(tiny_model_dir),
            "--output_file", str(out), "--max_items", "3", "--max_new_tokens", "3"]
    assert main(argv) == 0
    queries = json.loads(out.read_text())
    assert set(queries) <= {"i1", "i2", "i3"}
    lines = (tmp_path / "queries.json.cache.jsonl").read_text().splitlines()
    assert [json.loads(x)["item_id"] for x in lines] == ["i1", "i2", "i3"]
