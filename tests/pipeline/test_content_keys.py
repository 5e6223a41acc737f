"""Issue 11: a stage's key follows the *content* of every file it reads (not its path, size or mtime) and its code
version; ``plan_stages`` says why a stage would run; ``alignrec run --set/--dry_run/--status``."""

from __future__ import annotations

import os
import time

import pytest

from alignrec.pipeline.runner import Stage, plan_stages, run_stages
from alignrec.pipeline.stages import STAGES
from recdata.fingerprint import content_fingerprint
from tests.cli.bad_inputs import run_cli
from tests.cli.conftest import workspace  # noqa: F401  (the shared tiny artefacts)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNREC_HOME", str(tmp_path / "home"))


def _stages(calls: list[str], version: int = 1):
    def make(name):
        def run(ctx):
            calls.append(name)
            return {}
        return run

    return [Stage("embeddings", make("embeddings"), version=version,
                  inputs=lambda section, run_cfg: {"file_path": section.get("file_path", "")}),
            Stage("tokenizer", make("tokenizer"), depends_on=("embeddings",))]


def test_changed_file_content_reruns_the_stage_and_downstream(tmp_path):
    vectors = tmp_path / "v.bin"
    vectors.write_bytes(b"\x00" * 64)
    sections = {"embeddings": {"file_path": str(vectors)}}
    calls: list[str] = []
    run_stages(_stages(calls), tmp_path / "run", sections, None)
    stat = vectors.stat()
    vectors.write_bytes(b"\x01" * 64)  # same size, same path, same config
    os.utime(vectors, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    plans = plan_stages(_stages([]), tmp_path / "run", sections, None)
    assert [p.state for p in plans] == ["stale", "stale"]
    assert f"input content changed: file_path ({vectors})" in plans[0].reason
    assert plans[1].reason == "upstream stage changed: embeddings"
    calls.clear()
    run_stages(_stages(calls), tmp_path / "run", sections, None)
    assert calls == ["embeddings", "tokenizer"]


def test_touch_without_content_change_skips(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_text("same")
    sections = {"embeddings": {"file_path": str(folder)}}
    calls: list[str] = []
    run_stages(_stages(calls), tmp_path / "run", sections, None)
    time.sleep(0.01)
    os.utime(folder / "a.txt")  # new mtime, same bytes: only the hash fast path misses (size+mtime would re-run)
    calls.clear()
    results = run_stages(_stages(calls), tmp_path / "run", sections, None)
    assert calls == [] and [r.status for r in results] == ["skipped", "skipped"]


def test_code_version_enters_the_key(tmp_path):
    calls: list[str] = []
    run_stages(_stages(calls, version=1), tmp_path, {}, None)
    plans = plan_stages(_stages([], version=2), tmp_path, {}, None)
    assert plans[0].state == "stale" and plans[0].reason == "code version 1 -> 2"


def test_fingerprint_is_content_only(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "x.txt").write_text("x")
    (b / ".alignrec-output.json").write_text("{}")  # our marker is not content
    assert content_fingerprint(a) == content_fingerprint(b)
    (b / "sub" / "x.txt").write_text("y")
    assert content_fingerprint(a) != content_fingerprint(b)
    assert content_fingerprint(tmp_path / "nope") == "missing" and content_fingerprint("") == ""


def test_every_stage_declares_the_files_it_reads():
    class Cfg:
        sections = {"train": {"deepspeed": "ds_configs/zero2.json", "model_name_or_path": "/m"},
                    "embeddings": {"llm_dir": "/llm"}}

    inputs = {s.name: s.inputs for s in STAGES}
    assert set(inputs["data"]({"path": "/d", "item_path": "/i"}, Cfg)) == {"path", "item_path"}
    emb = inputs["embeddings"]({"source": "file", "file_path": "/v.npy", "file_ids_path": "/ids"}, Cfg)
    assert emb == {"file_path": "/v.npy", "file_ids_path": "/ids"}
    assert inputs["embeddings"]({"source": "text", "text_encoder": "llm", "llm_dir": "/llm"}, Cfg)["text_encoder"] == "/llm"
    assert inputs["tokenizer"]({"align_weight": 0.5}, Cfg) == {"alignment_llm": "/llm"}
    assert inputs["tasks"]({"query_file": "/q.json"}, Cfg) == {"query_file": "/q.json", "hf_tokenizer": "/m"}
    train = inputs["train"](Cfg.sections["train"], Cfg)
    assert train["model"] == "/m" and train["deepspeed"].endswith("ds_configs/zero2.json")


def _config(tmp_path, workspace) -> str:  # noqa: F811
    path = tmp_path / "run.yaml"
    path.write_text(f"name: t\nruns_dir: {tmp_path / 'runs'}\ndata:\n  path: {workspace.src}\n")
    return str(path)


def test_run_dry_run_status_and_set(tmp_path, workspace, capsys):  # noqa: F811
    config = _config(tmp_path, workspace)
    assert run_cli(["run", "--config", config, "--dry_run"]).code == 0
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing

    from alignrec.cli import main

    assert main(["run", "--config", config, "--until", "data"]) == 0
    capsys.readouterr()
    assert main(["run", "--config", config, "--status"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["data"].split()[1] == "done" and lines["embeddings"].split()[1] == "missing"

    assert main(["run", "--config", config, "--dry_run", "--set", "data.min_user_interactions=2"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "would run" in lines["data"] and "config changed: min_user_interactions" in lines["data"]

    out = run_cli(["run", "--config", config, "--dry_run", "--set", "tokenizer.num_levels=3.5"])
    assert out.code == 2 and "num_levels: 3.5 is not an integer" in out.stderr
    out = run_cli(["run", "--config", config, "--set", "tokeniser.num_levels=3"])
    assert out.code == 2 and "'tokeniser' is not a section" in out.stderr


def test_run_refuses_a_foreign_run_folder(tmp_path, workspace):  # noqa: F811
    (tmp_path / "runs" / "t").mkdir(parents=True)
    (tmp_path / "runs" / "t" / "notes.txt").write_text("mine")
    out = run_cli(["run", "--config", _config(tmp_path, workspace), "--until", "data"])
    assert out.code == 1 and "not written by alignrec" in out.stderr
    assert (tmp_path / "runs" / "t" / "notes.txt").read_text() == "mine"
