"""Load user-provided item vectors (``.npy`` or ``.safetensors``) plus their id list, checked against the catalogue."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recdata.errors import InputFileError, UserError
from tokenization.embeddings.vectors import ItemEmbeddings, overflowing_rows

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
