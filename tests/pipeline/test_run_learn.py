"""``alignrec run`` with ``embeddings.source: learn`` and the cold-item protocol, end to end on tiny fixtures."""

from __future__ import annotations

import json

import yaml

from alignrec.cli import main as alignrec_main
from tests.pipeline.test_run_end_to_end import NUM_USERS, tiny_run_config


def test_run_with_learn_source_and_cold_items(tmp_path, tiny_chat_tokenizer):
    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    model_dir = config["train"]["model_name_or_path"]
    config["data"]["cold_item_fraction"] = 0.2
    config["embeddings"] = {"source": "learn", "text_encoder": "llm", "llm_dir": str(model_dir), "text_max_length": 32,
                            "learn_dim": 16, "learn_heads": 1, "learn_layers": 1, "learn_epochs": 3, "learn_patience": 3,
                            "sasrec_dim": 16, "sasrec_heads": 1, "sasrec_layers": 1, "sasrec_epochs": 3,
                            "cache_dir": str(tmp_path / "emb_cache")}
    config["evaluate"]["exclude_history"] = True
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(path), "--until", "evaluate"]) == 0
    run_dir = tmp_path / "runs" / "tiny"

    split_stats = json.loads((run_dir / "data" / "split" / "stats.json").read_text())["split"]
    assert split_stats["items_without_training"] >= 5  # 20% of 24 items, plus any naturally unseen
    emb = json.loads((run_dir / "embeddings" / "stage.json").read_text())["summary"]
    assert emb["source"] == "learn" and emb["dim"] == 16 and "learn_valid" in emb
    assert (run_dir / "embeddings" / "learn" / "learn_config.json").is_file()
    tok = json.loads((run_dir / "tokenizer" / "item_tokenizer" / "report.json").read_text())
    assert tok["cold_items_assigned"] == split_stats["items_without_training"]
    # the items without training are left out of every training softmax (issue 31), and each run says so
    learn_info = json.loads((run_dir / "embeddings" / "learn" / "learn_config.json").read_text())["train_info"]
    assert learn_info["masked_items"] == split_stats["items_without_training"]
    tasks = json.loads((run_dir / "tasks" / "dataset" / "tasks_manifest.json").read_text())
    assert len(tasks["items_without_training"]) == split_stats["items_without_training"]
    trained = json.loads((run_dir / "train" / "model" / "alignrec_train.json").read_text())
    assert trained["cold_items"]["masked_items"] == split_stats["items_without_training"]
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]
    assert set(metrics) == {"alignrec", "sasrec", "learn", "popularity"}
    assert metrics["learn"]["n_examples"] == metrics["alignrec"]["n_examples"] == NUM_USERS
    unseen = metrics["learn"]["slices"]["target_popularity"]["unseen"]
    assert unseen["n"] == split_stats["cold_test_targets"] > 0
    assert metrics["learn"]["invalid_rate"] == 0.0
