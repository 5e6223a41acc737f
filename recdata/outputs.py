"""Output-folder ownership: a command only ever replaces a folder that an alignrec command wrote itself.

Every command that writes a folder calls :func:`claim_output_dir` before writing. It refuses

- an output that is, contains, or lies inside one of the command's inputs (``--output_dir`` = ``--split_dir``);
- a non-empty folder without our marker (a user's folder), unless ``overwrite=True``;

and writes the marker ``.alignrec-output.json`` (command, time) into the folder. Files already in a folder
that we own are the command's to replace; files we did not write are never deleted by a claim.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from recdata.errors import OutputFolderError

MARKER = ".alignrec-output.json"


def is_owned(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder an alignrec command wrote (it holds the marker)."""
    return (Path(path) / MARKER).is_file()


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
            raise OutputFolderError(
                f"{command + ': ' if command else ''}output folder {output} {what} the input {raw}; "
                "choose an output folder outside every input"
            )


def claim_output_dir(output: str | os.PathLike, command: str, inputs: Iterable[str | os.PathLike | None] = (),
                     overwrite: bool = False) -> Path:
    """Make ``output`` ours to write (see module docstring) and return it as a ``Path``."""
    out = Path(output)
    check_not_overlapping(out, inputs, command)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"output {out} is a file, not a folder; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not is_owned(out) and not overwrite:
        raise OutputFolderError(
            f"output folder {out} is not empty and was not written by alignrec; choose a new or empty folder, "
            "or pass --overwrite true to write into it (files alignrec does not write are kept)"
        )
    out.mkdir(parents=True, exist_ok=True)
    marker = {"command": command, "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
    return out
