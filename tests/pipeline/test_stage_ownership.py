"""Issue 33 class 1: re-running a stage keeps the user's files; ownership is proven by the marker's content."""

from __future__ import annotations

import json

import pytest

from alignrec.pipeline.runner import run_stages
from recdata.errors import OutputFolderError
from recdata.outputs import MARKER, is_owned
from tests.pipeline.test_runner import _stages


def test_rerun_keeps_a_user_file_in_the_stage_folder(tmp_path):
    calls: list[str] = []
    run_stages(_stages(calls), tmp_path, {"tokenizer": {"value": 2}}, None)
    notes = tmp_path / "tokenizer" / "notes.txt"
    notes.write_text("mine\n")
    run_stages(_stages(calls), tmp_path, {"tokenizer": {"value": 3}}, None)  # the stage re-runs
    assert notes.read_text() == "mine\n"
    assert (tmp_path / "tokenizer" / "out.txt").read_text() == str({"value": 3})
    run_stages(_stages(calls), tmp_path, {"tokenizer": {"value": 4}}, None, force=True)
    assert notes.read_text() == "mine\n"


def test_a_folder_from_before_the_file_lists_keeps_what_was_added_after_its_stage(tmp_path):
    """A stage folder whose marker predates ``stage_files``: its outputs go, a file added later stays."""
    import os

    calls: list[str] = []
    run_stages(_stages(calls), tmp_path, {"tokenizer": {"value": 2}}, None)
    stage = tmp_path / "tokenizer"
    marker = json.loads((stage / MARKER).read_text())
    marker.pop("stage_files", None)
    marker.pop("stage_foreign", None)
    (stage / MARKER).write_text(json.dumps(marker))
    finished = (stage / "stage.json").stat().st_mtime
    os.utime(stage / "out.txt", (finished - 10, finished - 10))
    notes = stage / "notes.txt"
    notes.write_text("mine\n")
    os.utime(notes, (finished + 10, finished + 10))
    run_stages(_stages(calls), tmp_path, {"tokenizer": {"value": 3}}, None)
    assert notes.read_text() == "mine\n"
    assert (stage / "out.txt").read_text() == str({"value": 3})


def test_a_foreign_folder_with_a_stage_json_is_refused_untouched(tmp_path):
    calls: list[str] = []
    user = tmp_path / "data"
    user.mkdir()
    (user / "stage.json").write_text(json.dumps({"key": "x", "status": "complete", "stage": "data"}))
    (user / "notes.txt").write_text("mine\n")
    with pytest.raises(OutputFolderError, match=r"data.*not written by alignrec"):
        run_stages(_stages(calls), tmp_path, {}, None)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt", "stage.json"]
    assert calls == []


def test_a_marker_file_that_is_not_ours_proves_nothing(tmp_path):
    (tmp_path / MARKER).write_text("hello\n")
    assert not is_owned(tmp_path)
    (tmp_path / MARKER).write_text(json.dumps({"command": "data prepare"}))
    assert is_owned(tmp_path)
