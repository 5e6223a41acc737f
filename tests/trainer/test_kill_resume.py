"""``kill -9`` of ``alignrec train`` takes its trainer/sft.py child with it, and a rerun resumes from the newest
complete checkpoint (not step 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trainer.conftest import logged

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(p) for p in task.read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def _train(argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alignrec.cli", "train", *argv], **kw)


def _checkpoints(run: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in run.glob("checkpoint-*/trainer_state.json"))


def test_kill_9_takes_the_child_and_rerun_resumes(base_argv, tmp_path):
    run = tmp_path / "run"
    argv = [*base_argv, "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "2"]
    parent = _train([*argv, "--max_steps", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _checkpoints(run), 90, "the first checkpoint")
        children = _children(parent.pid)
        assert children, "alignrec train runs trainer/sft.py as a child"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        _wait_for(lambda: not any(_alive(c) for c in children), 10, "the orphaned trainer to die")
    finally:
        if parent.poll() is None:
            parent.kill()
    last = _checkpoints(run)[-1]
    rerun = _train([*argv, "--max_steps", str(last + 1)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out[-3000:]
    assert f"resuming from {run / f'checkpoint-{last}'}" in out
    losses = logged(run, "loss")
    assert max(losses) == last + 1  # one more step after the checkpoint; the steps before it are the killed run's
