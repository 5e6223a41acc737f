"""One writer per run folder (a flock that names its holder and dies with it); a full disk leaves nothing half-written."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys

import pytest

from recdata.errors import cli_error_line
from recdata.locks import FolderLockedError, folder_lock, lock_file

HOLD = ("import sys, time\nfrom recdata.locks import folder_lock\n"
        "with folder_lock(sys.argv[1], 'alignrec run'):\n    print('held', flush=True)\n    time.sleep(60)\n")


def test_second_writer_refuses_naming_the_holder(tmp_path):
    run = tmp_path / "runs" / "demo"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError) as info, folder_lock(run, "alignrec run"):
            pass
        message = str(info.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and " since " in message
        assert cli_error_line(info.value)[0] == message  # one line at the CLI
        os.kill(holder.pid, signal.SIGKILL)  # the lock dies with its holder: no stale lock
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
    with folder_lock(run, "alignrec run"):
        assert lock_file(run).is_file()
    assert not run.exists()  # the lock lives beside the run folder, never inside it


def test_run_pipeline_refuses_while_another_run_holds_the_folder(tmp_path, monkeypatch):
    from alignrec import pipeline

    run_cfg = type("Cfg", (), {"sections": {}, "source": "test.yaml", "run_dir": tmp_path / "runs" / "x"})()
    import alignrec.pipeline.stages as stages

    monkeypatch.setattr(stages, "validate_sections", lambda *a: None)
    monkeypatch.setattr(pipeline, "RunConfig", type(run_cfg))
    monkeypatch.setattr(pipeline, "_claim_run_dir", lambda cfg: pytest.fail("claimed a locked run folder"))
    with folder_lock(run_cfg.run_dir, "alignrec run"), pytest.raises(FolderLockedError, match=f"pid {os.getpid()}"):
        pipeline.run_pipeline(run_cfg)


@pytest.mark.parametrize("kind", ["text", "json", "bytes"])
def test_full_disk_leaves_old_file_and_no_temp(tmp_path, monkeypatch, kind):
    import builtins

    import recdata.io as rio

    target = tmp_path / "out" / "stats.json"
    rio.atomic_write_text(target, "old\n")
    real_open = builtins.open

    class FullFile:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rio, "open", lambda p, mode="r", *a, **k: FullFile(real_open(p, mode, *a, **k)), raising=False)
    write = {"text": lambda: rio.atomic_write_text(target, "new\n"),
             "json": lambda: rio.atomic_write_json(target, {"a": 1}),
             "bytes": lambda: rio.atomic_write_bytes(target, b"new")}[kind]
    with pytest.raises(OSError) as info:
        write()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["stats.json"]  # the temp file is gone
    line = cli_error_line(info.value)
    assert line is not None and "\n" not in line[0] and str(target) in line[0] and "ENOSPC" in line[0]


def test_full_disk_in_atomic_dir_removes_the_temp_dir(tmp_path):
    from recdata.io import atomic_path

    target = tmp_path / "model"
    with pytest.raises(OSError), atomic_path(target, is_dir=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []  # nothing left behind, nothing renamed into place
