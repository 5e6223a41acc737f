"""scripts/gen_results_tables.py: the results page's generated blocks, rendered from committed bench outputs
(exact lines on tiny cold runs), refused across splits, restored when edited by hand, and fresh on the real page."""

from __future__ import annotations

import json

import pytest

from tests.recdata.test_cold_slice import cold_split_of
from tests.scripts import load_script
from tests.scripts.test_bench_cold import fake_run

SPEC = "cold llm=docs/data/a.json scratch=docs/data/b.json"


@pytest.fixture()
def gen(tmp_path, tiny_split, monkeypatch):
    """The generator with its repository root at ``tmp_path``, two bench_cold outputs on one split under docs/data."""
    module = load_script("gen_results_tables")
    bench = load_script("bench_cold")
    monkeypatch.setattr(module, "REPO", tmp_path)
    split = cold_split_of(tiny_split, "i5")
    data = tmp_path / "docs" / "data"
    data.mkdir(parents=True)
    for name in ("a", "b"):
        fake_run(tmp_path / name, split)
        result = bench.cold_rows(tmp_path / name, "test")
        if name == "b":  # the second run's ours differs; its `other` row repeats the first file's name
            result["rows"]["alignrec"]["all"]["recall@10"] = {"mean": 0.5, "low": 0.125, "high": 0.875}
            result["rows"]["other"]["all"]["recall@10"] = {"mean": 0.9, "low": 0.9, "high": 0.9}
        (data / f"{name}.json").write_text(json.dumps(result))
    return module


def page(body: str = "stale\n") -> str:
    return f"# Results\n\nBefore.\n\n<!-- generated: {SPEC} -->\n{body}<!-- end generated -->\n\nAfter.\n"


def test_cold_block_merges_the_files_rows_exactly(gen):
    text = gen.regenerate(page())
    lines = text.splitlines()
    assert lines[:5] == ["# Results", "", "Before.", "", f"<!-- generated: {SPEC} -->"]
    assert lines[-3:] == ["<!-- end generated -->", "", "After."]
    assert ("5 test examples, 4 with a cold target (no training interaction): 2 of them a withheld item (1 items "
            "withheld in all)") in text
    rows = [line.split(" | ")[0].lstrip("| ") for line in lines if line.startswith("| ") and " | 5 | " in line]
    assert rows == ["alignrec (llm)", "other", "alignrec (scratch)"]  # b's `other` is not shown twice
    scratch = next(line for line in lines if line.startswith("| alignrec (scratch) |"))
    assert scratch.startswith("| alignrec (scratch) | 5 | 0.5000 [0.1250, 0.8750] |")
    other = next(line for line in lines if line.startswith("| other |") and " | 5 | " in line)
    assert other.startswith("| other | 5 | 0.2000 [")  # the first file's row, not b's 0.9
    assert "Paired bootstrap of ours (alignrec (llm)) - row" in text and "| other | +0.6000 [" in text
    assert "stale" not in text
    assert gen.regenerate(text) == text  # rendering is a fixed point


def test_check_fails_on_a_hand_edit_and_the_rewrite_restores_it(gen, tmp_path):
    fresh = gen.regenerate(page())
    path = tmp_path / "results.md"
    path.write_text(fresh.replace("0.5000 [0.1250, 0.8750]", "0.6000 [0.1250, 0.8750]"))
    assert gen.main(["--page", str(path), "--check"]) == 1
    assert gen.main(["--page", str(path)]) == 0
    assert path.read_text() == fresh
    assert gen.main(["--page", str(path), "--check"]) == 0


