"""Where a cache build lives: a local folder or any ``pyarrow.fs`` / fsspec URI, and how files are committed there.

The commit protocol has to hold on object stores, which have no atomic rename:

* every file has a **write-once name** fixed by the deterministic chunk plan (``shard-*/chunk-NNNNNN.parquet``),
  so a retried or repeated write of a chunk rewrites the same name with the same users, never a second copy;
* a file is committed in **one step**: on a local filesystem a temp file renamed over the name
  (``recdata.io.atomic_write_bytes``), elsewhere one ``open_output_stream`` whose close is the object PUT
  (visible whole or not at all);
* ``manifest.json`` is written **last**, after every chunk is described (rows, sha256); readers and
  ``publish`` trust only the manifest, so a chunk left by a killed writer is either whole and listed, or
  not listed and rewritten by the rerun.

A ``Location`` is picklable (pyarrow filesystems are), so Ray actors receive it and write directly.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from recdata.errors import ConfigError
from recdata.io import atomic_write_bytes

__all__ = ["Location", "open_location"]

_READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class Location:
    """A folder on a ``pyarrow.fs.FileSystem``: ``fs`` + ``root`` (a path inside ``fs``), ``uri`` for messages."""

    fs: pafs.FileSystem
    root: str
    uri: str

    @property
    def local_dir(self) -> Path | None:
        """The folder as a local path when ``fs`` is the plain local filesystem (atomic rename works)."""
        return Path(self.root) if type(self.fs) is pafs.LocalFileSystem else None

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def display(self, rel: str) -> str:
        """``rel`` inside this location, spelled the way the user gave the location (for error messages)."""
        return f"{self.uri.rstrip('/')}/{rel}" if rel else self.uri

    def child(self, rel: str) -> Location:
        return Location(self.fs, self.path(rel), self.display(rel))

    def is_file(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def is_dir(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.Directory

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def open_input_file(self, rel: str) -> pa.NativeFile:
        """A seekable file (what ``pyarrow.parquet`` needs to read only a footer)."""
        return self.fs.open_input_file(self.path(rel))

    def sha256(self, rel: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self.path(rel)) as f:
            for block in iter(lambda: f.read(_READ_BLOCK), b""):
                digest.update(block)
        return digest.hexdigest()

    def write_once(self, rel: str, data: bytes) -> None:
        """Commit ``data`` under ``rel`` in one step (local: temp + rename; elsewhere: one PUT), replacing it."""
        local = self.local_dir
        if local is not None:
            atomic_write_bytes(local / rel, data)
            return
        parent = self.path(rel).rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(self.path(rel)) as f:
            f.write(data)

    def list_names(self, rel_dir: str, prefix: str = "", suffix: str = "") -> list[str]:
        """Sorted names of the files directly in ``rel_dir`` (empty when it does not exist)."""
        selector = pafs.FileSelector(self.path(rel_dir), allow_not_found=True, recursive=False)
        names = [info.base_name for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File]
        return sorted(n for n in names if n.startswith(prefix) and n.endswith(suffix))

    def has_entries(self) -> bool:
        """True when the folder holds anything but hidden names (what ``claim`` refuses to take over)."""
        selector = pafs.FileSelector(self.root, allow_not_found=True, recursive=False)
        return any(not info.base_name.startswith(".") for info in self.fs.get_file_info(selector))


def open_location(target: str | os.PathLike | Location, filesystem: pafs.FileSystem | None = None) -> Location:
    """A ``Location`` for a local path, a URI pyarrow knows (``file://``, ``s3://``, ``gs://``, ``hdfs://``,
    ``abfs://``), any other fsspec URI (wrapped in ``pyarrow.fs.PyFileSystem``), or ``target`` inside
    ``filesystem`` (e.g. a ``SubTreeFileSystem``)."""
    if isinstance(target, Location):
        return target
    text = os.fspath(target)
    if filesystem is not None:
        return Location(filesystem, text.rstrip("/") or "/", text)
    if "://" not in text:
        return Location(pafs.LocalFileSystem(), str(Path(text).absolute()), text)
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as arrow_error:
        try:
            import fsspec.core
        except ImportError:
            raise ConfigError(f"{text}: pyarrow does not know this URI scheme ({arrow_error}) and fsspec is not "
                              "installed; pip install fsspec and the scheme's package (e.g. gcsfs, adlfs)") from None
        try:
            spec_fs, path = fsspec.core.url_to_fs(text)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"{text}: neither pyarrow nor fsspec can open this URI ({exc}); install the "
                              "scheme's fsspec package or give a local folder") from None
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(spec_fs))
    return Location(fs, path.rstrip("/") or "/", text)
