"""`alignrec tasks build` end to end on the tiny dataset: saved artefacts, stats, YAML config, preview."""

from __future__ import annotations

import json
from collections import Counter

import datasets
import pytest
import yaml

from alignrec.cli import main


@pytest.fixture
def inputs(tmp_path, tiny_split, tiny_item_tokenizer, tiny_chat_tokenizer):
    tiny_split.save(tmp_path / "split")
    tiny_item_tokenizer.save_pretrained(tmp_path / "item_tokenizer")
    tiny_chat_tokenizer.save_pretrained(tmp_path / "llm")
    return {"split_dir": str(tmp_path / "split"), "item_tokenizer_dir": str(tmp_path / "item_tokenizer"),
            "hf_tokenizer_dir": str(tmp_path / "llm"), "output_dir": str(tmp_path / "tasks")}


def test_build_writes_datasets_stats_and_config(inputs, tmp_path, capsys):
    config = tmp_path / "tasks.yaml"
    config.write_text(yaml.safe_dump({**inputs, "weights": {"seqrec": 1, "code2item": 1, "binary": 1}}))
    assert main(["tasks", "build", "--config", str(config), "--preview", "2", "--seed", "5"]) == 0
    out = tmp_path / "tasks"
    dsd = datasets.load_from_disk(str(out))
    assert set(dsd) == {"train", "validation"}
    assert dsd["train"].column_names == ["prompt", "completion", "task"]
    counts = Counter(dsd["train"]["task"])
    assert counts == {"seqrec": 6, "code2item": 8, "binary": 12}
    stats = json.loads((out / "stats.json").read_text())
    assert {k: v["count"] for k, v in stats["train"].items()} == {**counts, "total": 26}
    assert stats["validation"]["total"]["count"] == 5
    # with the code tokens added, a code completion is exactly 3 tokens (one per level)
    assert stats["train"]["seqrec"]["completion_tokens"]["max"] == 3
    resolved = json.loads((out / "resolved_config.json").read_text())["TaskConfig"]
    assert resolved["seed"] == 5 and json.loads(resolved["weights"]) == {"seqrec": 1, "code2item": 1, "binary": 1}
    pairs = datasets.load_from_disk(str(out / "preference"))
    assert len(pairs) == 6 and pairs.column_names[:3] == ["prompt", "chosen", "rejected"]
    printed = capsys.readouterr().out
    assert "seqrec" in printed and printed.count("\n=== [") == 2
    # a rebuild replaces the folder atomically and leaves no temporary siblings
    assert main(["tasks", "build", "--config", str(config), "--weights", '{"seqrec": 2}']) == 0
    assert Counter(datasets.load_from_disk(str(out))["train"]["task"]) == {"seqrec": 12}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["item_tokenizer", "llm", "split", "tasks", "tasks.yaml"]


def test_build_requires_inputs(inputs, capsys):
    assert main(["tasks", "build", "--output_dir", inputs["output_dir"]]) == 2
    assert "alignrec tasks build: error: split_dir is required" in capsys.readouterr().err
