"""``CacheReader``: in-process lookups of a published cache, following version switches safely.

Each lookup is a single ``SELECT`` on one read-only connection to one version file, so a result always
comes whole from one version. Before a lookup the reader ``stat``s ``CURRENT`` (about a microsecond);
when a publish replaced it, the reader opens the new version and closes the old one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.cache.scenarios import scenario_key
from inference.cache.store import CURRENT_NAME, VERSIONS_DIR
from recdata.errors import UserError


@dataclass(frozen=True)
class CacheResult:
    user_id: str
    items: list[tuple[str, float]]  # best first; for a fallback, (item_id, popularity count)
    fallback: bool  # True: the user is not in the cache and ``items`` are the popular-items fallback
    version: str  # the published version (file stem, unique per publish) this result comes from
    scenario: str | None = None  # the scenario asked for (per-scenario stores), else None


@dataclass
class ReaderStats:
    lookups: int = 0
    hits: int = 0
    misses: int = 0  # users answered with the fallback
    reloads: int = 0  # version switches followed


@dataclass
class _Version:
    name: str
    con: sqlite3.Connection
    meta: dict[str, Any]
    fallback: list[tuple[str, float]]
    pointer_key: tuple[int, int, int] = field(default=(0, 0, 0))
    scenario_fallback: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # per-scenario stores


class CacheReader:
    """Look up a user's cached top-K in the live version of ``store_dir``.

    A missing user gets the popular-items fallback stored at publish time (``CacheResult.fallback`` is
    True) and is counted in ``stats.misses``. ``refresh_interval_s`` = 0 checks for a new version on every
    lookup; a larger value checks at most that often. Safe to share between threads.
    """

    def __init__(self, store_dir: str | os.PathLike, refresh_interval_s: float = 0.0):
        self.store_dir = Path(store_dir)
        self.refresh_interval_s = refresh_interval_s
        self.stats = ReaderStats()
        self._pointer = self.store_dir / CURRENT_NAME
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._version: _Version | None = None
        with self._lock:
            self._refresh(force=True)

    @property
    def version(self) -> str:
        """The live published version: ``v-<publish time>-<build version>``."""
        return self._live().name

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._live().meta)

    @property
    def scenarios(self) -> list[str]:
        """Scenarios of a per-scenario store ([] for a per-user one)."""
        return list(self._live().meta.get("scenarios") or [])

    def get(self, user_id: str, scenario: str | None = None) -> CacheResult:
        """The user's cached top-K; on a per-scenario store, ``scenario`` is required and picks the list (a
        missing (user, scenario) pair gets that scenario's fallback)."""
        with self._lock:
            live = self._live()
            scenarios = live.meta.get("scenarios") or []
            if scenario is None and scenarios:
                raise UserError(f"the cache in {self.store_dir} is per scenario; pass a scenario, one of {scenarios}")
            if scenario is not None and scenario not in scenarios:
                what = f"one of {scenarios}" if scenarios else "none: this store is per user (pass no scenario)"
                raise UserError(f"scenario {scenario!r} is not in the cache of {self.store_dir}; scenarios: {what}")
            key = user_id if scenario is None else scenario_key(user_id, scenario)
            row = live.con.execute("SELECT items FROM recs WHERE user_id = ?", (key,)).fetchone()
            self.stats.lookups += 1
            if row is None:
                self.stats.misses += 1
                fallback = live.fallback if scenario is None else live.scenario_fallback.get(scenario, [])
                return CacheResult(user_id, list(fallback), True, live.name, scenario)
            self.stats.hits += 1
            return CacheResult(user_id, [(i, s) for i, s in json.loads(row[0])], False, live.name, scenario)

    def get_many(self, user_ids: Iterable[str], scenario: str | None = None) -> list[CacheResult]:
        return [self.get(u, scenario) for u in user_ids]

    def close(self) -> None:
        with self._lock:
            if self._version is not None:
                self._version.con.close()
                self._version = None

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> _Version:
        if self.refresh_interval_s <= 0 or time.monotonic() >= self._next_check:
            self._refresh(force=False)
            self._next_check = time.monotonic() + self.refresh_interval_s
        if self._version is None:
            raise RuntimeError(f"CacheReader on {self.store_dir} is closed")
        return self._version

    def _refresh(self, force: bool) -> None:
        """Open the version ``CURRENT`` names if it changed; retry if a publish races with us."""
        last_error: Exception | None = None
        for _ in range(5):
            try:
                st = os.stat(self._pointer)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"{self._pointer} not found: no cache is published in {self.store_dir}; run `alignrec cache publish`"
                ) from None
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if not force and self._version is not None and self._version.pointer_key == key:
                return
            name = self._pointer.read_text(encoding="utf-8").strip()
            if self._version is not None and f"{self._version.name}.sqlite" == name:
                self._version.pointer_key = key
                return
            try:
                new = _open_version(self.store_dir / VERSIONS_DIR / name, key)
            except sqlite3.Error as exc:  # deleted by garbage collection between our read and open: re-read
                last_error = exc
                continue
            old, self._version = self._version, new
            if old is not None:
                old.con.close()
                self.stats.reloads += 1
            return
        raise RuntimeError(f"could not open the live cache version of {self.store_dir}: {last_error}")


def _open_version(path: Path, pointer_key: tuple[int, int, int]) -> _Version:
    if not path.is_file():
        raise sqlite3.OperationalError(f"{path} does not exist")
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    try:
        meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
        fallback = [(i, s) for i, s in con.execute("SELECT item_id, score FROM fallback ORDER BY rank")]
        per_scenario: dict[str, list[tuple[str, float]]] = {}
        if meta.get("scenarios"):
            for name, item, score in con.execute(
                    "SELECT scenario, item_id, score FROM scenario_fallback ORDER BY scenario, rank"):
                per_scenario.setdefault(name, []).append((item, score))
    except sqlite3.Error:
        con.close()
        raise
    return _Version(path.stem, con, meta, fallback, pointer_key, per_scenario)
