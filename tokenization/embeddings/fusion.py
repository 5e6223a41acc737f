"""Fusion: weighted concatenation of per-item L2-normalised parts.

Normalising each part first stops the part with the largest scale (e.g. un-normalised CF vectors) from
dominating the RQ-VAE distance; the weight then sets each part's share: with weights w, the squared
distance between two fused vectors is sum_p w_p^2 * ||a_p - b_p||^2.
"""

from __future__ import annotations

import numpy as np

from recdata.errors import UserError
from recdata.item_vectors import ItemEmbeddings


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise unit norm; an all-zero row stays zero."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def fuse_embeddings(parts: dict[str, ItemEmbeddings], weights: dict[str, float]) -> ItemEmbeddings:
    """Concatenate ``w * normalize(part)`` in ``weights`` order, rows aligned to the first part's ids."""
    if set(parts) != set(weights):
        raise UserError(f"fusion parts {sorted(parts)} and weights {sorted(weights)} must name the same sources")
    names = list(weights)
    item_ids = parts[names[0]].item_ids
    blocks = []
    for name in names:
        aligned = parts[name].reorder(item_ids, source=f"fusion part {name!r}")
        blocks.append(weights[name] * l2_normalize(aligned.vectors))
    meta = {"kind": "fused", "weights": dict(weights), "dims": {n: parts[n].dim for n in names},
            "parts": {n: parts[n].meta for n in names}}
    return ItemEmbeddings(list(item_ids), np.concatenate(blocks, axis=1), meta)
