"""What a publish writes, a chunk at a time: each user's encoded row and the counts the cache-frequency fallbacks need.

Both stores (``store.publish_cache``, ``redis_store.publish_cache_redis``) take their rows from here, column-wise:
a chunk's item ids are mapped to catalogue positions once per distinct item, its rows are encoded in one numpy pass
(``RowFormat.encode_rows``) and item frequencies are counted with ``np.bincount``, so publishing 10M users costs
minutes, not the hour a per-user Python loop took.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from inference.cache.location import Location
from inference.cache.rows import RowFormat
from inference.cache.scenarios import split_scenario_key
from inference.cache.shards import ChunkColumns, iter_cache_columns

__all__ = ["RowEncoder", "encoded_chunks"]


class RowEncoder:
    """Encodes chunks against one version's catalogue and row format, counting how often each item is cached
    (``count_items``) and how often per scenario (``count_scenarios``: keys ``user + "\\x1f" + scenario``)."""

    def __init__(self, catalogue: Sequence[str], row_format: RowFormat, count_items: bool = False,
                 count_scenarios: bool = False):
        self.catalogue, self.row_format = catalogue, row_format
        self.position = {item: i for i, item in enumerate(catalogue)}
        self._items = np.zeros(len(catalogue), np.int64) if count_items else None  # [catalogue]
        self._scenarios: dict[str, np.ndarray] | None = {} if count_scenarios else None  # name -> [catalogue]

    def encode(self, chunk: ChunkColumns) -> list[bytes]:
        """Each user's row (the bytes ``RowFormat.encode`` gives), in ``chunk.users`` order."""
        get = self.position.get
        lookup = np.array([get(item, -1) for item in chunk.items], np.int64)  # chunk item -> catalogue position
        positions = lookup[chunk.item_codes]  # [rows]
        if len(positions) and positions.min() < 0:
            missing = chunk.items[int(chunk.item_codes[np.argmin(positions)])]
            raise RuntimeError(f"item {missing!r} is not in the catalogue this publish scanned: did the cache change "
                               "while it was published?")
        # counted over the chunk's distinct items (not the whole catalogue): cheap for small chunks of a big one
        if self._items is not None:
            self._items[lookup] += np.bincount(chunk.item_codes, minlength=len(lookup))
        if self._scenarios is not None:
            self._count_scenarios(chunk, lookup)
        return self.row_format.encode_rows(positions, chunk.scores, chunk.offsets)

    def _count_scenarios(self, chunk: ChunkColumns, lookup: np.ndarray) -> None:
        names: dict[str, int] = {}
        of_user = [names.setdefault(split_scenario_key(user)[1], len(names)) for user in chunk.users]
        of_row = np.repeat(np.asarray(of_user, np.int64), np.diff(chunk.offsets))  # [rows] scenario code
        for name, code in names.items():
            counts = self._scenarios.setdefault(name, np.zeros(len(self.catalogue), np.int64))
            counts[lookup] += np.bincount(chunk.item_codes[of_row == code], minlength=len(lookup))

    def item_counts(self) -> dict[str, int]:
        """``{item: times cached}`` of the items cached at least once (what the cache-frequency fallback ranks)."""
        return self._as_dict(self._items)

    def scenario_counts(self) -> dict[str, dict[str, int]]:
        """``{scenario: {item: times cached for it}}`` of every scenario seen."""
        return {name: self._as_dict(counts) for name, counts in (self._scenarios or {}).items()}

    def _as_dict(self, counts: np.ndarray | None) -> dict[str, int]:
        if counts is None:
            raise RuntimeError("this RowEncoder was not asked to count")
        return {self.catalogue[i]: int(counts[i]) for i in np.flatnonzero(counts).tolist()}


def encoded_chunks(cache_dir: str | os.PathLike | Location, encoder: RowEncoder, num_users: int,
                   progress: bool = True) -> Iterator[tuple[list[str], list[bytes]]]:
    """``(users, rows)`` of each chunk of a finished build (checksums not verified: the caller did), with a tqdm bar
    over ``num_users`` users that moves a chunk at a time."""
    with tqdm(total=num_users, desc="publish", unit="user", disable=not progress) as progress_bar:
        for chunk in iter_cache_columns(cache_dir, verify=False):
            yield chunk.users, encoder.encode(chunk)
            progress_bar.update(len(chunk.users))
