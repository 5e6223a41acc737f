"""Baseline SASRecs trained by the evaluate stage are cached by what determines them: a re-run of evaluate for a
change of ours reloads them (same scores), a change of theirs trains afresh."""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml

from alignrec.cli import main as alignrec_main
from alignrec.pipeline.baseline_cache import baseline_key, cached_baseline
from alignrec.recommenders import SASRec, train_sasrec
from alignrec.recommenders.sasrec_config import SASRecConfig
from tests.pipeline.test_bar_rows import BAR
from tests.pipeline.test_run_end_to_end import tiny_run_config

CFG = SASRecConfig(sasrec_dim=8, sasrec_heads=1, sasrec_layers=1, sasrec_epochs=2, sasrec_patience=2, sasrec_max_len=5)


def _counting_trainer(split, cfg, calls):
    def train():
        calls.append(cfg.sasrec_seed)
        return train_sasrec(split, cfg)
    return train


def test_second_call_loads_the_same_model_and_record(tiny_split, tmp_path):
    calls: list[int] = []
    key = baseline_key(tiny_split, CFG)
    first = cached_baseline("bce-sasrec", key, tmp_path, _counting_trainer(tiny_split, CFG, calls), SASRec.from_pretrained)
    second = cached_baseline("bce-sasrec", key, tmp_path, _counting_trainer(tiny_split, CFG, calls),
                             SASRec.from_pretrained)
    assert calls == [CFG.sasrec_seed]  # trained once
    assert second is not first and second.item_ids == first.item_ids
    np.testing.assert_array_equal(second.item_embeddings(), first.item_embeddings())
    history = [["i1", "i2"], ["i5", "i6"]]
    with torch.no_grad():
        np.testing.assert_allclose(second.score(history).numpy(), first.score(history).numpy(), rtol=0, atol=1e-6)
    assert second.train_info["best_valid_ndcg@10"] == first.train_info["best_valid_ndcg@10"]
    assert second.train_info["cache_hit"].startswith(str(tmp_path)) and "cache_hit" not in first.train_info


def test_another_seed_or_split_trains_again_and_no_cache_always_trains(tiny_split, tiny_dataset, tmp_path):
    import dataclasses

    from recdata import leave_one_out_split

    calls: list[int] = []
    other = dataclasses.replace(CFG, sasrec_seed=CFG.sasrec_seed + 1)
    for cfg in (CFG, other):
        cached_baseline("x", baseline_key(tiny_split, cfg), tmp_path, _counting_trainer(tiny_split, cfg, calls),
                        SASRec.from_pretrained)
    shorter = leave_one_out_split(tiny_dataset, max_history=3)
    assert baseline_key(shorter, CFG) != baseline_key(tiny_split, CFG)
    assert baseline_key(tiny_split, CFG, {"text": "a"}) != baseline_key(tiny_split, CFG, {"text": "b"})
    for _ in range(2):
        cached_baseline("x", baseline_key(tiny_split, CFG), None, _counting_trainer(tiny_split, CFG, calls),
                        SASRec.from_pretrained)
    assert calls == [CFG.sasrec_seed, CFG.sasrec_seed + 1, CFG.sasrec_seed, CFG.sasrec_seed]


def test_evaluate_rerun_for_our_change_reuses_every_trained_baseline(tmp_path, tiny_chat_tokenizer):
    """A second run that changes only our decoding re-runs evaluate; the BCE, tuned and content rows come from the
    cache with the first run's exact metrics."""
    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    config["embeddings"]["text_encoder"] = "llm"  # the content row reads the tiny LLM's text vectors (offline)
    config["train"]["max_steps"] = 3
    config["evaluate"].update({"sasrec_bce_baseline": True, "sasrec_tuned": BAR,
                               "sasrec_content": {**BAR, "content_adaptor_hidden": 8}})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    evaluate_dir = tmp_path / "runs" / "tiny" / "evaluate"
    rows = ("sasrec_bce", "sasrec_tuned", "sasrec_content")

    def metrics():
        recs = json.loads((evaluate_dir / "metrics.json").read_text())["recommenders"]
        return {row: recs[row]["overall"] for row in rows}, recs["alignrec"]["overall"]

    assert alignrec_main(["run", "--config", str(path), "--until", "evaluate"]) == 0
    first, _ = metrics()
    assert not any("cache_hit" in v for v in json.loads((evaluate_dir / "bar.json").read_text()).values())
    config["evaluate"]["num_beams"] = config["evaluate"].get("num_beams", 10) + 2  # ours changes, theirs not
    path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(path), "--until", "evaluate"]) == 0
    second, _ = metrics()
    assert second == first
    bar = json.loads((evaluate_dir / "bar.json").read_text())
    assert all("cache_hit" in bar[row] for row in ("sasrec_tuned", "sasrec_content"))
    assert not (evaluate_dir / "sasrec_tuned_metrics.jsonl").exists()  # no training happened
    assert (evaluate_dir / "sasrec_bce" / "model.safetensors").is_file()
