"""``alignrec scenarios extract`` with a scripted LLM (cost, resume, files) and the whole CLI path on a tiny LLM."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignrec.cli import main
from alignrec.llm4msr import ScenarioExtractConfig
from alignrec.llm4msr.cli import run_scenario_extract
from tests.llm4msr.conftest import scripted_generator


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_extract_writes_every_user_and_scenario_then_resumes(tmp_path, scenario_split, tiny_model_dir):
    scenario_split.save(tmp_path / "split")
    cfg = ScenarioExtractConfig(split_dir=str(tmp_path / "split"), out_dir=str(tmp_path / "k"),
                                llm_dir=str(tiny_model_dir), user_sample=2, user_clusters=2)
    asked: list[str] = []
    cost = run_scenario_extract(cfg, make_generator=scripted_generator(asked))
    k = tmp_path / "k"
    scenarios = {r["scenario_id"]: r["text"] for r in _rows(k / "scenario_knowledge.jsonl")}
    prompts = {(r["level"], r["name"]): r["prompt"] for r in _rows(k / "prompts.jsonl")}
    assert scenarios == {s: f"knowledge about {prompts[('scenario', s)]}" for s in ("lab", "safety")}
    users = _rows(k / "user_knowledge.jsonl")
    # holdout 1 (default): u3 and u5 have one training item, so nothing is left for a prompt to read
    assert {r["user_id"]: r["history_items"] for r in users} == {"u1": 2, "u2": 1, "u4": 3}
    for row in users:  # each user: its own answer (group None) or its cluster's
        name = row["group"] or row["user_id"]
        assert row["text"] == f"knowledge about {prompts[('user', name)]}"
    assert sum(r["group"] is None for r in users) == 2
    user_prompts = [p for (level, _), p in prompts.items() if level == "user"]
    assert cost["scenario"]["llm_calls"] == 2 and cost["user"]["llm_calls"] == len(user_prompts)
    assert cost["total"]["llm_calls"] == len(asked) == 2 + len(user_prompts)
    assert cost["user"]["individual"] == 2 and cost["user"]["clustered_users"] == 1 and cost["wall_seconds"] >= 0
    assert cost["user_holdout_items"] == 1

    again: list[str] = []
    cost = run_scenario_extract(ScenarioExtractConfig(**{**cfg.__dict__, "overwrite": True}),
                                make_generator=scripted_generator(again))
    assert again == [] and cost["total"]["llm_calls"] == 0  # every answer came from the cache


def test_split_without_scenarios_is_one_line_error(tmp_path, tiny_split, tiny_model_dir, capsys):
    tiny_split.save(tmp_path / "split")
    rc = main(["scenarios", "extract", "--split_dir", str(tmp_path / "split"), "--out_dir", str(tmp_path / "k"),
               "--llm_dir", str(tiny_model_dir)])
    assert rc == 1
    assert capsys.readouterr().err.strip().startswith("alignrec scenarios extract: error: tiny has no scenario labels")


@pytest.mark.parametrize(("argv", "message"), [
    (["--user_sample", "0", "--user_clusters", "0"], "user_sample and user_clusters are both 0"),
    (["--cluster_source", "nope"], "--cluster_source/--cluster-source: invalid choice: 'nope'"),
])
def test_bad_extract_values_exit_2(tmp_path, argv, message, capsys):
    assert main(["scenarios", "extract", "--split_dir", str(tmp_path), "--out_dir", str(tmp_path / "k"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_llm4msr_without_vectors_is_a_config_error(tmp_path, capsys):
    assert main(["scenarios", "train", "--split_dir", str(tmp_path), "--out_dir", str(tmp_path / "m")]) == 2
    assert "vectors_dir is required" in capsys.readouterr().err


def test_cli_extract_encode_train_on_a_tiny_llm(tmp_path, scenario_split, tiny_model_dir):
    scenario_split.save(tmp_path / "split")
    k, v, m = tmp_path / "k", tmp_path / "v", tmp_path / "m"
    assert main(["scenarios", "extract", "--split_dir", str(tmp_path / "split"), "--out_dir", str(k),
                 "--llm_dir", str(tiny_model_dir), "--user_sample", "2", "--user_clusters", "2",
                 "--max_new_tokens", "4"]) == 0
    cost = json.loads((k / "cost.json").read_text())
    assert cost["scenario"]["llm_calls"] == 2 and cost["scenario"]["generated_tokens"] >= 2
    assert main(["knowledge", "encode", "--knowledge_dir", str(k), "--out_dir", str(v), "--encoder", "llm",
                 "--encoder_dir", str(tiny_model_dir)]) == 0
    encoded = json.loads((v / "encode.json").read_text())
    assert encoded["scenario"]["members"] == 2 and encoded["user"]["members"] == 3  # u3, u5: all held out
    assert main(["scenarios", "train", "--split_dir", str(tmp_path / "split"), "--vectors_dir", str(v),
                 "--out_dir", str(m), "--models", "sasrec,backbone,llm4msr", "--sasrec_dim", "16",
                 "--sasrec_heads", "1", "--sasrec_layers", "1", "--sasrec_epochs", "2", "--sasrec_patience", "0",
                 "--ks", "1,5"]) == 0
    rows = json.loads((m / "metrics.json").read_text())["recommenders"]
    assert set(rows) == {"popularity", "sasrec", "backbone (per-scenario towers)", "backbone + LLM4MSR meta layers"}
    for rep in rows.values():
        assert rep["n_examples"] == 5 and rep["invalid_rate"] == 0.0
        assert rep["within_scenario"]["invalid_rate"] == 0.0 and rep["within_scenario"]["n_examples"] == 5
    assert "| backbone + LLM4MSR meta layers | within_scenario | lab |" in (m / "metrics.md").read_text()
    from alignrec.recommenders import LLM4MSRSASRec

    model = LLM4MSRSASRec.from_pretrained(m / "llm4msr")
    assert int(model.user_has.sum()) == 3 and int(model.scenario_has.sum()) == 2


def test_vectors_of_an_old_extract_without_history_items_are_refused_in_one_line(tmp_path, scenario_split, capsys):
    """An extract written before the holdout rule (user rows without history_items) leaks training targets."""
    from alignrec.knowledge.encode import save_vectors

    scenario_split.save(tmp_path / "split")
    v = tmp_path / "v"
    v.mkdir()
    save_vectors(v, "scenario", ["lab", "safety"], np.ones((2, 3), np.float32), {"encoder": "sentence"})
    save_vectors(v, "user", ["u1", "u2"], np.ones((2, 3), np.float32), {"encoder": "sentence"})  # no history_items
    assert main(["scenarios", "train", "--split_dir", str(tmp_path / "split"), "--vectors_dir", str(v),
                 "--out_dir", str(tmp_path / "m"), "--models", "llm4msr"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no history_items" in err
    assert "rerun `alignrec scenarios extract` and `alignrec knowledge encode`" in err
