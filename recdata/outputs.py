"""Output-folder ownership: a command only ever replaces a folder that an alignrec command wrote itself.

Every command that writes a folder calls :func:`claim_output_dir` before writing. It refuses

- an output that is, contains, or lies inside one of the command's inputs (``--output_dir`` = ``--split_dir``);
- a non-empty folder without our marker (a user's folder), unless ``overwrite=True``;

and writes the marker ``.alignrec-output.json`` (command, time) into the folder. Files already in a folder
that we own are the command's to replace; files we did not write are never deleted by a claim.

:func:`staged_output_dir` is the write path for commands that produce a whole folder at once (``data prepare``,
``embed``, ``tasks build``): it claims the folder, yields a temporary sibling to write into, and on success moves
each written entry into place by name. Entries the previous run of the command listed in the marker but this
run did not write are removed (they are ours and stale); every other entry (a user's ``notes.txt``) is kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from recdata.errors import OutputFolderError

MARKER = ".alignrec-output.json"


__all__ = ["MARKER", "check_not_overlapping", "claim_output_dir", "is_owned", "read_marker", "staged_output_dir",
           "update_marker"]


def is_owned(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder an alignrec command wrote: it holds the marker AND the marker's content is ours
    (a JSON object naming the command that wrote it); a file that merely has the marker's name proves nothing."""
    command = read_marker(path).get("command")
    return isinstance(command, str) and bool(command.strip())


def update_marker(path: str | os.PathLike, **fields) -> None:
    """Merge ``fields`` into the marker of an owned folder (e.g. what a pipeline stage wrote there)."""
    _write_marker(Path(path), {**read_marker(path), **fields})


def check_not_overlapping(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                          command: str = "") -> None:
    """Refuse an output equal to, inside, or containing any input path."""
    out = Path(output).resolve()
    for raw in inputs:
        if not raw:
            continue
        src = Path(raw).resolve()
        if out == src or src in out.parents or out in src.parents:
            what = "is" if out == src else "lies inside" if src in out.parents else "contains"
            raise OutputFolderError(  # the CLI names the command; the message names both folders
                f"output folder {output} {what} the input {raw}; choose an output folder outside every input"
            )


def check_output_dir(output: str | os.PathLike, command: str, inputs: Iterable[str | os.PathLike | None] = (),
                     overwrite: bool = False) -> Path:
    """Refuse an ``output`` this command may not write, touching nothing: a command checks first, validates its
    inputs, and claims (``claim_output_dir``) only then, so a bad input leaves no empty claimed folder behind."""
    out = Path(output)
    check_not_overlapping(out, inputs, command)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"output {out} is a file, not a folder; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not is_owned(out) and not overwrite:
        raise OutputFolderError(
            f"output folder {out} is not empty and was not written by alignrec; choose a new or empty folder, "
            "or pass --overwrite true to write into it (files alignrec does not write are kept)"
        )
    return out


def claim_output_dir(output: str | os.PathLike, command: str, inputs: Iterable[str | os.PathLike | None] = (),
                     overwrite: bool = False) -> Path:
    """Make ``output`` ours to write (see module docstring) and return it as a ``Path``."""
    out = check_output_dir(output, command, inputs, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    previous = read_marker(out)
    marker = {"command": command, "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if previous.get("files"):
        marker["files"] = previous["files"]  # what an earlier run wrote stays known until this run replaces it
    _write_marker(out, marker)
    return out


def read_marker(path: str | os.PathLike) -> dict:
    """The marker of an owned folder ({} when absent or unreadable)."""
    try:
        data = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_marker(out: Path, marker: dict) -> None:
    tmp = out / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / MARKER)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def staged_output_dir(output: str | os.PathLike, command: str, inputs: Iterable[str | os.PathLike | None] = (),
                      overwrite: bool = False) -> Iterator[Path]:
    """Claim ``output``, yield an empty temporary folder beside it; on success move its entries into ``output``.

    Only the entries this command writes (and those its previous run recorded in the marker) are replaced or
    removed; a crash leaves ``output`` as it was (the temporary folder is deleted).
    """
    out = claim_output_dir(output, command, inputs=inputs, overwrite=overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".staging", dir=out.parent))
    try:
        yield tmp
        written = sorted(entry.name for entry in tmp.iterdir() if entry.name != MARKER)
        marker = read_marker(out)
        for stale in set(marker.get("files") or ()) - set(written):
            if "/" not in stale and stale not in ("", ".", "..", MARKER):
                _remove(out / stale)
        for name in written:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                old = out / f".{name}.old"
                _remove(old)
                os.replace(target, old)
                os.replace(tmp / name, target)
                shutil.rmtree(old)
            else:
                os.replace(tmp / name, target)
        _write_marker(out, {**marker, "command": command, "files": written})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
