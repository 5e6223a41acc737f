"""``alignrec recipe-tune``: a budget-3 search end to end on the tiny pipeline, resumable and test-blind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from alignrec.cli import main as alignrec_main
from alignrec.pipeline import load_run_config
from alignrec.pipeline.recipe_tune import check_space, point_overrides, tune_recipe
from alignrec.pipeline.tuned_config import tuned_config_text
from recdata.errors import ConfigError, OutputFolderError
from tests.pipeline.test_bench_quality import _poison_test_targets
from tests.pipeline.test_run_end_to_end import tiny_run_config

# Three distinct points: the config's own (6 beams, LoRA defaults), 8 beams (evaluate only: it reuses the first
# trial's training), then the tied LoRA axis (a training).
SPACE = {"evaluate.num_beams": [6, 8], "lora": [{"train.lora_r": 4, "train.lora_alpha": 8}]}


def _tune(config: dict, tmp_path: Path, label: str) -> Path:
    cfg_path, space_path, out = tmp_path / f"{label}.yaml", tmp_path / "space.yaml", tmp_path / f"tune_{label}"
    cfg_path.write_text("# the tiny recipe\n" + yaml.safe_dump(config, sort_keys=False))
    space_path.write_text(yaml.safe_dump(SPACE, sort_keys=False))  # the axes' order is the search's
    assert alignrec_main(["recipe-tune", "--run_config", str(cfg_path), "--budget", "3", "--space", str(space_path),
                          "--out_dir", str(out)]) == 0
    return out


def _trials(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


def test_recipe_tune_chooses_on_valid_resumes_and_never_reads_test(tmp_path, tiny_chat_tokenizer):
    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    config["train"]["max_steps"] = 3
    config["tokenizer"]["rq_epochs"] = 10
    config["evaluate"].update(part="test", sasrec_bce_baseline=True)  # both forced off in every trial
    out = _tune(config, tmp_path, "clean")

    trials = _trials(out)
    assert len(trials) == 3 and len({t["key"] for t in trials}) == 3
    assert [t["params"] for t in trials] == [  # the config's own values first, then one axis at a time
        {"evaluate.num_beams": 6, "lora": {"train.lora_r": None, "train.lora_alpha": None}},
        {"evaluate.num_beams": 8, "lora": {"train.lora_r": None, "train.lora_alpha": None}},
        {"evaluate.num_beams": max(trials[:2], key=lambda t: (t["score"], -t["index"]))["params"]["evaluate.num_beams"],
         "lora": {"train.lora_r": 4, "train.lora_alpha": 8}}]
    assert [t["train_ran"] for t in trials] == [True, False, True]  # the evaluate-only point reused its training
    lora_train = json.loads((out / "runs" / trials[2]["run"] / "train" / "stage.json").read_text())
    assert {k: lora_train["config"]["section"][k] for k in ("lora_r", "lora_alpha")} == {"lora_r": 4, "lora_alpha": 8}
    best = max(trials, key=lambda t: (t["score"], -t["index"]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["key"] == best["key"] and summary["trials"] == 3
    for t in trials:
        metrics = json.loads((out / "runs" / t["run"] / "evaluate" / "metrics.json").read_text())
        assert metrics["config"]["EvaluateConfig"]["part"] == "valid"
        assert set(metrics["recommenders"]) == {"alignrec", "sasrec", "popularity"}  # no bar rows in trials
        assert t["metric"] == "ndcg@5"  # ks [1, 5]: the largest K below 10
        assert t["score"] == metrics["recommenders"]["alignrec"]["overall"]["ndcg@5"]
    assert not (tmp_path / "runs" / "tiny" / "train").exists()  # the base run stops before train
    chosen = {k: v for k, v in point_overrides(best["params"]).items() if v is not None}
    snippet = yaml.safe_load((out / "tuned.yaml").read_text())
    assert {f"{section}.{k}": v for section, keys in snippet.items() for k, v in keys.items()} == chosen
    table = (out / "trials.md").read_text()
    assert table.count("(chosen)") == 1 and len([line for line in table.splitlines() if line.startswith("| ")]) == 4
    tuned = load_run_config(out / "clean.tuned.yaml")  # the pipeline's own loader
    assert tuned.name == "tiny_tuned" and tuned.sections["evaluate"]["part"] == "test"
    assert all(tuned.sections[k.split(".")[0]][k.split(".")[1]] == v for k, v in chosen.items())
    assert "# the tiny recipe" in (out / "clean.tuned.yaml").read_text() and summary["comments_kept"]

    # a rerun resumes: no trial runs again (same records, same stage start times)
    started = {t["run"]: json.loads((out / "runs" / t["run"] / "evaluate" / "stage.json").read_text())["started"]
               for t in trials}
    before = (out / "trials.jsonl").read_text()
    _tune(config, tmp_path, "clean")
    assert (out / "trials.jsonl").read_text() == before
    assert started == {r: json.loads((out / "runs" / r / "evaluate" / "stage.json").read_text())["started"] for r in started}

    # poisoned test targets: the same trials, the same scores
    poisoned = tmp_path / "data_poisoned"
    poisoned.mkdir()
    for f in (tmp_path / "data").iterdir():
        (poisoned / f.name).write_bytes(f.read_bytes())
    assert _poison_test_targets(poisoned) == 40
    poisoned_out = _tune({**config, "runs_dir": str(tmp_path / "runs_poisoned"),
                          "data": {**config["data"], "path": str(poisoned)}}, tmp_path, "poisoned")
    strip = [{k: t[k] for k in ("key", "score", "recall@5", "valid_users")} for t in trials]
    assert strip == [{k: t[k] for k in ("key", "score", "recall@5", "valid_users")} for t in _trials(poisoned_out)]


def test_default_space_refuses_a_non_scratch_config_and_user_files_are_kept(tmp_path, tiny_chat_tokenizer):
    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)  # a LoRA model: the scratch levers do not apply
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="default space tunes the scratch recipe"):
        tune_recipe(path, 3)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.learning_rate": [1.0e-2]}))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "tuned.yaml").write_text("my notes\n")
    with pytest.raises(OutputFolderError, match=r"\['tuned.yaml'\], which alignrec recipe-tune did not write"):
        tune_recipe(path, 3, space_file=str(space), out_dir=str(out), overwrite=True)
    assert (out / "tuned.yaml").read_text() == "my notes\n"
    space.write_text(yaml.safe_dump({"train.learning_rat": [1.0e-2]}))
    with pytest.raises(ConfigError, match="unknown key"):  # checked before anything trains
        tune_recipe(path, 3, space_file=str(space), out_dir=str(tmp_path / "other"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, match", [
    (["--run_config", "{tmp}/nope.yaml"], r"--run_config \S+nope\.yaml does not exist"),
    (["--run_config", "{tmp}/run.yaml", "--budget", "0"], r"--budget must be >= 1"),
    (["--run_config", "{tmp}/run.yaml", "--space", "{tmp}/nope.yaml"], r"--space \S+nope\.yaml does not exist"),
    (["--run_config", "{tmp}/run.yaml", "--space", "{tmp}/run.yaml"], r"axis 'data': give a non-empty list"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, match):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"name": "x", "data": {"path": str(tmp_path)}}))
    assert alignrec_main(["recipe-tune", *(a.format(tmp=tmp_path) for a in args)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("alignrec ")]
    assert len(lines) == 1 and lines[0].startswith("alignrec recipe-tune: error: ") and re.search(match, lines[0])


@pytest.mark.parametrize("space, match", [
    ({}, "non-empty mapping"),
    ({"train.scratch_dropout": []}, "non-empty list"),
    ({"scratch_dropout": [0.1]}, "is not section.key"),
    ({"evaluate.part": ["test"]}, "set by recipe-tune itself"),
    ({"w": [{"train.scratch_hidden": 8}, 16]}, "mixes mappings"),
    ({"w": [{"train.scratch_hidden": 8}, {"train.scratch_heads": 2}]}, "the same keys"),
    ({"train.scratch_hidden": [8], "w": [{"train.scratch_hidden": 8}]}, "in another axis"),
    ({"train.scratch_dropout": [0.1, None]}, "null"),
])
def test_bad_spaces_are_named(space, match):
    with pytest.raises(ConfigError, match=match):
        check_space(space, "space.yaml")


def test_tuned_config_keeps_comments_or_says_it_could_not():
    source = "name: x  # the run\ntrain:\n  # width\n  hidden: 256         # capacity\n  lr: 0.003\nexport: {}\n"
    text, kept = tuned_config_text(source, {"train.hidden": 128, "train.epochs": 4, "train.lr": None, "name": "x_t"},
                                   "# header\n")
    assert kept and text == ("# header\n# The comments below are the source's, written for its own values.\nname: x_t  # the run\ntrain:\n  # width\n  hidden: 128         # capacity\n"
                             "  lr: 0.003\n  epochs: 4\nexport: {}\n")
    text, kept = tuned_config_text(source, {"export.k": 1}, "# header\n")  # a flow-style section: dumped instead
    assert not kept and "could not be kept" in text
    assert yaml.safe_load(text) == {"name": "x", "train": {"hidden": 256, "lr": 0.003}, "export": {"k": 1}}


def test_base_run_starts_the_search_from_a_finished_run_of_another_name(tmp_path, tiny_chat_tokenizer):
    """A seed run (``<name>__seed42``) given as --base_run: the base run gets its stages, the first trial (the
    config's own point) reuses its training; a folder without finished stages is one ConfigError."""
    config = tiny_run_config(tmp_path, tiny_chat_tokenizer)
    config["train"]["max_steps"] = 3
    config["tokenizer"]["rq_epochs"] = 10
    cfg_path, space_path = tmp_path / "run.yaml", tmp_path / "space.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    space_path.write_text(yaml.safe_dump({"evaluate.num_beams": [6, 8]}))
    assert alignrec_main(["run", "--config", str(cfg_path), "--name", "tiny__seed42", "--until", "evaluate"]) == 0
    seed_run = tmp_path / "runs" / "tiny__seed42"
    seed_train = json.loads((seed_run / "train" / "stage.json").read_text())
    with pytest.raises(ConfigError, match="no finished stage"):
        tune_recipe(cfg_path, 2, space_file=str(space_path), out_dir=str(tmp_path / "bad"),
                    base_run=str(tmp_path / "data"))
    out = tmp_path / "tune"
    assert alignrec_main(["recipe-tune", "--run_config", str(cfg_path), "--budget", "2", "--space", str(space_path),
                          "--out_dir", str(out), "--base_run", str(seed_run)]) == 0
    trials = _trials(out)
    assert [t["params"] for t in trials] == [{"evaluate.num_beams": 6}, {"evaluate.num_beams": 8}]
    assert [t["train_ran"] for t in trials] == [False, False]  # neither trained: the seed run's training serves
    for stage in ("data", "embeddings", "tokenizer", "tasks", "train"):  # the very records the seed run wrote
        base = json.loads((tmp_path / "runs" / "tiny" / stage / "stage.json").read_text())
        assert base == json.loads((seed_run / stage / "stage.json").read_text())
    trial_train = json.loads((out / "runs" / trials[0]["run"] / "train" / "stage.json").read_text())
    assert trial_train["started"] == seed_train["started"]
