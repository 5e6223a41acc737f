"""Cold-item protocol: a seeded fraction of items loses every training interaction, so cold start is measured.

``cold_item_split`` relabels each training-part interaction with a chosen item as ``"cold"``. Training code
reads ``SplitDataset.train_sequences()`` (label ``"train"`` only), so a cold item is cut out of the training
part of every history; its valid/test targets and its places in evaluation histories stay as they were.
The evaluation's ``unseen`` target bucket (never bought in training) is then the cold slice by design.

Training softmaxes leave those items out (``training_softmax_mask``): a cold item stands for one that arrives after
training, which no deployed model's training softmax holds; kept as a negative, every step pushes it down and the
model learns it is never the answer (issue 31).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recdata.split import SplitDataset, with_labels

COLD_LABEL = "cold"

__all__ = ["COLD_LABEL", "cold_item_split", "cold_item_stats", "items_without_training", "training_softmax_mask",
           "uses_cold_protocol"]


def cold_item_split(split: SplitDataset, fraction: float, seed: int = 0) -> SplitDataset:
    """``round(fraction * catalogue)`` items drawn uniformly (seeded) lose all their training interactions."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"cold item fraction must be in [0, 1), got {fraction}")
    catalogue = split.dataset.item_ids()
    count = round(fraction * len(catalogue))
    if count == 0:
        return split
    rows = np.random.default_rng(seed).choice(len(catalogue), size=count, replace=False)
    cold = {catalogue[int(r)] for r in rows}
    seqs = split.dataset.sequences
    labels = [[COLD_LABEL if label == "train" and item in cold else label for item, label in zip(items, row, strict=True)]
              for items, row in zip(seqs["item_ids"], seqs["split"], strict=True)]
    return SplitDataset(with_labels(split.dataset, labels), max_history=split.max_history, protocol=split.protocol)


def uses_cold_protocol(split: SplitDataset) -> bool:
    """True when some training interaction was withheld by ``cold_item_split``."""
    return any(COLD_LABEL in row for row in split.dataset.sequences["split"])


def items_without_training(split: SplitDataset) -> list[str]:
    """Catalogue items (catalogue order) with no training interaction: the cold items (and any naturally unseen)."""
    warm = {item for _, items in split.train_sequences() for item in items}
    return [item for item in split.dataset.item_ids() if item not in warm]


def training_softmax_mask(split: SplitDataset, item_ids: Sequence[str] | None = None) -> np.ndarray | None:
    """``[len(item_ids)]`` bool, True for the items every training softmax leaves out (logit -inf, no gradient):
    under the cold-item protocol, the items without training (``items_without_training``). None without the
    protocol: training is then exactly as before (an item that is merely never bought stays a negative).
    ``item_ids``: the model's item order (default the catalogue's)."""
    if not uses_cold_protocol(split):
        return None
    cold = set(items_without_training(split))
    return np.array([item in cold for item in (split.dataset.item_ids() if item_ids is None else item_ids)], dtype=bool)


def cold_item_stats(split: SplitDataset) -> dict[str, Any]:
    """Counts for ``stats.json``: withheld interactions, items without training, cold valid/test targets."""
    cold = set(items_without_training(split))
    out: dict[str, Any] = {
        "withheld_interactions": sum(row.count(COLD_LABEL) for row in split.dataset.sequences["split"]),
        "items_without_training": len(cold),
    }
    for part in ("valid", "test"):
        out[f"cold_{part}_targets"] = sum(1 for t in split.eval_examples(part)["target"] if t in cold)
    return out
