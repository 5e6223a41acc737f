"""The binary row format of a published cache version (the SQLite and the Redis store hold the same bytes).

A version stores its catalogue once: the distinct items of its rows, sorted by id, each as its JSON string
(``json.dumps(item_id, ensure_ascii=False)``, UTF-8), in parts of up to ``CATALOGUE_PART`` items joined by
``\\n`` (a JSON string never holds a raw newline). A row, one per user (or per (user, scenario)), is::

    index[0] ... index[n-1]  score[0] ... score[n-1]        little-endian, best first

``index`` is the item's position in the catalogue, ``index_bytes`` wide: 2 for a catalogue of up to 65,536 items,
3 up to 16,777,216, else 4. ``score`` is an IEEE float16 by default (publish ``score_dtype=float32`` keeps 7
digits; a cache whose scores pass float16's range, +-65,504, is published as float32 with a warning). ``n`` is
``len(row) // (index_bytes + score bytes)``, so a row has no header: K = 20 costs 80 bytes (2-byte indices) or
100 (3-byte). The version's meta records the format (``row_format``); a version without it was published in
the older JSON row format and is refused with the fix (republish).
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

import numpy as np

from recdata.errors import UserError

__all__ = ["CATALOGUE_PART", "ROW_FORMAT_KEY", "RowFormat", "catalogue_ids", "decode_catalogue",
           "encode_catalogue"]

logger = logging.getLogger(__name__)

ROW_FORMAT_KEY = "row_format"  # meta key: {"version", "index_bytes", "score_dtype", "num_items"}
ROW_FORMAT_VERSION = 1
CATALOGUE_PART = 65_536  # items per stored catalogue part (one SQLite row / one Redis list element)
FLOAT16_MAX = 65_504.0
SCORE_DTYPES = ("float16", "float32")
_INDEX_CODES = {2: "H", 4: "I"}  # struct codes; 3-byte indices are cut by hand
_SCORE_CODES = {"float16": ("e", "H", 2), "float32": ("f", "f", 4)}  # (pack code, unpack-for-render code, bytes)
_FLOAT16_NAN = 0x7E00  # the quiet NaN struct's "e" packs (sign kept, payload dropped); numpy would keep the payload


@dataclass(frozen=True)
class RowFormat:
    """How a version's rows are encoded: index width in bytes and score dtype."""

    index_bytes: int
    score_dtype: str

    def __post_init__(self) -> None:
        if self.index_bytes not in (2, 3, 4) or self.score_dtype not in SCORE_DTYPES:
            raise ValueError(f"unsupported row format {self}")

    @property
    def score_bytes(self) -> int:
        return _SCORE_CODES[self.score_dtype][2]

    @property
    def stride(self) -> int:
        """Bytes per item of a row."""
        return self.index_bytes + self.score_bytes

    @classmethod
    def choose(cls, num_items: int, score_dtype: str = "float16", max_abs_score: float = 0.0) -> RowFormat:
        """The narrowest indices for ``num_items`` and ``score_dtype`` (float32 when a finite score passes float16)."""
        if score_dtype not in SCORE_DTYPES:
            raise UserError(f"score_dtype must be one of {list(SCORE_DTYPES)}, got {score_dtype!r}")
        if score_dtype == "float16" and max_abs_score > FLOAT16_MAX:
            logger.warning("a cached score of magnitude %.6g is beyond float16's range (+-%g): this version "
                           "stores float32 scores (2 bytes more per item)", max_abs_score, FLOAT16_MAX)
            score_dtype = "float32"
        width = 2 if num_items <= 1 << 16 else 3 if num_items <= 1 << 24 else 4
        return cls(width, score_dtype)

    def to_meta(self, num_items: int) -> dict[str, Any]:
        return {"version": ROW_FORMAT_VERSION, "index_bytes": self.index_bytes, "score_dtype": self.score_dtype,
                "num_items": num_items}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], where: str, fix: str) -> RowFormat:
        """The format a version's meta records; ``UserError`` naming ``where`` and ``fix`` for an older version."""
        spec = meta.get(ROW_FORMAT_KEY)
        if not isinstance(spec, Mapping):
            raise UserError(f"{where} holds rows in the older JSON format (published by an earlier alignrec), which "
                            f"this version no longer reads; republish it: {fix}")
        if spec.get("version") != ROW_FORMAT_VERSION:
            raise UserError(f"{where} has row format {spec.get('version')!r}, this alignrec reads version "
                            f"{ROW_FORMAT_VERSION}; republish it: {fix}")
        try:
            return cls(int(spec["index_bytes"]), str(spec["score_dtype"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise UserError(f"{where} has an unreadable row format {dict(spec)} ({exc}); republish it: {fix}") from exc

    def encode(self, indices: Sequence[int], scores: Sequence[float]) -> bytes:
        """One row: ``indices`` (catalogue positions, best first) then their ``scores``."""
        n = len(indices)
        if len(scores) != n:
            raise ValueError(f"{n} indices but {len(scores)} scores")
        pack = _SCORE_CODES[self.score_dtype][0]
        if self.index_bytes == 3:
            head = b"".join(i.to_bytes(3, "little") for i in indices)
        else:
            head = struct.pack(f"<{n}{_INDEX_CODES[self.index_bytes]}", *indices)
        return head + struct.pack(f"<{n}{pack}", *scores)

    def encode_rows(self, indices: np.ndarray, scores: np.ndarray, offsets: np.ndarray) -> list[bytes]:
        """Many rows at once, each the bytes ``encode`` gives: row ``r`` holds items ``offsets[r]:offsets[r + 1]``
        of ``indices`` / ``scores`` (flat, rows back to back, best first). Builds one buffer with numpy and slices it,
        so a publish does not pack users one by one."""
        offsets = np.asarray(offsets, dtype=np.int64)
        lengths = np.diff(offsets)  # [rows]
        total = int(offsets[-1]) if len(offsets) else 0
        if len(indices) != total or len(scores) != total or (lengths < 0).any() or (len(offsets) and offsets[0]):
            raise ValueError(f"{len(indices)} indices and {len(scores)} scores do not fill rows ending at offsets "
                             f"{offsets[-3:].tolist()}")
        indices = np.asarray(indices, dtype=np.int64)
        if total and (indices.min() < 0 or indices.max() >> (8 * self.index_bytes)):
            raise ValueError(f"catalogue indices {indices.min()}..{indices.max()} do not fit {self.index_bytes} bytes")
        word = 4 if self.index_bytes > 2 else 2  # 3-byte indices: the low 3 bytes of a uint32
        index_bytes = indices.astype(f"<u{word}").view(np.uint8).reshape(total, word)[:, : self.index_bytes]
        score_bytes = self._score_bytes(np.asarray(scores, dtype=np.float64)).reshape(total, self.score_bytes)
        starts = offsets[:-1] * self.stride  # each row's first byte
        rank = np.arange(total) - np.repeat(offsets[:-1], lengths)  # position of each item in its row
        index_at = np.repeat(starts, lengths) + rank * self.index_bytes
        score_at = np.repeat(starts + lengths * self.index_bytes, lengths) + rank * self.score_bytes
        buffer = np.empty(total * self.stride, dtype=np.uint8)
        buffer[index_at[:, None] + np.arange(self.index_bytes)] = index_bytes
        buffer[score_at[:, None] + np.arange(self.score_bytes)] = score_bytes
        blob = buffer.tobytes()
        ends = (offsets * self.stride).tolist()
        return [blob[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]

    def _score_bytes(self, scores: np.ndarray) -> np.ndarray:
        """``scores`` as ``encode`` packs them: round to nearest even, ``OverflowError`` where a finite score has no
        finite value in the format (struct's rule), float16 NaNs canonical like struct's."""
        with np.errstate(over="ignore", invalid="ignore"):
            cast = scores.astype("<f2" if self.score_dtype == "float16" else "<f4")
        overflow = np.isinf(cast) & np.isfinite(scores)
        if overflow.any():
            raise OverflowError(f"score {float(scores[overflow][0])!r} is too large for {self.score_dtype}")
        if self.score_dtype == "float16":
            bits = cast.view("<u2").copy()
            nan = np.isnan(scores)
            bits[nan] = (bits[nan] & 0x8000) | _FLOAT16_NAN
            return bits.view(np.uint8)
        return cast.view(np.uint8)

    def length(self, row: bytes) -> int:
        """Items in ``row``."""
        return len(row) // self.stride

    def unpack(self, row: bytes, k: int | None = None) -> tuple[Sequence[int], Sequence[Any]]:
        """(indices, score codes) of the first ``k`` items (all when None): codes are float16 bit patterns
        (ints, what the HTTP layer looks its JSON text up by) or float32 values."""
        n = len(row) // self.stride
        m = n if k is None else min(k, n)
        if self.index_bytes == 3:
            indices: Sequence[int] = [int.from_bytes(row[j : j + 3], "little") for j in range(0, 3 * m, 3)]
        else:
            indices = struct.unpack_from(f"<{m}{_INDEX_CODES[self.index_bytes]}", row, 0)
        codes = struct.unpack_from(f"<{m}{_SCORE_CODES[self.score_dtype][1]}", row, n * self.index_bytes)
        return indices, codes

    def decode(self, row: bytes) -> tuple[Sequence[int], list[float]]:
        """(indices, scores as Python floats) of a whole row; ``ValueError`` if its length is not whole items."""
        if len(row) % self.stride:
            raise ValueError(f"a row of {len(row)} bytes is not a whole number of {self.stride}-byte items")
        n = len(row) // self.stride
        if self.index_bytes == 3:
            indices = [int.from_bytes(row[j : j + 3], "little") for j in range(0, 3 * n, 3)]
        else:
            indices = struct.unpack_from(f"<{n}{_INDEX_CODES[self.index_bytes]}", row, 0)
        scores = struct.unpack_from(f"<{n}{_SCORE_CODES[self.score_dtype][0]}", row, n * self.index_bytes)
        return indices, list(scores)


def encode_catalogue(item_ids: Sequence[str]) -> list[bytes]:
    """The stored parts of a catalogue: each item's JSON string, ``\\n``-joined, ``CATALOGUE_PART`` per part."""
    encoded = [encode_basestring(item).encode("utf-8") for item in item_ids]  # == json.dumps(item, ensure_ascii=False)
    return [b"\n".join(encoded[i : i + CATALOGUE_PART]) for i in range(0, len(encoded), CATALOGUE_PART)]


def decode_catalogue(parts: Sequence[bytes]) -> list[bytes]:
    """Each item's JSON string (bytes) in catalogue order, from the stored parts."""
    out: list[bytes] = []
    for part in parts:
        if part:
            out.extend(bytes(part).split(b"\n"))
    return out


def catalogue_ids(encoded: Sequence[bytes]) -> list[str]:
    """The item ids of a decoded catalogue (one JSON parse for all of them)."""
    return json.loads(b"[" + b",".join(encoded) + b"]") if encoded else []
