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


def test_optional_stage_off_leaves_downstream_keys_as_without_it(tmp_path):
    """An 'off' stage does not run and drops out of the keys of the stages that read it."""
    calls: list[str] = []
    assert [r.status for r in run_stages(_stages(calls), tmp_path / "without", {}, None)] == ["ran"] * 4
    train_key = (tmp_path / "without" / "train" / "stage.json").read_text()

    def optional(on: bool):
        stages = _stages(calls)
        extra = Stage("extra", lambda ctx: calls.append("extra") or {}, depends_on=("tasks",),
                      enabled=lambda section, run_cfg: on)
        last = Stage("train", stages[3].run, depends_on=("tasks", "extra"))
        return [*stages[:3], extra, last]

    calls.clear()
    off = run_stages(optional(False), tmp_path / "without", {}, None)
    assert [r.status for r in off] == ["skipped", "skipped", "skipped", "off", "skipped"] and calls == []
    assert (tmp_path / "without" / "train" / "stage.json").read_text() == train_key
    on = run_stages(optional(True), tmp_path / "without", {}, None)
    assert [r.status for r in on] == ["skipped", "skipped", "skipped", "ran", "ran"] and calls == ["extra", "train"]


def test_plan_reports_an_off_stage_and_from_after_it_needs_nothing_from_it(tmp_path):
    """plan_stages (``--dry_run`` / ``--status``) says ``off``; ``--from`` a later stage does not ask for its output."""
    from alignrec.pipeline.runner import plan_stages
    from alignrec.pipeline_cli import format_plan

    calls: list[str] = []
    base = _stages(calls)
    stages = [*base[:3], Stage("extra", lambda ctx: {}, depends_on=("tasks",), enabled=lambda section, run_cfg: False),
              Stage("train", base[3].run, depends_on=("tasks", "extra"))]
    without = plan_stages(base, tmp_path, {}, None)
    plans = plan_stages(stages, tmp_path, {}, None)
    assert [p.state for p in plans] == ["missing", "missing", "missing", "off", "missing"]
    assert plans[3].key == "" and plans[4].key == without[3].key and plans[4].upstream_keys == {"tasks": without[2].key}
    lines = format_plan(plans, dry_run=True).splitlines()
    assert lines[3].split()[:2] == ["extra", "off"] and lines[4].split()[:3] == ["train", "would", "run"]
    run_stages(stages, tmp_path, {}, None, until="tasks")
    assert [r.status for r in run_stages(stages, tmp_path, {}, None, start="train")] == \
        ["not selected"] * 3 + ["off", "ran"]
