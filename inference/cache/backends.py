"""The store interface ``CacheReader`` reads through, and its SQLite implementation.

A *store* holds published versions and a pointer to the live one. The reader needs four things from it, so
that is the whole interface: a cheap token that changes when the pointer moves (``pointer``), the version the
token names (``resolve``), opening that version (``open_version``) and closing. A *version* answers a batch
of lookups from itself only: ``lookup_rows`` gives each user's stored row (``inference.cache.rows``: catalogue
indices and scores, one read), ``lookup`` the decoded ``[(item_id, score)]``; a version deleted under a reader
raises ``VersionGoneError`` and the reader re-reads the pointer instead of answering from nothing. The version
holds its catalogue (``catalogue``: each item's JSON string) and ``row_format``, loaded when it is opened. A per-scenario version (meta ``scenarios``)
keys its rows ``user + "\x1f" + scenario`` (``inference.cache.scenarios``) and holds one fallback per scenario,
loaded with the version; ``lookup(user_ids, scenario)`` does the keying. ``inference.cache.reader.open_store`` picks the
implementation from the location: a folder (SQLite, ``inference.cache.store``) or a ``redis://`` URL (``inference.cache.redis_store``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from inference.cache.rows import RowFormat, catalogue_ids, decode_catalogue
from inference.cache.scenarios import scenario_key
from inference.cache.store import CURRENT_NAME, VERSIONS_DIR
from recdata.errors import InputFileError, UserError

__all__ = ["CacheStore", "SQLiteStore", "StoreVersion", "VersionGoneError", "is_redis_url"]

Recs = list[tuple[str, float]]
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class VersionGoneError(RuntimeError):
    """The version a reader holds (or was about to open) was replaced or deleted by a publish; re-read the pointer."""


@dataclass
class StoreVersion(ABC):
    """One published version: its name (unique per publish), metadata, popular-items fallback(s), catalogue."""

    name: str
    meta: dict[str, Any]
    fallback: Recs
    scenario_fallback: dict[str, Recs] = field(default_factory=dict)  # per-scenario versions: scenario -> fallback
    catalogue: list[bytes] = field(default_factory=list)  # each item's JSON string, in index order
    row_format: RowFormat = RowFormat(2, "float16")

    @cached_property
    def item_ids(self) -> list[str]:
        """The catalogue's item ids, in index order (decoded on first use)."""
        return catalogue_ids(self.catalogue)

    def decode(self, row: bytes) -> Recs:
        """``[(item_id, score)]`` of one stored row."""
        indices, scores = self.row_format.decode(row)
        ids = self.item_ids
        return [(ids[i], s) for i, s in zip(indices, scores, strict=True)]

    @property
    def scenarios(self) -> list[str]:
        """The scenarios of a per-scenario version ([] for a per-user one)."""
        return list(self.meta.get("scenarios") or [])

    def fallback_for(self, scenario: str | None) -> Recs:
        """The fallback of a user missing from the cache (for ``scenario`` on a per-scenario version)."""
        return self.fallback if scenario is None else self.scenario_fallback.get(scenario, [])

    @staticmethod
    def row_keys(user_ids: Sequence[str], scenario: str | None) -> list[str]:
        """The stored row keys of ``user_ids`` (with ``scenario``: the (user, scenario) keys)."""
        return list(user_ids) if scenario is None else [scenario_key(u, scenario) for u in user_ids]

    def lookup(self, user_ids: Sequence[str], scenario: str | None = None) -> list[Recs | None]:
        """Cached top-K of each user (in ``scenario``) from this version only (None: not in the cache)."""
        return [None if row is None else self.decode(row) for row in self.lookup_rows(user_ids, scenario)]

    @abstractmethod
    def lookup_rows(self, user_ids: Sequence[str], scenario: str | None = None) -> list[bytes | None]:
        """The stored row of each user (in ``scenario``) from this version only, in one read (None: not cached)."""

    @abstractmethod
    def close(self) -> None: ...


