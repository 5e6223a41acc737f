"""Stage skipping and invalidation of the pipeline runner, on fake stages that record their calls."""

from __future__ import annotations

import pytest

from alignrec.pipeline.runner import Stage, run_stages
from recdata.errors import UserError


def _stages(calls: list[str], fail_at: str | None = None):
    def make(name):
        def run(ctx):
            calls.append(name)
            (ctx.out_dir / "out.txt").write_text(str(ctx.config))
            if name == fail_at:
                raise RuntimeError("boom")
            return {"value": ctx.config.get("value")}
        return run

    return [
        Stage("data", make("data")),
        Stage("tokenizer", make("tokenizer"), depends_on=("data",)),
        Stage("tasks", make("tasks"), depends_on=("data", "tokenizer")),
        Stage("train", make("train"), depends_on=("tasks",)),
    ]


def test_second_run_skips_everything(tmp_path):
    calls: list[str] = []
    sections = {"data": {"value": 1}, "tokenizer": {"value": 2}}
    first = run_stages(_stages(calls), tmp_path, sections, None)
    assert [r.status for r in first] == ["ran"] * 4
    second = run_stages(_stages(calls), tmp_path, sections, None)
    assert [r.status for r in second] == ["skipped"] * 4
    assert calls == ["data", "tokenizer", "tasks", "train"]


def test_changed_tokenizer_config_reruns_it_and_downstream_only(tmp_path):
    calls: list[str] = []
    run_stages(_stages(calls), tmp_path, {"tokenizer": {"value": 2}}, None)
    calls.clear()
    results = run_stages(_stages(calls), tmp_path, {"tokenizer": {"value": 3}}, None)
    assert calls == ["tokenizer", "tasks", "train"]
    assert [r.status for r in results] == ["skipped", "ran", "ran", "ran"]


def test_from_and_until(tmp_path):
    calls: list[str] = []
    with pytest.raises(UserError, match="no complete output"):
        run_stages(_stages(calls), tmp_path, {}, None, start="tasks")
    run_stages(_stages(calls), tmp_path, {}, None, until="tokenizer")
    assert calls == ["data", "tokenizer"]
    calls.clear()
    results = run_stages(_stages(calls), tmp_path, {}, None, start="tasks")
    assert calls == ["tasks", "train"]
    assert [r.status for r in results] == ["not selected", "not selected", "ran", "ran"]
    with pytest.raises(ValueError, match="not a stage"):
        run_stages(_stages(calls), tmp_path, {}, None, start="nope")


def test_failed_stage_is_rerun_and_keeps_its_partial_folder(tmp_path):
    calls: list[str] = []
    with pytest.raises(RuntimeError, match="boom"):
        run_stages(_stages(calls, fail_at="tasks"), tmp_path, {}, None)
    (tmp_path / "tasks" / "checkpoint").write_text("resume me")
    calls.clear()
    run_stages(_stages(calls), tmp_path, {}, None)
    assert calls == ["tasks", "train"]
    assert (tmp_path / "tasks" / "checkpoint").read_text() == "resume me"


def test_force_reruns_selected(tmp_path):
    calls: list[str] = []
    run_stages(_stages(calls), tmp_path, {}, None)
    calls.clear()
    run_stages(_stages(calls), tmp_path, {}, None, start="train", force=True)
    assert calls == ["train"]
