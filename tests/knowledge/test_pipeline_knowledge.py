"""The knowledge path end to end on tiny fixtures with a tiny random LLM: CLI steps, then ``alignrec run``."""

from __future__ import annotations

import json

import yaml

from alignrec.cli import main
from tests.pipeline.test_run_end_to_end import NUM_USERS, _run_config, _write_lcrec


def test_cli_extract_encode_train(tmp_path, tiny_split, tiny_model_dir):
    tiny_split.save(tmp_path / "split")
    k, v, m = tmp_path / "k", tmp_path / "v", tmp_path / "m"
    assert main(["knowledge", "extract", "--split_dir", str(tmp_path / "split"), "--out_dir", str(k),
                 "--llm_dir", str(tiny_model_dir), "--mode", "collective", "--item_clusters", "3",
                 "--user_clusters", "2", "--max_new_tokens", "4", "--num_factors", "3"]) in (0, 1)
    if not (k / "factors.json").is_file():  # a random model's factor answer may be unusable: give them
        assert main(["knowledge", "extract", "--split_dir", str(tmp_path / "split"), "--out_dir", str(k),
                     "--llm_dir", str(tiny_model_dir), "--item_clusters", "3", "--user_clusters", "2",
                     "--max_new_tokens", "4", "--factors", "use case,material"]) == 0
    cost = json.loads((k / "cost.json").read_text())
    assert cost["item"]["clusters"] == 3 and cost["item"]["llm_calls"] == 3 and cost["user"]["llm_calls"] == 2
    assert cost["item"]["generated_tokens"] >= 3 and cost["wall_seconds"] > 0
    assert main(["knowledge", "encode", "--knowledge_dir", str(k), "--out_dir", str(v), "--encoder", "llm",
                 "--encoder_dir", str(tiny_model_dir)]) == 0
    assert main(["knowledge", "train", "--split_dir", str(tmp_path / "split"), "--vectors_dir", str(v),
                 "--out_dir", str(m), "--sasrec_dim", "16", "--sasrec_heads", "1", "--sasrec_layers", "1",
                 "--sasrec_epochs", "2", "--sasrec_patience", "0"]) == 0
    rows = json.loads((m / "metrics.json").read_text())["recommenders"]
    assert set(rows) == {"sasrec", "sasrec+knowledge"} and rows["sasrec+knowledge"]["invalid_rate"] == 0.0
    assert (m / "model" / "augmented" / "item_vectors.safetensors").is_file()
    manifest = json.loads((m / "metrics.json").read_text())["knowledge_coverage"]
    assert manifest["items_with_knowledge"] == 8 and manifest["users_with_knowledge"] == 0  # default: item only
    assert main(["knowledge", "train", "--split_dir", str(tmp_path / "split"), "--vectors_dir", str(v),
                 "--out_dir", str(tmp_path / "m2"), "--knowledge_kinds", "item,user", "--baseline", "false",
                 "--sasrec_dim", "16", "--sasrec_heads", "1", "--sasrec_layers", "1", "--sasrec_epochs", "1"]) == 0
    both = json.loads((tmp_path / "m2" / "metrics.json").read_text())["knowledge_coverage"]
    assert both["users_with_knowledge"] == 3  # u1 u2 u4: one training item (u3, u5) leaves nothing to read


def test_sasrec_knowledge_kinds_of_the_pipeline():
    import pytest

    from alignrec.pipeline.stages import sasrec_knowledge_kinds
    from recdata.errors import ConfigError

    assert sasrec_knowledge_kinds(True) == ("item",) and sasrec_knowledge_kinds("item, user") == ("item", "user")
    with pytest.raises(ConfigError, match="sasrec_knowledge must be true or name item and/or user"):
        sasrec_knowledge_kinds("items")


def test_extract_errors_are_one_line(tmp_path, tiny_split, capsys):
    tiny_split.save(tmp_path / "split")
    assert main(["knowledge", "extract", "--split_dir", str(tmp_path / "split"), "--out_dir", str(tmp_path / "k"),
                 "--mode", "collective", "--max_items", "3"]) == 2
    assert capsys.readouterr().err.strip().startswith("alignrec knowledge extract: error: max_items")


def test_run_with_knowledge_source_end_to_end(tmp_path, tiny_chat_tokenizer, tiny_model_dir, monkeypatch):
    from alignrec.llm.generation import HFGenerator

    real_call = HFGenerator.__call__

    def answer_something(self, prompts):  # the random LLM's answers decode to "": keep real generation, give text
        return [a.strip() or f"prefers group {len(p) % 5}" for a, p in zip(real_call(self, prompts), prompts, strict=True)]

    monkeypatch.setattr(HFGenerator, "__call__", answer_something)
    _write_lcrec(tmp_path / "data")
    config = _run_config(tmp_path, tiny_model_dir)
    config["knowledge"] = {"llm_dir": str(tiny_model_dir), "mode": "collective", "item_clusters": 4,
                           "user_clusters": 4, "max_new_tokens": 6, "factors": "use case,material,brand",
                           "encoder": "llm", "encoder_dir": str(tiny_model_dir)}
    config["embeddings"].update({"source": "fused", "fusion_weights": "knowledge=1.0,cf=1.0",
                                 "sasrec_knowledge": "item,user"})
    config["tasks"]["use_knowledge"] = True
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(path), "--until", "evaluate"]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    knowledge = json.loads((run_dir / "knowledge" / "stage.json").read_text())["summary"]
    assert knowledge["cost"]["item"]["llm_calls"] == 4 and knowledge["encoded"]["user"]["members"] == NUM_USERS
    meta = json.loads((run_dir / "embeddings" / "meta.json").read_text())
    assert meta["kind"] == "fused" and meta["parts"]["knowledge"]["kind"] == "knowledge"
    # the tasks read this run's user knowledge (its exact prompts: tests/sft_tasks/test_user_knowledge.py)
    tasks_cfg = json.loads((run_dir / "tasks" / "dataset" / "resolved_config.json").read_text())
    assert tasks_cfg["TaskConfig"]["user_knowledge_dir"] == str(run_dir / "knowledge" / "extract")
    # the trained model keeps the texts its prompts carried, so evaluation and the cache prompt with them
    from trainer import read_user_knowledge

    kept = read_user_knowledge(run_dir / "train" / "model")
    assert kept and kept == json.loads((run_dir / "tasks" / "dataset" / "user_knowledge.json").read_text())
    assert len(kept) == NUM_USERS and all(kept.values())
    from datasets import load_from_disk

    train = load_from_disk(str(run_dir / "tasks" / "dataset"))["train"]
    seqrec = [p for p, task in zip(train["prompt"], train["task"], strict=True) if task == "seqrec"]
    # only the window of each user's last training target carries it (the knowledge read everything before)
    assert sum("About this user: " in p for p in seqrec) == NUM_USERS < len(seqrec)
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]
    assert {"alignrec", "sasrec", "sasrec+knowledge"} <= set(metrics)
    assert metrics["sasrec+knowledge"]["n_examples"] == NUM_USERS
