"""``alignrec run`` with the optional preference stage: SFT -> DPO -> evaluate/cache/export on the tiny fixtures."""

from __future__ import annotations

import json

import yaml

from alignrec.cli import main as alignrec_main
from tests.conftest import build_tiny_llama
from tests.pipeline.test_run_end_to_end import _report_statuses, _run_config, _stage_status, _write_lcrec


def test_sft_then_dpo_then_evaluate(tmp_path, tiny_chat_tokenizer):
    _write_lcrec(tmp_path / "data")
    model_dir = tmp_path / "tiny-llama"
    build_tiny_llama(len(tiny_chat_tokenizer)).save_pretrained(model_dir)
    tiny_chat_tokenizer.save_pretrained(model_dir)
    config = _run_config(tmp_path, model_dir)
    config["preference"] = {"enabled": True, "pairs": {"preference_negatives": 2, "negative_strategy": "hard"},
                            "beta": 0.1, "max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 5e-3,
                            "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2, "max_eval_pairs": 16,
                            "max_length": 256, "save_strategy": "no", "report_to": "none", "tensorboard": False}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "runs" / "tiny"
    assert alignrec_main(["run", "--config", str(path)]) == 0

    pref = json.loads((run_dir / "preference" / "stage.json").read_text())["summary"]
    assert pref["pairs"]["negatives_per_prompt"] == 2 and pref["pairs"]["train_pairs"] > 0
    assert pref["first_loss"] is not None and pref["last_eval_reward_accuracy"] is not None
    manifest = json.loads((run_dir / "preference" / "model" / "alignrec_train.json").read_text())
    assert manifest["preference"]["beta"] == 0.1
    assert manifest["preference"]["sft_run_dir"] == str((run_dir / "train" / "model").resolve())
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert set(metrics["recommenders"]) == {"alignrec", "alignrec_sft", "sasrec", "popularity"}
    assert metrics["config"]["EvaluateConfig"]["model_dir"] == str(run_dir / "preference" / "model")  # evaluate reads the DPO model
    assert metrics["recommenders"]["alignrec"]["invalid_rate"] == 0.0
    exported = " ".join(p.read_text() for p in (run_dir / "export" / "vocab").rglob("*.json"))
    assert str(run_dir / "preference" / "model") in exported  # the vocabulary export is aligned with the DPO model
    report = (run_dir / "report.md").read_text()
    assert "## Preference alignment" in report and "| SFT + DPO |" in report

    # A beta sweep point re-runs DPO and what reads its model, never SFT or the stages before it.
    keys = _stage_status(run_dir)
    config["preference"]["beta"] = 0.5
    path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(path)]) == 0
    statuses = _report_statuses(run_dir)
    assert {s for s, v in statuses.items() if v == "ran"} == {"preference", "evaluate", "cache", "export"}
    assert all(_stage_status(run_dir)[s] == keys[s] for s in ("data", "embeddings", "tokenizer", "tasks", "train"))

    # Off again: evaluate reads the SFT model and the report says the stage is off.
    config["preference"]["enabled"] = False
    path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(path)]) == 0
    assert _report_statuses(run_dir)["preference"] == "off"
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["config"]["EvaluateConfig"]["model_dir"] == str(run_dir / "train" / "model")
    assert set(metrics["recommenders"]) == {"alignrec", "sasrec", "popularity"}
    report = (run_dir / "report.md").read_text()
    assert "## Preference alignment" not in report and "DPO model" not in report  # its left-alone folder is not reported
    assert (run_dir / "preference" / "model").is_dir()  # ... and not deleted either
