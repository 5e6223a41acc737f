"""Issue 33 class 4: expected environmental failures become one line at every CLI boundary, the trainer child too."""

from __future__ import annotations

import errno

import pytest

from recdata.errors import cli_error_line, os_error_message


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only"),
                                         (errno.ENOSPC, "no space left"), (errno.EISDIR, "folder where a file")])
def test_known_os_errors_name_the_path_and_the_fix(code, words):
    message = os_error_message(OSError(code, "x", "/out/run/file.bin"))
    assert message is not None and message.startswith("/out/run/file.bin: ") and words in message


def test_other_errors_stay_bugs():
    assert cli_error_line(KeyError("bug")) is None
    assert cli_error_line(OSError(errno.EBADF, "bad fd")) is None
    assert cli_error_line(FileNotFoundError(errno.ENOENT, "gone")) is None  # no path: nothing to name


def test_trainer_child_prints_one_line(tmp_path, capsys):
    from trainer.sft import run_main

    code = run_main(["--dataset_dir", str(tmp_path / "nope"), "--item_tokenizer_dir", str(tmp_path / "tok"),
                     "--output_dir", str(tmp_path / "m")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1
    assert lines[-1].startswith("alignrec train: error: ") and "nope" in lines[-1]
