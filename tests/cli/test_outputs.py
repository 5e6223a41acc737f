"""Issue 11 data loss: a command refuses an output that is / contains / lies inside an input, refuses a foreign
non-empty folder (naming it), and with ``--overwrite`` keeps every file it does not write, byte for byte."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from recdata.errors import OutputFolderError
from recdata.outputs import MARKER, claim_output_dir, read_marker, staged_output_dir
from tests.cli.bad_inputs import TOKENIZE_FAST, error_lines, run_cli


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (our marker excluded)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}


def _foreign(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "keep.bin").write_bytes(bytes(range(256)))
    return folder


def _refused(argv: list[str], match: str) -> None:
    out = run_cli(argv)
    assert out.traceback == "" and out.code == 1, (out.code, out.stderr, out.traceback)
    lines = error_lines(out.stderr)
    assert len(lines) == 1 and match in lines[0], lines


def test_prepare_into_its_own_source_refuses_and_keeps_the_source(workspace, tmp_path):
    src = shutil.copytree(workspace.src, tmp_path / "d")
    before = snapshot(src)
    _refused(["data", "prepare", "--path", str(src), "--output_dir", str(src)], f"is the input {src}")
    assert snapshot(src) == before and not (src / MARKER).exists()


def _prepare(workspace, out: Path, *extra: str) -> list[str]:
    return ["data", "prepare", "--path", str(workspace.src), "--output_dir", str(out), *extra]


def _embed(workspace, out: Path, *extra: str) -> list[str]:
    return ["embed", "--split_dir", str(workspace.split), "--output_dir", str(out), *workspace.file_args(), *extra]


def _tasks(workspace, out: Path, *extra: str) -> list[str]:
    return ["tasks", "build", "--split_dir", str(workspace.split), "--item_tokenizer_dir", str(workspace.tok),
            "--hf_tokenizer_dir", "codes_only", "--output_dir", str(out), "--stats_sample", "0", *extra]


def _tokenize(workspace, out: Path, *extra: str) -> list[str]:
    return ["tokenize", "--split_dir", str(workspace.split), "--output_dir", str(out), *workspace.file_args(),
            *TOKENIZE_FAST, *extra]


def _vocab(workspace, out: Path, *extra: str) -> list[str]:
    return ["vocab", "export", "--tokenizer_dir", str(workspace.tok), "--output_dir", str(out),
            "--hf_tokenizer_dir", "none", *extra]


WRITERS = {"data prepare": (_prepare, "split.json"), "embed": (_embed, "vectors.npy"),
           "tasks build": (_tasks, "stats.json"), "tokenize": (_tokenize, "report.json"),
           "vocab export": (_vocab, "manifest.json")}


@pytest.mark.parametrize("command", list(WRITERS))
def test_foreign_folder_is_refused_then_kept_with_overwrite(workspace, tmp_path, command):
    build, product = WRITERS[command]
    out = _foreign(tmp_path / "out")
    before = snapshot(out)
    _refused(build(workspace, out), f"output folder {out} is not empty and was not written by alignrec")
    assert snapshot(out) == before and not (out / product).exists()

    assert run_cli(build(workspace, out, "--overwrite", "true")).code == 0
    assert (out / product).is_file()
    after = snapshot(out)
    assert {k: after[k] for k in before} == before  # the user's files survive byte-identical
    assert run_cli(build(workspace, out)).code == 0  # now ours: a re-run needs no flag
    assert {k: snapshot(out)[k] for k in before} == before


def test_embed_into_the_split_refuses_and_keeps_the_split(workspace, tmp_path):
    split = shutil.copytree(workspace.split, tmp_path / "split")
    before = snapshot(split)
    argv = ["embed", "--split_dir", str(split), "--output_dir", str(split), *workspace.file_args()]
    _refused(argv, f"is the input {split}")
    assert snapshot(split) == before


def test_tasks_build_inside_the_tokenizer_refuses(workspace, tmp_path):
    tok = shutil.copytree(workspace.tok, tmp_path / "tok")
    before = snapshot(tok)
    argv = ["tasks", "build", "--split_dir", str(workspace.split), "--item_tokenizer_dir", str(tok),
            "--hf_tokenizer_dir", "codes_only", "--output_dir", str(tok / "tasks")]
    _refused(argv, "lies inside the input")
    assert snapshot(tok) == before


def test_staged_writes_replace_only_what_the_command_wrote(tmp_path):
    out = tmp_path / "out"
    with staged_output_dir(out, "demo") as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "old").mkdir()
        (tmp / "old" / "x").write_text("x")
    (out / "mine.txt").write_text("user")  # a user file added to our folder later
    with staged_output_dir(out, "demo") as tmp:
        (tmp / "a.txt").write_text("2")
    assert (out / "a.txt").read_text() == "2"
    assert not (out / "old").exists()  # ours, not rewritten: stale, removed
    assert (out / "mine.txt").read_text() == "user"  # never ours: kept
    assert read_marker(out)["files"] == ["a.txt"]


def test_staged_write_that_fails_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "out"
    with staged_output_dir(out, "demo") as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), staged_output_dir(out, "demo") as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash")
    assert (out / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left behind


@pytest.mark.parametrize(("output", "inputs", "word"), [
    ("d", ["d"], "is"), ("d/sub", ["d"], "lies inside"), ("d", ["d/file.txt"], "contains")])
def test_claim_refuses_overlap(tmp_path, output, inputs, word):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputFolderError, match=f"output folder .* {word} the input"):
        claim_output_dir(tmp_path / output, "demo", inputs=[tmp_path / i for i in inputs])


def test_claim_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        claim_output_dir(tmp_path / "f", "demo")
