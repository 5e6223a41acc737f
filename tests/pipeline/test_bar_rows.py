"""The evaluate stage's bar rows: a tuned SASRec and a SASRec reading item text, trained per run seed."""

from __future__ import annotations

import json

import pytest
import yaml

from alignrec.cli import main as alignrec_main
from tests.pipeline.test_run_end_to_end import tiny_run_config

BAR = {"sasrec_dim": 16, "sasrec_heads": 2, "sasrec_layers": 1, "sasrec_epochs": 3, "sasrec_patience": 3,
       "sasrec_max_len": 10}


def test_seed_sweep_pairs_ours_with_every_bar_row(tmp_path, tiny_chat_tokenizer):
    """Two seeds: each trains the bar rows with its own seed; ours is paired with every SASRec row, and the bar
    is the better of the tuned and content rows by their valid scores."""
    from tests.pipeline.test_bench_quality import _bench

    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    config["embeddings"]["text_encoder"] = "llm"  # the content row reads the tiny LLM's text vectors (offline)
    config["train"]["max_steps"] = 3
    config["evaluate"].update({"ks": [5, 10], "num_beams": 12})  # the seed sweep pairs Recall/NDCG@10
    config["evaluate"].update({"sasrec_tuned": BAR, "sasrec_content": {**BAR, "content_adaptor_hidden": 8}})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "seeds.json"
    assert _bench().main([str(path), "--seeds", "42,43", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["pairs"]) == {"sasrec", "sasrec_tuned", "sasrec_content"}
    assert [p["seed"] for p in result["pairs"]["sasrec_tuned"]] == [42, 43]
    valid = result["bar_valid"]
    assert result["bar"] == max(valid, key=lambda row: sum(valid[row]) / len(valid[row]))
    for seed in (42, 43):
        run_dir = tmp_path / "runs" / f"tiny__seed{seed}"
        metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]
        assert metrics["sasrec_tuned"]["n_examples"] == metrics["alignrec"]["n_examples"]
        bar = json.loads((run_dir / "evaluate" / "bar.json").read_text())
        assert bar["sasrec_tuned"]["seed"] == bar["sasrec_content"]["seed"] == seed  # the run's SASRec seed
        assert bar["sasrec_tuned"]["params"] == BAR
    pooled = result["pooled"]["sasrec_tuned"]["ndcg@10"]
    assert pooled["low"] <= pooled["mean_diff"] <= pooled["high"]
    assert "the bar" in (tmp_path / "seeds.md").read_text()


@pytest.mark.parametrize("value, message", [({"sasrec_widht": 64}, "sasrec_widht"),
                                            ({"sasrec_dropout": 1.5}, "sasrec_dropout"),
                                            ("big", "must be a mapping")])
def test_bad_bar_point_fails_before_any_stage(tmp_path, tiny_chat_tokenizer, capsys, value, message):
    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    config["evaluate"]["sasrec_tuned"] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(path), "--dry_run"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs" / "tiny" / "data").exists()
