"""The live version of one server worker: lookups from it, and swaps prepared off the request path.

A worker answers from one ``PreparedVersion`` (``render.prepare_version``: the store version opened, its catalogue
decoded, its JSON fragments encoded). When the store's pointer moves (a publish), the new version is prepared in
a thread while requests go on being answered from the old one, then a reference is swapped on the event loop:
a response always comes whole from one version and names it, and a publish costs the request path nothing but
the pointer check. The old version stays readable meanwhile (SQLite: the open file survives its unlink; Redis:
retired versions stay for their grace period), and a request that finds its version already gone waits for
the new one instead of answering from nothing.

SQLite lookups are a ~10 us indexed read, run inline on the event loop (cheaper than a thread hop), after a
``stat`` of ``CURRENT`` (every request with ``refresh_interval_s`` = 0, else at most that often). Redis lookups
are one pipelined round trip that brings the pointer back with the rows (``redis_store.AsyncRows``: the lookups
that arrive together share it; on one server it is sent on redis-py connections without pipeline objects,
``redis_conn.RoundTrips``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from inference.cache.backends import CacheStore, VersionGoneError
from inference.serve.render import PreparedVersion, prepare_version

__all__ = ["LiveVersion"]

logger = logging.getLogger(__name__)

RETRIES = 5
SETTLE_WAIT_S = 5.0  # /readyz waits this long for a version being prepared (a probe's timeout is a few seconds)


class LiveVersion:
    """One worker's view of ``store``: ``start()`` on the event loop, then ``rows``/``settle``; ``close()`` at exit."""

    def __init__(self, store: CacheStore, refresh_interval_s: float = 0.0, redis_connections: int = 64,
                 on_swap: Callable[[PreparedVersion], None] | None = None):
        self.store = store
        self.refresh_interval_s = refresh_interval_s
        self.on_swap = on_swap or (lambda prepared: None)
        self.current: PreparedVersion | None = None
        self.redis = store.async_rows(redis_connections) if hasattr(store, "async_rows") else None
        self._task: asyncio.Task | None = None
        self._next_check = 0.0
        self._failed: Hashable = None  # a pointer whose version could not be prepared (not retried until it moves)

    async def start(self) -> PreparedVersion:
        """Open the live version (raises what the store raises: the worker must not start without it)."""
        token = await asyncio.to_thread(self.store.pointer)
        for _ in range(RETRIES):
            try:
                self._swap(await asyncio.to_thread(self._prepare_blocking, token))
                return self.current
            except VersionGoneError:
                token = await asyncio.to_thread(self.store.pointer)
        raise RuntimeError(f"could not open the live cache version of {self.store.location}: it keeps disappearing")

    async def rows(self, user_ids: Sequence[str], scenario: str | None,
                   check: Callable[[PreparedVersion], Any]) -> tuple[PreparedVersion, list[bytes | None]]:
        """(the version answered from, each user's row or None) in one read; ``check(version)`` runs before it
        (request validation that depends on the version: scenario, k) and may raise."""
        for _ in range(RETRIES):
            if self.redis is None:
                self._check_pointer()  # SQLite: a stat; raises when the pointer is gone
                current = self.current
                check(current)
                return current, current.version.lookup_rows(user_ids, scenario)
            current = self.current
            check(current)
            try:
                live, rows = await current.version.lookup_rows_async(self.redis, user_ids, scenario)
            except VersionGoneError:  # dropped under us: follow the pointer, wait for its version, ask again
                await self.settle()
                continue
            if live is None:
                raise self.store.no_pointer()
            if live != current.name:
                self._follow(live)
            return current, rows
        raise RuntimeError(f"the cache versions of {self.store.location} keep disappearing during lookups")

    async def settle(self, wait_s: float = SETTLE_WAIT_S) -> PreparedVersion:
        """Follow the pointer now and wait (at most ``wait_s``) until its version is the live one here: what
        ``/readyz`` reports. A longer preparation goes on in the background; the answer is the version served."""
        token = await asyncio.to_thread(self.store.pointer)
        if token != self.current.token:
            self._failed = None
            self._follow(token)
        if self._task is not None:
            await asyncio.wait([self._task], timeout=wait_s)
        return self.current

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.current is not None:
            self.current.close()
            self.current = None
        if self.redis is not None:
            await self.redis.aclose()
        self.store.close()

    # ---- internals ----------------------------------------------------------------------------------------------

    def _check_pointer(self) -> None:
        now = time.monotonic()
        if self.refresh_interval_s > 0 and now < self._next_check:
            return
        self._next_check = now + self.refresh_interval_s
        token = self.store.pointer()
        if token != self.current.token:
            self._follow(token)

    def _follow(self, token: Hashable) -> None:
        if self._task is None and token != self._failed:
            self._task = asyncio.get_running_loop().create_task(self._prepare(token))

    async def _prepare(self, token: Hashable) -> None:
        try:
            prepared = await asyncio.to_thread(self._prepare_blocking, token)
        except VersionGoneError as exc:  # replaced again before we opened it: the next check follows the new one
            logger.info("cache version changed while being opened (%s)", exc)
        except Exception as exc:  # noqa: BLE001 - keep serving the old version, say why, retry when the pointer moves
            logger.error("could not open the new cache version of %s, still serving %s: %s", self.store.location,
                         self.current.name, exc)
            self._failed = token
        else:
            self._swap(prepared)
        finally:
            self._task = None

    def _prepare_blocking(self, token: Hashable) -> PreparedVersion:
        name = self.store.resolve(token)
        if self.current is not None and self.current.name == name:  # the pointer file was rewritten, same version
            return PreparedVersion(self.current.version, token, self.current.k, self.current.version_json,
                                   self.current.scenarios, self.current.fragments, self.current.fallbacks)
        return prepare_version(self.store, name, token)

    def _swap(self, prepared: PreparedVersion) -> None:
        old, self.current = self.current, prepared
        if old is not None and old.version is not prepared.version:
            old.close()  # on the event loop: no lookup is using it (SQLite reads are inline, Redis ones hold no state)
            logger.info("now serving cache version %s", prepared.name)
        self.on_swap(prepared)
