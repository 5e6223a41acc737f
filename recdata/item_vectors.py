"""Item vectors paired with their item ids: ``ItemEmbeddings``, the embeddings folder format, user-provided files.

``ItemEmbeddings`` keeps the project's identifier rule (integer rows always travel with an explicit ``item_ids``
list). It lives in the data layer because the tokenizer's item embeddings (``tokenization.embeddings``), the
knowledge stage's cluster vectors (``alignrec.knowledge``) and the trainer's item-vector rows all read it. Moved
from ``tokenization.embeddings.vectors`` and ``tokenization.embeddings.user_provided`` (kept one release as
deprecated aliases; ``tokenization.embeddings`` still exports every name).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recdata.errors import InputFileError, UserError

__all__ = ["IDS_FILE", "META_FILE", "SAFETENSORS_KEYS", "VECTORS_FILE", "ItemEmbeddings", "load_embeddings_dir",
           "load_user_embeddings", "overflowing_rows", "read_id_list"]

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
        if self.vectors.shape[1] == 0:
            raise UserError(f"item vectors have 0 columns (shape {self.vectors.shape}); they need dimension >= 1")
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
    fix = "rewrite the folder with `alignrec embed`"

    def read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not valid UTF-8 JSON ({exc}); {fix}") from None

    meta = read_json(folder / META_FILE) if (folder / META_FILE).is_file() else {}
    ids = read_json(folder / IDS_FILE)
    if not isinstance(ids, list):
        raise UserError(f"{folder / IDS_FILE} must hold a JSON list of item ids, got {type(ids).__name__}; {fix}")
    try:
        vectors = np.load(folder / VECTORS_FILE, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # truncated, object array, not an .npy at all
        raise UserError(f"{folder / VECTORS_FILE} is not a readable numeric .npy array ({exc}); {fix}") from None
    try:
        return ItemEmbeddings(ids, vectors, meta if isinstance(meta, dict) else {})
    except ValueError as exc:  # a UserError naming the shape / id / row, or strings that are not numbers
        raise UserError(f"{folder}: {exc}") from None


SAFETENSORS_KEYS = ("embeddings", "vectors", "weight")


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Ids as a JSON list or one per line (blank lines are an error: they shift every following row)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"item id list {path} does not exist; give a JSON list or one id per line")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not a valid JSON list of ids: {exc}") from exc
        return [str(i) for i in ids]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise UserError(f"{path}:{number}: empty line; every line must hold the id of the matching vector row")
    return [line.strip() for line in lines]


def load_user_embeddings(path: str | os.PathLike, ids_path: str | os.PathLike | None,
                         catalogue: Sequence[str]) -> ItemEmbeddings:
    """Vectors reordered to ``catalogue``; raises naming missing, extra or duplicate ids and shape mismatches."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"embedding file {path} does not exist")
    stored_ids: list[str] | None = None
    if path.suffix == ".npy":
        try:
            vectors = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # truncated file, object array, not an .npy at all
            raise UserError(f"embedding file {path} is not a readable numeric .npy array ({exc}); save it with "
                            "np.save(path, float32_array)") from exc
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            keys = [k for k in SAFETENSORS_KEYS if k in f.keys()] or list(f.keys())
            if len(keys) != 1 and keys[0] not in SAFETENSORS_KEYS:
                raise UserError(f"{path}: holds tensors {keys}; name the vectors tensor one of {SAFETENSORS_KEYS}")
            vectors = f.get_tensor(keys[0])
            meta = f.metadata() or {}
            if "item_ids" in meta:
                stored_ids = [str(i) for i in json.loads(meta["item_ids"])]
    else:
        raise UserError(f"embedding file {path} must end in .npy or .safetensors")
    if ids_path:
        item_ids = read_id_list(ids_path)
        where = Path(ids_path)
    elif stored_ids is not None:
        item_ids, where = stored_ids, path
    else:
        raise UserError(f"{path}: no id list; pass file_ids_path (one id per line) or store 'item_ids' "
                         "as JSON in the safetensors metadata")
    if not isinstance(vectors, np.ndarray) or vectors.dtype.kind not in "fiub":
        kind = getattr(vectors, "dtype", type(vectors).__name__)
        raise UserError(f"{path}: vectors have dtype {kind}; they must be numbers (float32 [N, D])")
    if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
        raise UserError(f"{path}: vectors have shape {tuple(vectors.shape)} but {where} lists {len(item_ids)} ids; "
                         "need [len(ids), dim]")
    if vectors.shape[1] == 0:
        raise UserError(f"{path}: vectors have 0 columns (shape {tuple(vectors.shape)}); every item needs a vector of "
                        "dimension >= 1: save the [N, D] array itself")
    seen: dict[str, int] = {}
    for row, item_id in enumerate(item_ids):
        if item_id in seen:
            raise UserError(f"{where}: item id {item_id!r} appears twice (rows {seen[item_id]} and {row}); "
                             "ids must be unique")
        seen[item_id] = row
    if not np.isfinite(vectors).all():
        row = int(np.where(~np.isfinite(vectors).all(axis=1))[0][0])
        raise UserError(f"{path}: row {row} (item {item_ids[row]!r}) is not finite (nan/inf)")
    overflow = overflowing_rows(vectors)
    if len(overflow):
        row = int(overflow[0])
        raise UserError(f"{path}: {len(overflow)} row(s) are too large for float32 distances (row {row}, item "
                        f"{item_ids[row]!r}, max |value| {float(np.abs(vectors[row]).max()):.3g}): k-means squares "
                        "them and overflows; rescale the vectors (e.g. L2-normalise them)")
    emb = ItemEmbeddings(item_ids, vectors.astype(np.float32), {"kind": "file", "path": str(path.resolve())})
    return emb.reorder(list(catalogue), source=f"{path} + {where}")
