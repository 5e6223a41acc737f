"""Knowledge extraction: collective = one prompt per cluster + every member assigned; no leak; cost report."""

from __future__ import annotations

import json

import pytest

from alignrec.knowledge import (
    ExtractConfig,
    build_prompts,
    extract_knowledge,
    read_knowledge,
    read_user_history_items,
)
from recdata.errors import UserError
from tests.knowledge.conftest import scripted_generator

FACTORS = "use case,material"


def _cfg(tmp_path, **kw):
    return ExtractConfig(split_dir="x", out_dir=str(tmp_path / "k"), factors=FACTORS, **kw)


def test_collective_one_prompt_per_cluster_every_member_assigned(tmp_path, tiny_split):
    cfg = _cfg(tmp_path, mode="collective", item_clusters=3, user_clusters=2)
    out = tmp_path / "k"
    out.mkdir()
    asked: list[str] = []
    cost = extract_knowledge(cfg, tiny_split, out, "m", scripted_generator(asked))
    assert len(asked) == 3 + 2 and len(set(asked)) == 5  # one prompt per cluster, nothing twice
    items, users = read_knowledge(out, "item"), read_knowledge(out, "user")
    assert set(items) == set(tiny_split.dataset.item_ids())  # every item assigned
    # users with one training item keep nothing once the last one is held out (user_holdout_items=1)
    assert set(users) == {u for u, seq in tiny_split.train_sequences() if len(seq) > 1} == {"u1", "u2", "u4"}
    groups = {json.loads(line)["group"] for line in (out / "item_knowledge.jsonl").read_text().splitlines()}
    assert groups == {"item-cluster-0", "item-cluster-1", "item-cluster-2"}
    assert len(set(items.values())) == 3 and len(set(users.values())) == 2  # members share their cluster's answer
    assert cost["item"]["llm_calls"] == 3 and cost["user"]["llm_calls"] == 2 and cost["item"]["clusters"] == 3
    assert json.loads((out / "factors.json").read_text()) == {"factors": ["use case", "material"], "source": "config"}


def test_individual_sample_and_cost_extrapolation(tmp_path, tiny_split):
    cfg = _cfg(tmp_path, mode="individual", max_items=3, max_users=2)
    out = tmp_path / "k"
    out.mkdir()
    asked: list[str] = []
    cost = extract_knowledge(cfg, tiny_split, out, "m", scripted_generator(asked))
    assert len(read_knowledge(out, "item")) == 3 and len(read_knowledge(out, "user")) == 2 and len(asked) == 5
    assert cost["item"]["population"] == 8 and cost["item"]["full_population_calls_est"] == 8
    again: list[str] = []
    extract_knowledge(cfg, tiny_split, out, "m", scripted_generator(again))  # resumed from the cache
    assert again == []


@pytest.mark.parametrize("mode", ["individual", "collective"])
def test_user_knowledge_never_reads_valid_or_test_items(tmp_path, leak_split, mode):
    cfg = _cfg(tmp_path, mode=mode, item_clusters=2, user_clusters=2, group_examples=50)
    prompts, assignment, _ = build_prompts(cfg, leak_split, "user", ["use case"])
    assert prompts and len(assignment) == 5
    for prompt in prompts.values():
        assert "LEAK" not in prompt, prompt
    # the training items do reach the prompts (the test would pass vacuously otherwise)
    assert any("Pipette tips" in p for p in prompts.values())


@pytest.mark.parametrize("holdout", [1, 0])
def test_user_knowledge_reads_the_training_part_minus_its_holdout(tmp_path, leak_split, holdout):
    """u1 trains on i1..i5 (Beaker set last): holdout 1 leaves it out and records history_items = 4."""
    cfg = _cfg(tmp_path, mode="individual", kinds="user", user_holdout_items=holdout)
    out = tmp_path / "k"
    out.mkdir()
    asked: list[str] = []
    extract_knowledge(cfg, leak_split, out, "m", scripted_generator(asked))
    u1 = next(p for p in asked if "Pipette tips" in p and "Digital scale" in p)
    assert ("Beaker set" in u1) == (holdout == 0)
    rows = {json.loads(line)["user_id"]: json.loads(line) for line in (out / "user_knowledge.jsonl").open()}
    train = dict(leak_split.train_sequences())
    assert {u: r["history_items"] for u, r in rows.items()} == {u: len(s) - holdout for u, s in train.items()}
    assert read_user_history_items(out)["u1"] == 5 - holdout


def test_user_rows_without_history_items_are_refused_in_one_line(tmp_path):
    (tmp_path / "user_knowledge.jsonl").write_text(json.dumps({"user_id": "u1", "text": "x", "group": None}) + "\n")
    with pytest.raises(UserError, match="user_knowledge.jsonl:1: .*rerun `alignrec knowledge extract`"):
        read_user_history_items(tmp_path)
    assert read_user_history_items(tmp_path, required=False) is None


def test_factors_from_the_llm_and_a_useless_answer(tmp_path, tiny_split):
    out = tmp_path / "k"
    out.mkdir()
    cfg = ExtractConfig(split_dir="x", out_dir=str(out), kinds="item", mode="individual", max_items=1)

    def make():
        return lambda prompts: ["1. Price\n2. Quality" if "factors" in p else "an item" for p in prompts]

    extract_knowledge(cfg, tiny_split, out, "m", make)
    assert json.loads((out / "factors.json").read_text())["factors"] == ["price", "quality"]
    with pytest.raises(UserError, match="--factors"):
        extract_knowledge(cfg, tiny_split, out, "other-model", lambda: (lambda prompts: ["" for _ in prompts]))
