"""Stage keys survive refactors of the pipeline code: a run folder made before a change is still complete after it.

The keys below were computed by the pipeline before ``alignrec/pipeline/stages.py`` was split into one module per
stage (issue 32). A key hashes the stage name, its ``version`` (the stage's code version: bump it when a stage's
output changes for the same inputs), its section, the content of its inputs and its upstream keys; moving code
between modules must not change any of them. If a stage's output really changes, bump that stage's ``version``
and update its key here (and only the keys of it and its downstream stages change).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignrec.pipeline.config import run_config_from_dict
from alignrec.pipeline.runner import STAGE_FILE, plan_stages
from alignrec.pipeline.stages import STAGES

RUN = {
    "name": "keys", "runs_dir": "runs",
    "data": {"path": "data.csv", "format": "csv"},
    "knowledge": {"mode": "individual"},
    "embeddings": {"source": "file", "file_path": "vectors.npy", "file_ids_path": "ids.txt", "sasrec_baseline": True,
                   "sasrec_knowledge": "item"},
    "tokenizer": {"align_weight": 0.0, "num_levels": 2},
    "tasks": {"tasks": "seqrec", "use_knowledge": True},
    "train": {"model_name_or_path": "llm", "max_steps": 3, "launcher": "python"},
    "preference": {"enabled": True, "beta": 0.1},
    "evaluate": {"ks": "5,10", "popularity_penalty": 0.5},
    "cache": {"k": 10},
}
KEYS_BEFORE_THE_SPLIT = {
    "data": "31c7e54a0a8dfb0e53323679bd5c3774621f90817e2008d65ae1bb0aad9d1b10",
    "knowledge": "80b1d66e3424495a6716395e97fd2b230a787677d03737223b46c578d461feb8",
    "embeddings": "75646e9de5418ca0102e364860f393f5d7fa9f54638031e50b30ddbd6de9281d",
    "tokenizer": "7bf93a21b7a1ce23394fd5ce9c3e98afc4a6e27c1ad8f6b20c3282be357da1d0",
    "tasks": "c371fffc43064c4fe275eb5de042f52cde6c5cff48f1019a08aa59c4be3a6e1c",
    "train": "1d30fb96a911b0cf85e454abf0ce3cb1645a99a4ced3adb99436095a07078f7a",
    "preference": "654ee48c9ffeae66ac2362396c3332524d3d351778dfade79a0b3b2c2adcd779",
    "evaluate": "647a114b6cd78ae6a9e44a1cffcfde406332a681583cc0b9092aae11f191b232",
    "cache": "e1818288c989fa6144f69cbf94470e09d1fb4c5b662e15de0c7c2d6374b02555",
    "export": "54759d1291eb0cc98c53a6ec16bba5e096afbf2f7f08851cce27c230bd852057",
}

# Stages whose output changed since, with their version bumped on purpose: only they (and their downstream) re-run.
BUMPED = {
    # tasks v3: data text made inert (InertText) in every row; its downstream stages follow
    "tasks": "ecc8af8b1016d774c58b3e84f9db60361819c4cd95f01cab714bf0f4bb0803ce",
    # train: this run's `new_rows_init: auto` (pretrained) now starts item-vector rows, not mean rows, and its key
    # says so (`new_rows_init_auto`); its downstream stages follow. Explicit starts keep their keys.
    "train": "e0b5062e348700a7499b1e3e302603845a5627a3f99db677ebdf03a90414eb05",
    "preference": "4e8d75ac3db0415b2747a929ae358d00190586faf613869998fb34e09bad7187",
    "evaluate": "38b9ef2e49d449af6f4588f07dd03f363b811d05b6de42cb13a1c9e43a7eaa3e",
    "cache": "a1ec03b0e6191cd73434ab1d1919c2972d3f402922d738dd9d0a4e1a1b1fbd7c",  # also v2: binary store rows
    "export": "2352e34c1f01c5af440bbc74228600c0eca75e86b4c596c71143492fe806ec61",
}
KEYS_NOW = {**KEYS_BEFORE_THE_SPLIT, **BUMPED}


@pytest.fixture
def run_folder(tmp_path, monkeypatch):
    """Inputs at relative paths (the section, so the key, holds the path), a home with no models in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALIGNREC_HOME", str(tmp_path / "home"))
    Path("data.csv").write_text("user_id,item_id,timestamp\nu1,i1,1\n")
    Path("vectors.npy").write_bytes(b"\x93NUMPY not really")
    Path("ids.txt").write_text("i1\n")
    Path("llm").mkdir()
    (Path("llm") / "config.json").write_text("{}")
    return run_config_from_dict(RUN, source="keys.yaml")


def test_stage_keys_are_the_ones_computed_before_the_split(run_folder):
    plans = plan_stages(STAGES, run_folder.run_dir, run_folder.sections, run_folder)
    assert [p.name for p in plans] == list(KEYS_BEFORE_THE_SPLIT)
    assert {p.name: p.key for p in plans} == KEYS_NOW


def test_a_run_folder_made_before_the_split_is_still_complete(run_folder):
    for stage, key in KEYS_BEFORE_THE_SPLIT.items():  # stage.json as the runner wrote it before the split
        (run_folder.run_dir / stage).mkdir(parents=True)
        (run_folder.run_dir / stage / STAGE_FILE).write_text(json.dumps({"key": key, "status": "complete",
                                                                          "stage": stage, "version": 1}))
    plans = plan_stages(STAGES, run_folder.run_dir, run_folder.sections, run_folder)
    assert [(p.name, p.state) for p in plans] == [(stage, "stale" if stage in BUMPED else "done")
                                                  for stage in KEYS_BEFORE_THE_SPLIT]


def test_a_stage_version_is_part_of_its_key_and_its_downstream_keys(run_folder):
    """Bumping one stage's ``version`` re-runs that stage and what reads it, nothing upstream."""
    import dataclasses

    before = {p.name: p.key for p in plan_stages(STAGES, run_folder.run_dir, run_folder.sections, run_folder)}
    bumped = [dataclasses.replace(s, version=s.version + 1) if s.name == "tasks" else s for s in STAGES]
    after = {p.name: p.key for p in plan_stages(bumped, run_folder.run_dir, run_folder.sections, run_folder)}
    changed = [name for name in before if before[name] != after[name]]
    assert changed == ["tasks", "train", "preference", "evaluate", "cache", "export"]
    assert next(s for s in STAGES if s.name == "tasks").version == 3  # v3: inert data text in the rows
