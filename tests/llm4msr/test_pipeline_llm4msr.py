"""``alignrec run`` with the evaluate section's multi-scenario rows, on tiny fixtures with a tiny random LLM."""

from __future__ import annotations

import json

import yaml

from alignrec.cli import main
from tests.pipeline.test_run_end_to_end import NUM_USERS, _run_config, _write_lcrec


def _scenario_run(tmp_path, model_dir, llm4msr) -> tuple:
    _write_lcrec(tmp_path / "data")
    path = tmp_path / "data" / "Tiny.item.json"
    items = json.loads(path.read_text())
    for item_id, row in items.items():
        row["domain"] = "lab" if int(item_id) % 2 else "safety"
    path.write_text(json.dumps(items))
    config = _run_config(tmp_path, model_dir)
    config["data"]["scenario_item_field"] = "domain"
    config["evaluate"].update({"scenario_backbone": True, "llm4msr": llm4msr})
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump(config))
    return run, tmp_path / "runs" / "tiny"


def test_run_with_llm4msr_rows_end_to_end(tmp_path, tiny_chat_tokenizer, tiny_model_dir):
    run, run_dir = _scenario_run(tmp_path, tiny_model_dir, {
        "llm_dir": str(tiny_model_dir), "user_sample": 5, "user_clusters": 3, "max_new_tokens": 4,
        "encoder": "llm", "encoder_dir": str(tiny_model_dir), "meta_rank": 2, "meta_hidden": 8})
    assert main(["run", "--config", str(run), "--until", "evaluate"]) == 0
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]
    for name in ("backbone (per-scenario towers)", "backbone + LLM4MSR meta layers"):
        assert metrics[name]["n_examples"] == NUM_USERS and metrics[name]["invalid_rate"] == 0.0
        within = metrics[name]["within_scenario"]
        assert within["invalid_rate"] == 0.0 and set(within["by_scenario"]) == {"lab", "safety"}
    cost = json.loads((run_dir / "evaluate" / "llm4msr_extract" / "cost.json").read_text())
    assert cost["scenario"]["llm_calls"] == 2 and cost["user"]["individual"] == 5
    assert cost["user"]["clustered_users"] == NUM_USERS - 5 and cost["user"]["clusters"] <= 3
    assert cost["total"]["generated_tokens"] >= cost["total"]["llm_calls"]  # >= 1 token per answer
    assert (run_dir / "llm4msr_answers.cache.jsonl").is_file()  # outside the stage folder: reruns ask nothing
    assert "| backbone + LLM4MSR meta layers | within_scenario | lab |" in (run_dir / "evaluate" / "metrics.md").read_text()


def test_bad_llm4msr_keys_fail_before_any_stage(tmp_path, tiny_model_dir, capsys):
    run, run_dir = _scenario_run(tmp_path, tiny_model_dir, {"user_smaple": 5})
    assert main(["run", "--config", str(run), "--dry_run"]) == 2
    assert "unknown key(s) ['user_smaple'] in evaluate.llm4msr" in capsys.readouterr().err
    run, _ = _scenario_run(tmp_path / "b", tiny_model_dir, {"user_sample": -1})
    assert main(["run", "--config", str(run), "--dry_run"]) == 2
    assert "user_sample must be >= 0" in capsys.readouterr().err
    assert not run_dir.exists()


def test_runs_without_the_options_keep_their_evaluate_key():
    from alignrec.pipeline.stages import STAGES

    evaluate = next(stage for stage in STAGES if stage.name == "evaluate")
    assert evaluate.inputs({"ks": [1, 5]}, None) == {}  # no input joins the key: earlier runs are not stale
    assert evaluate.inputs({"llm4msr": {"llm_dir": "L", "encoder": "llm", "encoder_dir": "E"}}, None) == {
        "llm4msr_llm": "L", "llm4msr_encoder": "E"}
