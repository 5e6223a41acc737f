"""Content fingerprints of input files and folders, for the keys that decide whether a stage re-runs.

A key must change when the *content* of an input changes, not when its config does: ``content_fingerprint``
hashes every file (sha256). Size, mtime and inode are only a fast path: a file whose (size, mtime_ns, inode)
match the hash cache (``$ALIGNREC_HOME/cache/file_hashes.json``) is not read again. A file rewritten with
the same size within the mtime granularity would be missed by the fast path alone, so the cache is keyed on
all three and any change reads the file again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from recdata.io import atomic_write_json, sha256_file, sha256_json

logger = logging.getLogger(__name__)

__all__ = ["content_fingerprint", "hash_cache_path"]

# Names that never count as content: our own ownership marker and temporary files.
IGNORED_NAMES = (".alignrec-output.json",)


def hash_cache_path() -> Path:
    from recdata.paths import alignrec_home

    return alignrec_home() / "cache" / "file_hashes.json"


class _HashCache:
    """{absolute path: [size, mtime_ns, inode, sha256]}; saved atomically when something new was hashed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.changed = False
        try:
            self.entries: dict[str, list[Any]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    def sha256(self, file: Path) -> str:
        st = file.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        key = str(file.resolve())
        hit = self.entries.get(key)
        if isinstance(hit, list) and len(hit) == 4 and hit[:3] == stamp:
            return str(hit[3])
        digest = sha256_file(file)
        self.entries[key] = [*stamp, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if not self.changed:
            return
        try:
            atomic_write_json(self.path, self.entries, indent=None)
        except OSError as exc:  # a read-only home only costs speed
            logger.debug("could not save the file hash cache %s: %s", self.path, exc)


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.endswith((".tmp", ".staging")))
        out.extend(Path(dirpath) / f for f in sorted(filenames)
                   if f not in IGNORED_NAMES and not f.endswith(".tmp"))
    return out


def content_fingerprint(path: str | os.PathLike | None, cache: bool = True) -> str:
    """sha256 over (relative name, content hash) of every file under ``path``; ``"missing"`` when it does not
    exist, ``""`` for an empty/None path. Renaming the folder does not change it; editing any byte does."""
    if not path:
        return ""
    root = Path(path).expanduser()
    if not root.exists():
        return "missing"
    hashes = _HashCache(hash_cache_path()) if cache else None
    entries = []
    for file in _files(root):
        rel = file.name if file == root else file.relative_to(root).as_posix()
        entries.append([rel, hashes.sha256(file) if hashes else sha256_file(file)])
    if hashes:
        hashes.save()
    return sha256_json({"kind": "file" if root.is_file() else "folder", "files": entries})
