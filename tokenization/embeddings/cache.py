"""On-disk cache of item embeddings, one folder per key (model, template, data hash, config).

A folder holds ``vectors.npy``, ``item_ids.json`` and ``meta.json`` and is renamed into place only when
complete, so a crashed run never leaves a half cache entry that a later run would trust.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from recdata.io import atomic_path, atomic_write_json, sha256_json
from tokenization.embeddings.vectors import ItemEmbeddings

logger = logging.getLogger(__name__)


def cache_key(parts: dict[str, Any]) -> str:
    """Stable hash of everything that determines the vectors (dict order does not matter)."""
    return sha256_json(parts)


def model_identity(model_dir: str | os.PathLike) -> dict[str, Any]:
    """What identifies a local model folder cheaply: its path, config hash and weight file sizes/mtimes."""
    path = Path(model_dir).resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist")
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
        meta = json.loads(meta_file.read_text())
        if meta.get("cache_parts") != json.loads(json.dumps(parts)):
            logger.warning("embedding cache entry %s has a different key (hash prefix clash); recomputing", entry)
            return None
        item_ids = json.loads((entry / "item_ids.json").read_text())
        vectors = np.load(entry / "vectors.npy")
        logger.info("embedding cache hit: %s (%d items, dim %d)", entry, *vectors.shape)
        return ItemEmbeddings(item_ids, vectors, meta)

    def put(self, kind: str, parts: dict[str, Any], emb: ItemEmbeddings) -> Path:
        """Write an entry atomically; ``meta.json`` records the full key so a prefix clash is detected."""
        entry = self.path(kind, parts)
        with atomic_path(entry, is_dir=True) as tmp:
            np.save(tmp / "vectors.npy", emb.vectors)
            atomic_write_json(tmp / "item_ids.json", emb.item_ids, indent=None)
            atomic_write_json(tmp / "meta.json", {**emb.meta, "cache_parts": parts})
        logger.info("embedding cache write: %s", entry)
        return entry
