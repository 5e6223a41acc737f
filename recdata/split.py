"""Train/valid/test splits as per-position labels on each user's sequence.

A label per interaction keeps one representation for both protocols: leave-one-out (the last item is the
test target, the second-to-last the valid target) and a global temporal split (targets cut at the 80% / 90%
quantiles of interaction time). Training code reads only ``train_sequences()``, so no valid or test target
can reach a training example.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from recdata.dataset import RecDataset
from recdata.errors import InputFileError, UserError
from recdata.io import atomic_write_json

logger = logging.getLogger(__name__)

PARTS = ("train", "valid", "test")


@dataclass
class SplitDataset:
    """A RecDataset whose ``sequences`` carry a ``split`` column: one label in PARTS per interaction."""

    dataset: RecDataset
    max_history: int = 20
    protocol: str = "leave_one_out"

    def __post_init__(self) -> None:
        if "split" not in self.dataset.sequences.column_names:
            raise UserError("SplitDataset needs a 'split' column; build it with leave_one_out_split or temporal_split")
        if self.max_history < 1:
            raise UserError(f"max_history must be >= 1, got {self.max_history}")

    def _rows(self):
        seqs = self.dataset.sequences
        return zip(seqs["user_id"], seqs["item_ids"], seqs["split"], strict=True)

    def train_sequences(self) -> list[tuple[str, list[str]]]:
        """(user_id, items labelled "train") for every user, in order.

        The training part is a prefix, except that ``recdata.cold_items`` may relabel some of it "cold"
        (withheld): those items are skipped here, so no training code ever sees them.
        """
        return [(user_id, [item for item, label in zip(items, labels, strict=True) if label == "train"])
                for user_id, items, labels in self._rows()]

    def eval_examples(self, part: str) -> datasets.Dataset:
        """(user_id, history, target) for each interaction labelled ``part``; history truncated."""
        if part not in ("valid", "test"):
            raise UserError(f"part must be 'valid' or 'test', got {part!r}")
        rows: dict[str, list] = {"user_id": [], "history": [], "target": []}
        for user_id, items, labels in self._rows():
            for pos, label in enumerate(labels):
                if label == part and pos > 0:
                    rows["user_id"].append(user_id)
                    rows["history"].append(list(items[max(0, pos - self.max_history):pos]))
                    rows["target"].append(items[pos])
        features = datasets.Features({
            "user_id": datasets.Value("string"),
            "history": datasets.Sequence(datasets.Value("string")),
            "target": datasets.Value("string"),
        })
        return datasets.Dataset.from_dict(rows, features=features)

    def serving_histories(self) -> dict[str, list[str]]:
        """The last ``max_history`` items of each whole sequence: what an online cache recommends from."""
        return {user_id: list(items[-self.max_history:]) for user_id, items, _ in self._rows()}

    def save(self, path: str | Path) -> None:
        self.dataset.save(path)
        atomic_write_json(Path(path) / "split.json", {"max_history": self.max_history, "protocol": self.protocol})

    @classmethod
    def load(cls, path: str | Path) -> SplitDataset:
        import json

        meta_file = Path(path) / "split.json"
        if not meta_file.is_file():
            raise InputFileError(f"{path} has no split.json: it is not a split dataset; run `alignrec data prepare`")
        meta = json.loads(meta_file.read_text())
        return cls(RecDataset.load(path), max_history=meta["max_history"], protocol=meta["protocol"])


def _with_labels(ds: RecDataset, labels: list[list[str]]) -> RecDataset:
    seqs = ds.sequences
    if "split" in seqs.column_names:
        seqs = seqs.remove_columns("split")
    seqs = seqs.add_column("split", labels)
    return RecDataset(items=ds.items, sequences=seqs, name=ds.name, drops=ds.drops)


def leave_one_out_split(ds: RecDataset, max_history: int = 20) -> SplitDataset:
    """Last item = test target, second-to-last = valid target, the rest = training history."""
    labels = []
    for user_id, items in zip(ds.sequences["user_id"], ds.sequences["item_ids"], strict=True):
        if len(items) < 3:
            raise UserError(
                f"{ds.name}: user {user_id!r} has {len(items)} interaction(s); leave-one-out needs >= 3 "
                "(prepare the dataset with min_user_interactions >= 3 to drop such users, counted in stats)"
            )
        labels.append(["train"] * (len(items) - 2) + ["valid", "test"])
    return SplitDataset(_with_labels(ds, labels), max_history=max_history, protocol="leave_one_out")


def temporal_split(ds: RecDataset, ratios: Sequence[float] = (0.8, 0.1, 0.1), max_history: int = 20) -> SplitDataset:
    """Global split by target time: interactions before the 80% time quantile train, the next 10% validate."""
    if "timestamps" not in ds.sequences.column_names:
        raise UserError(f"{ds.name}: temporal_split needs per-interaction timestamps; use leave_one_out_split instead")
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise UserError(f"ratios must be three non-negative numbers summing to 1, got {tuple(ratios)}")
    all_ts = np.sort(np.concatenate([np.asarray(t, dtype=np.int64) for t in ds.sequences["timestamps"]]))
    n = len(all_ts)
    cut_valid = all_ts[min(n - 1, int(n * ratios[0]))]
    cut_test = all_ts[min(n - 1, int(n * (ratios[0] + ratios[1])))]
    labels = []
    for user_id, ts in zip(ds.sequences["user_id"], ds.sequences["timestamps"], strict=True):
        if any(b < a for a, b in zip(ts, ts[1:], strict=False)):
            raise UserError(f"{ds.name}: user {user_id!r} has timestamps out of order; sequences must be chronological")
        user_labels = ["train" if t < cut_valid else "valid" if t < cut_test else "test" for t in ts]
        user_labels[0] = "train"  # a first interaction has no history, so it is never a target
        labels.append(user_labels)
    return SplitDataset(_with_labels(ds, labels), max_history=max_history, protocol="temporal")
