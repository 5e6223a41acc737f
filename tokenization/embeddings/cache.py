"""On-disk cache of item embeddings, one folder per key (model, template, data hash, config).

A folder holds ``vectors.npy``, ``item_ids.json`` and ``meta.json`` and is renamed into place only when
complete, so a crashed run never leaves a half cache entry that a later run would trust. ``checksums.json``
(sha256 of each of those files) is written last; ``get`` verifies it and the vectors (shape, finite values)
and discards a bad entry with a warning naming it, so a truncated or NaN file is recomputed instead of
failing every later run with numpy's message about "the user's data".
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from recdata.errors import InputFileError
from recdata.io import atomic_path, atomic_write_json, sha256_file, sha256_json
from recdata.item_vectors import ItemEmbeddings

logger = logging.getLogger(__name__)

CHECKSUM_FILE = "checksums.json"
ENTRY_FILES = ("vectors.npy", "item_ids.json", "meta.json")


def cache_key(parts: dict[str, Any]) -> str:
    """Stable hash of everything that determines the vectors (dict order does not matter)."""
    return sha256_json(parts)


def model_identity(model_dir: str | os.PathLike) -> dict[str, Any]:
    """What identifies a local model folder cheaply: its path, config hash and weight file sizes/mtimes."""
    path = Path(model_dir).resolve()
    if not path.is_dir():
        raise InputFileError(f"model folder {path} does not exist")
    config = path / "config.json"
    weights = sorted(p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file())
    return {
        "path": str(path),
        "config": sha256_json(json.loads(config.read_text())) if config.is_file() else None,
        "weights": [[str(p.relative_to(path)), p.stat().st_size, int(p.stat().st_mtime)] for p in weights],
    }


class EmbeddingCache:
    """``get(kind, parts)`` / ``put(kind, parts, emb)``; entries live in ``root/<kind>-<key[:20]>/``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, kind: str, parts: dict[str, Any]) -> Path:
        return self.root / f"{kind}-{cache_key({'kind': kind, **parts})[:20]}"

    def get(self, kind: str, parts: dict[str, Any]) -> ItemEmbeddings | None:
        entry = self.path(kind, parts)
        meta_file = entry / "meta.json"
        if not meta_file.is_file():
            logger.info("embedding cache miss: %s", entry)
            return None
        try:
            emb = self._read_verified(entry)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # UserError from ItemEmbeddings is a ValueError
            logger.warning("embedding cache entry %s is corrupt (%s); discarding it and recomputing", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        if emb.meta.get("cache_parts") != json.loads(json.dumps(parts)):
            logger.warning("embedding cache entry %s has a different key (hash prefix clash); recomputing", entry)
            return None
        logger.info("embedding cache hit: %s (%d items, dim %d)", entry, *emb.vectors.shape)
        return emb

    @staticmethod
    def _read_verified(entry: Path) -> ItemEmbeddings:
        """Load an entry after checking every file against ``checksums.json`` (raises naming the problem)."""
        sums_file = entry / CHECKSUM_FILE
        if not sums_file.is_file():
            raise ValueError(f"no {CHECKSUM_FILE} (incomplete, or written by an older alignrec)")
        sums = json.loads(sums_file.read_text())
        for name in ENTRY_FILES:
            if sha256_file(entry / name) != sums.get(name):
                raise ValueError(f"{name} does not match its checksum")
        meta = json.loads((entry / "meta.json").read_text())
        item_ids = json.loads((entry / "item_ids.json").read_text())
        vectors = np.load(entry / "vectors.npy", allow_pickle=False)
        return ItemEmbeddings(item_ids, vectors, meta)  # validates shape, ids and finite values

    def put(self, kind: str, parts: dict[str, Any], emb: ItemEmbeddings) -> Path:
        """Write an entry atomically; ``meta.json`` records the full key so a prefix clash is detected."""
        entry = self.path(kind, parts)
        with atomic_path(entry, is_dir=True) as tmp:
            np.save(tmp / "vectors.npy", emb.vectors)
            atomic_write_json(tmp / "item_ids.json", emb.item_ids, indent=None)
            atomic_write_json(tmp / "meta.json", {**emb.meta, "cache_parts": parts})
            atomic_write_json(tmp / CHECKSUM_FILE, {name: sha256_file(tmp / name) for name in ENTRY_FILES})
        logger.info("embedding cache write: %s", entry)
        return entry