def test_refuses_another_split_an_unknown_kind_and_a_missing_file(gen, tmp_path):
    b = tmp_path / "docs" / "data" / "b.json"
    other = json.loads(b.read_text())
    other["split"]["cold_targets"] = 3
    b.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="b.json: another split, part or metrics"):
        gen.regenerate(page())
    with pytest.raises(ValueError, match="unknown kind 'hot'"):
        gen.regenerate(page().replace("generated: cold", "generated: hot"))
    with pytest.raises(FileNotFoundError, match="c.json does not exist"):
        gen.regenerate(page().replace("b.json", "c.json"))
    with pytest.raises(ValueError, match="is not LABEL=PATH"):
        gen.regenerate(page().replace("scratch=", "scratch:"))


def test_the_committed_results_page_is_fresh():
    gen = load_script("gen_results_tables")
    text = gen.PAGE.read_text(encoding="utf-8")
    assert gen.regenerate(text) == text, (
        "docs/results.md has a generated block that differs from its docs/data source: run "
        "`python scripts/gen_results_tables.py` and commit the page")


def scenarios_result() -> dict:
    """A two-row bench_scenarios output at K = 10: a trained row with an LLM cost, and a per-scenario SASRec."""
    def metrics(r, n):
        return {"recall@10": r, "ndcg@10": n}

    backbone = {"ks": [10], "n_examples": 3, "overall": metrics(0.5, 0.25),
                "slices": {"target_scenario": {"food": {"n": 2, **metrics(0.5, 0.125)}}},
                "within_scenario": {"ks": [10], "n_examples": 3, "overall": metrics(0.75, 0.5), "by_scenario": {}},
                "train_info": {"seconds": 12.4, "epochs": 3, "best_valid_ndcg@10": 0.0859},
                "llm_cost": {"total": {"llm_calls": 366, "generated_tokens": 18496}, "wall_seconds": 440.97,
                             "user_holdout_items": 1}}
    per_scenario = {"ks": [10], "within_scenario": {"ks": [10], "n_examples": 3, "overall": metrics(1.0, 0.0),
                                                    "by_scenario": {}},
                    "train_info": {"food": {"seconds": 2.0, "epochs": 1, "best_valid_ndcg@10": 0.125}}}
    stats = {"name": "FK", "users": 3, "items": 4, "interactions": 1200,
             "scenarios": {"food": {"items": 2, "interactions": 700}}}
    return {"args": {"kcore": 5}, "stats": stats, "reports": {"backbone": backbone, "per": per_scenario}}


def test_scenarios_block_renders_table_training_and_cost_exactly(gen, tmp_path):
    (tmp_path / "docs" / "data" / "s.json").write_text(json.dumps(scenarios_result()))
    spec = "scenarios run=docs/data/s.json"
    text = gen.regenerate(f"<!-- generated: {spec} -->\n<!-- end generated -->\n")
    assert text.splitlines()[1:-1] == [
        "FK (kcore 5; 3 users, 4 items, 1,200 interactions; food: 2 items / 700 interactions; 3 test targets); "
        "test part, full ranking, history excluded.",
        "",
        "| recommender | ranking | scenario | n | Recall@10 | NDCG@10 |",
        "| --- | --- | --- | --- | --- | --- |",
        "| backbone | whole_catalogue | all | 3 | 0.5000 | 0.2500 |",
        "| backbone | whole_catalogue | food | 2 | 0.5000 | 0.1250 |",
        "| backbone | within_scenario | all | 3 | 0.7500 | 0.5000 |",
        "| per | within_scenario | all | 3 | 1.0000 | 0.0000 |",
        "",
        "Training (early stopping on valid NDCG@10): backbone 12 s, 3 epochs, best valid NDCG@10 0.0859; per (food) "
        "2 s, 1 epochs, best valid NDCG@10 0.1250.",
        "",
        "LLM cost of backbone: 366 calls, 18,496 generated tokens, 441 s (user prompts hold out each user's last 1 "
        "training item(s)).",
    ]
    assert gen.regenerate(text) == text
    with pytest.raises(ValueError, match="renders one bench_scenarios output, got 2"):
        gen.regenerate(text.replace(spec, spec + " b=docs/data/s.json"))
