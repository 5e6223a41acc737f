"""One writer per folder: an ``fcntl.flock`` lock file that names its holder and dies with it.

``alignrec run`` holds ``.<run name>.alignrec.lock`` beside its run folder while it writes the run (beside, not
inside: the folder's ownership checks see only what the run writes): a second ``alignrec run`` on the
same folder refuses at once, naming the holder (pid, host, start time, command). The kernel releases a flock
when its holder exits in any way (``kill -9`` included), so a stale lock file never blocks a rerun; the file
itself is kept (removing it would race with a second process opening it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from recdata.errors import UserError

__all__ = ["FolderLockedError", "folder_lock", "lock_file", "lock_holder"]


def lock_file(folder: str | Path) -> Path:
    """The lock file of ``folder``: ``.<name>.alignrec.lock`` in its parent."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.alignrec.lock"


class FolderLockedError(UserError):
    """Another live process holds the folder's lock."""


def lock_holder(folder: str | Path) -> dict | None:
    """What the lock file of ``folder`` says about its holder (None when absent or unreadable)."""
    try:
        return json.loads(lock_file(folder).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process (its lock file names no holder yet)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"pid {holder.get('pid')} on host {holder.get('host')} since {started} "
            f"({' '.join(holder.get('command', []))[:200]})")


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold ``folder``'s exclusive lock for the block; raise ``FolderLockedError`` naming the holder when another
    live process has it. ``what`` names the command in the message (``alignrec run``)."""
    import fcntl

    folder = Path(folder)
    path = lock_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLockedError(
                f"{folder} is being written by {_describe(lock_holder(folder))}; two {what} on one run folder would "
                "overwrite each other: wait for it to finish, stop it, or choose another run name (--name)"
            ) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock
