"""``ItemEmbeddings``: item vectors always paired with their item ids (the row order)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recdata.errors import InputFileError, UserError

VECTORS_FILE, IDS_FILE, META_FILE = "vectors.npy", "item_ids.json", "meta.json"


def overflowing_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows whose squared norm is not finite in float32: finite values (x1e38) that k-means and every
    distance computation would turn into inf/nan."""
    v = np.asarray(vectors, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", v, v)  # [N] float32, like torch.cdist in the RQ-VAE
    return np.flatnonzero(~np.isfinite(sq))


@dataclass
class ItemEmbeddings:
    """``vectors[i]`` is the embedding of ``item_ids[i]``; float32 ``[N, D]``; ``meta`` says how it was made."""

    item_ids: list[str]
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item_ids = [str(i) for i in self.item_ids]
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.item_ids):
            raise UserError(
                f"vectors must be [N, D] with N = len(item_ids) = {len(self.item_ids)}, got {self.vectors.shape}"
            )
        if len(set(self.item_ids)) != len(self.item_ids):
            seen: set[str] = set()
            dup = next(i for i in self.item_ids if i in seen or seen.add(i))
            raise UserError(f"duplicate item id {dup!r} in item embeddings; ids must be unique")
        if not np.isfinite(self.vectors).all():
            row = int(np.where(~np.isfinite(self.vectors).all(axis=1))[0][0])
            raise UserError(f"item {self.item_ids[row]!r} (row {row}) has a non-finite embedding")
        overflow = overflowing_rows(self.vectors)
        if len(overflow):
            row = int(overflow[0])
            raise UserError(f"{len(overflow)} item embedding(s) are too large for float32 distances (item "
                            f"{self.item_ids[row]!r}, row {row}); rescale them (e.g. L2-normalise)")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def reorder(self, item_ids: list[str], source: str = "embeddings") -> ItemEmbeddings:
        """The same vectors in ``item_ids`` order; raises naming missing or extra ids."""
        index = {item_id: row for row, item_id in enumerate(self.item_ids)}
        missing = [i for i in item_ids if i not in index]
        wanted = set(item_ids)
        extra = [i for i in self.item_ids if i not in wanted]
        if missing or extra:
            raise UserError(
                f"{source}: ids do not match the catalogue: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(extra)} extra (e.g. {extra[:3]}); give exactly one vector per catalogue item"
            )
        rows = np.array([index[i] for i in item_ids], dtype=np.int64)
        return ItemEmbeddings(list(item_ids), self.vectors[rows], dict(self.meta))


def load_embeddings_dir(folder: str | Path) -> ItemEmbeddings:
    """The ``vectors.npy`` + ``item_ids.json`` (+ optional ``meta.json``) folder that the embeddings stage and
    ``alignrec embed`` write."""
    folder = Path(folder)
    for name in (VECTORS_FILE, IDS_FILE):
        if not (folder / name).is_file():
            raise InputFileError(f"{folder / name} does not exist; write the folder with `alignrec embed` "
                                 "(or point at a run's embeddings stage)")
    meta_file = folder / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return ItemEmbeddings(json.loads((folder / IDS_FILE).read_text()), np.load(folder / VECTORS_FILE), meta)
