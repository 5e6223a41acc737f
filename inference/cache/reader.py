"""``CacheReader``: lookups of a published cache, following version switches safely.

The reader works over any ``CacheStore`` (``backends``): a SQLite folder or a Redis URL. A lookup, or a
batch of them, is answered from one open version only, so a result always comes whole from one version and
every user of one ``get_many`` from the same one. Before a lookup the reader checks the store's pointer (a
``stat`` of ``CURRENT`` for SQLite, about a microsecond; for Redis the lookup's own pipeline reads it);
when a publish moved it, the reader opens the new version and closes the old one. A version deleted under the reader
(``VersionGoneError``) makes it re-read the pointer, never answer from nothing.

A per-scenario store (``inference.cache.scenarios``: one top-K per (user, scenario), a fallback per scenario)
is read through the same calls with ``scenario=``; a per-user store is read without it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from inference.cache.backends import CacheStore, SQLiteStore, StoreVersion, VersionGoneError, is_redis_url
from recdata.errors import UserError


def open_store(location: str | os.PathLike | CacheStore) -> CacheStore:
    """A store object for a folder (SQLite), a ``redis://host:port/db[?prefix=P][&cluster=true]`` URL, or a store.

    Here, above both implementations: ``backends`` is the interface ``redis_store`` implements, so it never
    imports an implementation.
    """
    if isinstance(location, CacheStore):
        return location
    if is_redis_url(location):
        from inference.cache.redis_store import RedisStore

        return RedisStore(str(location))
    return SQLiteStore(location)


class ScenarioError(UserError):
    """The caller's mistake about scenarios: a scenario the live version does not have, or none on a per-scenario
    store (the HTTP server answers 422; store-side failures are other errors)."""


def check_scenario(scenarios: Sequence[str], scenario: str | None, location: str) -> None:
    """``ScenarioError`` unless ``scenario`` fits a version with ``scenarios`` ([] for a per-user store)."""
    if scenario is None and scenarios:
        raise ScenarioError(f"the cache in {location} is per scenario; pass a scenario, one of {list(scenarios)}")
    if scenario is not None and scenario not in scenarios:
        what = (f"its scenarios are {list(scenarios)}" if scenarios
                else "this store has no scenarios (one list per user); drop the scenario")
        raise ScenarioError(f"scenario {scenario!r} is not in the cache of {location}: {what}")


@dataclass(frozen=True)
class CacheResult:
    user_id: str
    items: list[tuple[str, float]]  # best first; for a fallback, (item_id, popularity count)
    fallback: bool  # True: the user is not in the cache and ``items`` are the popular-items fallback
    version: str  # the published version (unique per publish) this result comes from
    k: int = 0  # the cached K of that version (a fallback list may be shorter or longer)
    scenario: str | None = None  # the scenario asked for (per-scenario stores), else None


@dataclass
class ReaderStats:
    lookups: int = 0
    hits: int = 0
    misses: int = 0  # users answered with the fallback
    reloads: int = 0  # version switches followed


class CacheReader:
    """Look up a user's cached top-K in the live version of ``store`` (a folder, a ``redis://`` URL or a store).

    A missing user gets the popular-items fallback stored at publish time (``CacheResult.fallback`` is
    True) and is counted in ``stats.misses``. ``refresh_interval_s`` = 0 checks for a new version on every
    lookup; a larger value checks at most that often. Safe to share between threads.
    """

    def __init__(self, store: str | os.PathLike | CacheStore, refresh_interval_s: float = 0.0):
        self.store = open_store(store)
        self.store_dir = store if not isinstance(store, CacheStore) else store.location
        self.refresh_interval_s = refresh_interval_s
        self.stats = ReaderStats()
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._version: StoreVersion | None = None
        self._token: Hashable = None
        with self._lock:
            self._refresh(force=True)

    @property
    def version(self) -> str:
        """The live published version: ``v-<publish time>-<build version>``."""
        with self._lock:
            return self._live().name

    @property
    def metadata(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._live().meta)

    @property
    def scenarios(self) -> list[str]:
        """Scenarios of a per-scenario store ([] for a per-user one)."""
        with self._lock:
            return self._live().scenarios

    def get(self, user_id: str, scenario: str | None = None) -> CacheResult:
        """The user's cached top-K; on a per-scenario store ``scenario`` is required and picks the list."""
        return self.get_many([user_id], scenario)[0]

    def get_many(self, user_ids: Iterable[str], scenario: str | None = None) -> list[CacheResult]:
        """Every user answered from one version (the live one when the call starts).

        On a per-scenario store ``scenario`` is required; a missing (user, scenario) pair gets that scenario's
        fallback. A ``scenario`` the live version does not have is a ``ScenarioError`` naming the ones it has.
        """
        users = list(user_ids)
        with self._lock:
            live = self._live(check_pointer=not self.store.lookup_checks_pointer)
            for _ in range(5):
                try:
                    self._check_scenario(live, scenario)
                    rows = live.lookup(users, scenario)
                    break
                except VersionGoneError:  # deleted under us (Redis grace period over): follow the pointer
                    self._refresh(force=True)
                    live = self._live()
            else:
                raise RuntimeError(f"the cache versions of {self.store.location} keep disappearing during lookups")
            self.stats.lookups += len(users)
            out, k = [], int(live.meta["k"])
            fallback = live.fallback_for(scenario)
            for user, items in zip(users, rows, strict=True):
                if items is None:
                    self.stats.misses += 1
                    out.append(CacheResult(user, list(fallback), True, live.name, k, scenario))
                else:
                    self.stats.hits += 1
                    out.append(CacheResult(user, items, False, live.name, k, scenario))
            return out

    def _check_scenario(self, live: StoreVersion, scenario: str | None) -> None:
        check_scenario(live.scenarios, scenario, self.store.location)

    def close(self) -> None:
        with self._lock:
            if self._version is not None:
                self._version.close()
                self._version = None
            self.store.close()

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self, check_pointer: bool = True) -> StoreVersion:
        if self._version is None and self._token is not None:
            raise RuntimeError(f"CacheReader on {self.store.location} is closed")
        if check_pointer and (self.refresh_interval_s <= 0 or time.monotonic() >= self._next_check):
            self._refresh(force=False)
            self._next_check = time.monotonic() + self.refresh_interval_s
        return self._version

    def _refresh(self, force: bool) -> None:
        """Open the version the pointer names if it changed; retry if a publish races with us."""
        last_error: Exception | None = None
        for _ in range(5):
            token = self.store.pointer()
            if not force and self._version is not None and self._token == token:
                return
            name = self.store.resolve(token)
            if not force and self._version is not None and self._version.name == name:
                self._token = token
                return
            try:
                new = self.store.open_version(name)
            except VersionGoneError as exc:  # deleted by garbage collection between our read and open: re-read
                last_error = exc
                continue
            old, self._version, self._token = self._version, new, token
            if old is not None:
                old.close()
                self.stats.reloads += 1
            return
        raise RuntimeError(f"could not open the live cache version of {self.store.location}: {last_error}")
