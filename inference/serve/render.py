"""Response bodies as byte joins: a version's JSON fragments are encoded once, a lookup only joins them.

``prepare_version`` opens a store version and pre-encodes, per catalogue item, ``{"item_id":<id>,"score":``;
a row (``inference.cache.rows``: catalogue indices + scores) then renders as the join, cut at the requested k, of
that fragment, the score's JSON text (float16 scores: a table of all 65,536 bit patterns, built once per process)
and ``,"rank":r}``. The bytes equal ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` of the same
result as a dict (``tests/serve/test_hot_path.py`` checks it against that reference). Preparing is the slow part
(a catalogue of 50,000 items: a few ms), so the server does it off the request path and swaps a reference.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import cache

from inference.cache.backends import CacheStore, StoreVersion

__all__ = ["PreparedVersion", "json_float", "prepare_version", "json_str"]


def json_float(x: float) -> bytes:
    """``json.dumps(x)`` of a float, as bytes."""
    return json.dumps(x).encode("ascii")


@cache
def float16_json() -> tuple[bytes, ...]:
    """The JSON text of every float16 bit pattern (index = the pattern as an unsigned 16-bit int)."""
    values = struct.unpack("<65536e", struct.pack("<65536H", *range(65536)))
    return tuple(json_float(v) for v in values)


@cache
def rank_suffixes(n: int) -> tuple[bytes, ...]:
    """``,"rank":r}`` for r = 1..n."""
    return tuple(b',"rank":%d}' % r for r in range(1, n + 1))


def json_str(text: str) -> bytes:
    """``json.dumps(text, ensure_ascii=False)`` as UTF-8 bytes."""
    return json.dumps(text, ensure_ascii=False).encode("utf-8")


@dataclass
class PreparedVersion:
    """A store version with its JSON fragments: what one worker answers from until the next swap."""

    version: StoreVersion
    token: Hashable  # the store pointer token it was opened for
    k: int = 0
    version_json: bytes = b""
    scenarios: tuple[str, ...] = ()  # per-scenario versions: their scenarios, in the meta's order
    fragments: list[bytes] = field(default_factory=list)
    fallbacks: dict[str | None, list[bytes]] = field(default_factory=dict)  # scenario (None) -> rendered items

    @property
    def name(self) -> str:
        return self.version.name

    def items_json(self, row: bytes, k: int) -> bytes:
        """The ``items`` array's content for one stored row, cut at ``k``."""
        indices, codes = self.version.row_format.unpack(row, k)
        fragments, ranks = self.fragments, rank_suffixes(max(self.k, len(indices)))
        if self.version.row_format.score_dtype == "float16":
            text = float16_json()
            return b",".join([fragments[i] + text[c] + r for i, c, r in zip(indices, codes, ranks, strict=False)])
        return b",".join([fragments[i] + json_float(c) + r for i, c, r in zip(indices, codes, ranks, strict=False)])

    def fallback_json(self, scenario: str | None, k: int) -> bytes:
        """The ``items`` array's content of the popular-items fallback (of ``scenario``), cut at ``k``."""
        return b",".join(self.fallbacks.get(scenario, [])[:k])

    def close(self) -> None:
        self.version.close()


def prepare_version(store: CacheStore, name: str, token: Hashable) -> PreparedVersion:
    """Open version ``name`` of ``store`` and encode its fragments (blocking: run it in a thread)."""
    version = store.open_version(name)
    try:
        if version.row_format.score_dtype == "float16":
            float16_json()  # built once per process: here, off the request path
        def rendered(recs: list[tuple[str, float]]) -> list[bytes]:
            return [b'{"item_id":' + json_str(item) + b',"score":' + json_float(score) + b',"rank":%d}' % r
                    for r, (item, score) in enumerate(recs, start=1)]

        fallbacks = {None: rendered(version.fallback)}
        fallbacks.update({s: rendered(recs) for s, recs in version.scenario_fallback.items()})
        return PreparedVersion(
            version, token, int(version.meta["k"]), json_str(version.name), tuple(version.scenarios),
            [b'{"item_id":' + item + b',"score":' for item in version.catalogue], fallbacks)
    except BaseException:
        version.close()
        raise
