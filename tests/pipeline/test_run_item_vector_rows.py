"""``alignrec run`` with code rows started at the item vectors: the CPU path (a from-scratch Phi on codes only) and
the demo's path (a pretrained LLM with LoRA, item-id level)."""

from __future__ import annotations

import json

import yaml

from alignrec.cli import main as alignrec_main
from tests.pipeline.test_run_end_to_end import NUM_USERS, tiny_run_config


def _scratch_config(tmp_path, tokenizer) -> dict:
    config = tiny_run_config(tmp_path, tokenizer)
    config["tokenizer"].update(num_levels=1, codebook_size=4, item_id_level=True)
    config["tasks"]["weights"] = '{"seqrec_full": 1.0}'
    train = {k: v for k, v in config["train"].items() if k != "model_name_or_path"}
    train.update(model_init="scratch", tokenizer_name_or_path="codes_only", finetune_mode="full",
                 scratch_architecture="phi", scratch_layers=1, scratch_hidden=16, scratch_heads=2,
                 scratch_max_positions=64, max_length=64, new_rows_init="item_vectors")
    config["train"] = train
    config["evaluate"]["exclude_history"] = True
    return config


def test_scratch_run_starts_code_rows_at_the_runs_item_vectors(tmp_path, tiny_chat_tokenizer):
    config = _scratch_config(tmp_path, tiny_chat_tokenizer)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(path), "--until", "evaluate"]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    model_dir = run_dir / "train" / "model"
    resolved = json.loads((model_dir / "resolved_config.json").read_text())
    assert resolved["rows_init"] == "item_vectors"
    assert resolved["ModelArguments"]["item_vectors_dir"] == str(run_dir / "embeddings")  # the vectors the tokenizer read
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]["alignrec"]
    assert metrics["n_examples"] == NUM_USERS and metrics["invalid_rate"] == 0.0


def test_lora_run_starts_the_llms_code_rows_at_the_runs_item_vectors(tmp_path, tiny_chat_tokenizer):
    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    config["tokenizer"].update(num_levels=1, codebook_size=4, item_id_level=True)
    config["train"]["new_rows_init"] = "item_vectors"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(path), "--until", "train"]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    resolved = json.loads((run_dir / "train" / "model" / "resolved_config.json").read_text())
    assert resolved["rows_init"] == "item_vectors" and resolved["ModelArguments"]["finetune_mode"] == "lora"
    assert resolved["ModelArguments"]["item_vectors_dir"] == str(run_dir / "embeddings")


def test_the_pipeline_fills_item_vectors_dir_itself(tmp_path, tiny_chat_tokenizer, capsys):
    config = _scratch_config(tmp_path, tiny_chat_tokenizer)
    config["train"]["item_vectors_dir"] = str(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()  # the fixture's own progress output
    assert alignrec_main(["run", "--config", str(path)]) != 0
    assert not (tmp_path / "runs" / "tiny" / "data").exists()  # refused before any stage ran
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "item_vectors_dir" in err[0] and "fills itself" in err[0]


def test_scratch_run_with_user_tokens_prompts_every_known_user_with_theirs(tmp_path, tiny_chat_tokenizer):
    """The CPU recipe's shape (codes only, seqrec_full, the item head) with ``tasks.user_tokens``: every user gets
    a token, the run records them, and evaluation decodes every user's prompt with theirs."""
    config = _scratch_config(tmp_path, tiny_chat_tokenizer)
    config["tasks"]["user_tokens"] = 1000
    config["train"]["item_head_weight"] = 1.0
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(path), "--until", "evaluate"]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    model_dir = run_dir / "train" / "model"
    knowledge = json.loads((model_dir / "user_knowledge.json").read_text())
    assert len(knowledge) == NUM_USERS and sorted(knowledge.values()) == sorted(f"<user_{i}>" for i in range(NUM_USERS))
    assert json.loads((model_dir / "alignrec_train.json").read_text())["user_tokens"] == NUM_USERS
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]["alignrec"]
    assert metrics["n_examples"] == NUM_USERS and metrics["invalid_rate"] == 0.0