class CacheStore(ABC):
    """Where published versions live; ``location`` is what the user passed (folder or URL)."""

    location: str
    # True when ``StoreVersion.lookup`` itself checks, atomically with the read, that its version is still the
    # live one (raising ``VersionGoneError`` if not): the reader then skips its own pointer check (one round trip
    # per lookup instead of two for Redis).
    lookup_checks_pointer: bool = False

    @abstractmethod
    def pointer(self) -> Hashable:
        """A cheap token that changes whenever the live-version pointer changes."""

    @abstractmethod
    def resolve(self, token: Hashable) -> str:
        """The name of the version ``token`` points at."""

    @abstractmethod
    def open_version(self, name: str) -> StoreVersion: ...

    def close(self) -> None:  # noqa: B027 - stores without connections have nothing to close
        pass


def is_redis_url(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and location.startswith(REDIS_SCHEMES)


def __getattr__(name: str):
    """Deprecated alias (one release): ``open_store`` moved to ``inference.cache.reader`` (it picks an
    implementation, so it sits above them: this module is the interface ``redis_store`` implements)."""
    if name == "open_store":
        import warnings

        warnings.warn("inference.cache.backends.open_store moved to inference.cache.reader.open_store (or "
                      "inference.cache.open_store)", DeprecationWarning, stacklevel=2)
        from inference.cache.reader import open_store  # shim: listed in the import contract's ignore_imports

        return open_store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SQLiteStore(CacheStore):
    """``store_dir/CURRENT`` + ``store_dir/versions/*.sqlite`` as written by ``publish_cache``.

    The pointer token is ``stat(CURRENT)`` (about a microsecond), so checking it on every lookup is cheap.
    """

    def __init__(self, store_dir: str | os.PathLike):
        self.store_dir = Path(store_dir)
        self.location = str(store_dir)
        self._pointer = self.store_dir / CURRENT_NAME

    def pointer(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self._pointer)
        except FileNotFoundError:
            raise InputFileError(
                f"{self._pointer} not found: no cache is published in {self.store_dir}; run `alignrec cache publish`"
            ) from None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def resolve(self, token: Hashable) -> str:
        return Path(self._pointer.read_text(encoding="utf-8").strip()).stem

    def open_version(self, name: str) -> _SQLiteVersion:
        path = self.store_dir / VERSIONS_DIR / f"{name}.sqlite"
        if not path.is_file():
            raise VersionGoneError(f"{path} does not exist")
        try:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise VersionGoneError(f"{path}: {exc}") from exc  # unlinked between the check and the open
        fix = f"`alignrec cache publish --cache_dir C --store_dir {self.store_dir}`"
        try:
            meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
            if "k" not in meta:
                raise UserError(f"{path} has no 'k' in its meta table; republish it with {fix}")
            row_format = RowFormat.from_meta(meta, str(path), fix)
            fallback = [(i, s) for i, s in con.execute("SELECT item_id, score FROM fallback ORDER BY rank")]
            per_scenario: dict[str, Recs] = {}
            if meta.get("scenarios"):
                for scenario, item, score in con.execute(
                        "SELECT scenario, item_id, score FROM scenario_fallback ORDER BY scenario, rank"):
                    per_scenario.setdefault(scenario, []).append((item, score))
            con.execute("SELECT items FROM recs LIMIT 1").fetchall()
            parts = [items for (items,) in con.execute("SELECT items FROM catalogue ORDER BY part")]
        except UserError:
            con.close()
            raise
        except (sqlite3.Error, ValueError) as exc:
            con.close()
            if not path.exists():
                raise VersionGoneError(f"{path} was deleted while being opened") from exc
            raise UserError(f"{path} is not a readable cache version ({exc}); republish it with {fix}") from exc
        return _SQLiteVersion(name, meta, fallback, per_scenario, decode_catalogue(parts), row_format, con)


_ONE_ROW = "SELECT items FROM recs WHERE user_id = ?"


@dataclass
class _SQLiteVersion(StoreVersion):
    con: sqlite3.Connection | None = None

    def lookup_rows(self, user_ids: Sequence[str], scenario: str | None = None) -> list[bytes | None]:
        # One open connection per version: the file stays readable after a publish unlinks it (POSIX).
        keys = self.row_keys(user_ids, scenario)
        if len(keys) == 1:
            found = self.con.execute(_ONE_ROW, keys).fetchone()
            return [None if found is None else found[0]]
        rows: dict[str, bytes] = {}
        for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
            part = keys[start : start + 500]
            query = f"SELECT user_id, items FROM recs WHERE user_id IN ({','.join('?' * len(part))})"
            rows.update(self.con.execute(query, part))
        return [rows.get(key) for key in keys]

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None
