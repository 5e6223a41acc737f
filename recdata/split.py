"""Train/valid/test splits as per-position labels on each user's sequence.

A label per interaction keeps one representation for both protocols: leave-one-out (the last item is the
test target, the second-to-last the valid target) and a global temporal split (targets cut at the 80% / 90%
quantiles of interaction time). Training code reads only ``train_sequences()``, so no valid or test target
can reach a training example.

With per-interaction scenarios (``recdata.scenarios``) the split is still leave-one-out on the merged sequence;
each evaluation example gains its ``target_scenario`` and its ``history_scenarios``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from recdata import scenarios as scen
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
        return list(self.iter_train_sequences())

    def iter_train_sequences(self) -> Iterator[tuple[str, list[str]]]:
        """The pairs of ``train_sequences()``, one user at a time."""
        for user_id, items, labels in self._rows():
            yield user_id, [item for item, label in zip(items, labels, strict=True) if label == "train"]

    def eval_examples(self, part: str) -> datasets.Dataset:
        """(user_id, history, target) for each interaction labelled ``part``; history truncated.

        With scenarios, also ``target_scenario`` (the target interaction's label) and ``history_scenarios``.
        """
        features = self.eval_features(part)
        rows: dict[str, list] = {name: [] for name in features}
        for example in self.iter_eval_examples(part):
            for name, value in example.items():
                rows[name].append(value)
        return datasets.Dataset.from_dict(rows, features=features)

    def eval_features(self, part: str) -> datasets.Features:
        """The columns of ``eval_examples(part)``."""
        self._check_part(part)
        feats = {
            "user_id": datasets.Value("string"),
            "history": datasets.Sequence(datasets.Value("string")),
            "target": datasets.Value("string"),
        }
        if self.has_scenarios:
            feats.update(target_scenario=datasets.Value("string"),
                         history_scenarios=datasets.Sequence(datasets.Value("string")))
        return datasets.Features(feats)

    def iter_eval_examples(self, part: str) -> Iterator[dict]:
        """The rows of ``eval_examples(part)``, in its order, one at a time (a caller that streams them never holds
        every user's history)."""
        self._check_part(part)
        return self._eval_rows(part)

    def _eval_rows(self, part: str) -> Iterator[dict]:
        with_scen = self.has_scenarios
        # list(): indexing a datasets Column per row re-reads Arrow each time (quadratic on real data)
        labels_of = list(self.dataset.sequences["scenarios"]) if with_scen else None
        for row, (user_id, items, labels) in enumerate(self._rows()):
            for pos, label in enumerate(labels):
                if label == part and pos > 0:
                    start = max(0, pos - self.max_history)
                    example = {"user_id": user_id, "history": list(items[start:pos]), "target": items[pos]}
                    if with_scen:
                        example["target_scenario"] = labels_of[row][pos]
                        example["history_scenarios"] = list(labels_of[row][start:pos])
                    yield example

    @staticmethod
    def _check_part(part: str) -> None:
        if part not in ("valid", "test"):
            raise UserError(f"part must be 'valid' or 'test', got {part!r}")

    # ---- scenarios (recdata.scenarios) ------------------------------------------------------------------
    @property
    def has_scenarios(self) -> bool:
        return self.dataset.has_scenarios

    def scenario_names(self) -> list[str]:
        return self.dataset.scenario_names()

    def _require_scenarios(self) -> None:
        if not self.has_scenarios:
            raise UserError(f"{self.dataset.name} has no scenario labels; prepare it with scenario_column or "
                             "scenario_item_field")

    def train_scenario_sequences(self) -> list[tuple[str, list[str], list[str]]]:
        """(user_id, training items, their scenarios) for every user: ``train_sequences`` with labels (items
        labelled "train" only, so cold-item relabelling keeps them aligned)."""
        self._require_scenarios()
        scenarios_of = list(self.dataset.sequences["scenarios"])  # materialised: per-row Column indexing is slow
        out = []
        for row, (user_id, items, labels) in enumerate(self._rows()):
            train = [pos for pos, label in enumerate(labels) if label == "train"]
            out.append((user_id, [items[p] for p in train], [scenarios_of[row][p] for p in train]))
        return out

    def scenario_catalogues(self) -> dict[str, list[str]]:
        """``{scenario: item ids}`` (catalogue order): the items labelled with the scenario anywhere in the data,
        like the full catalogue itself (an item's scenario is catalogue metadata, not a training signal)."""
        self._require_scenarios()
        seqs = self.dataset.sequences
        return scen.scenario_catalogues(self.dataset.item_ids(), seqs["item_ids"], seqs["scenarios"])

    def item_scenario(self) -> dict[str, str]:
        """``{item_id: scenario}`` (most frequent label of the item); used to tag histories at inference."""
        self._require_scenarios()
        return scen.item_scenario(self.dataset.sequences["item_ids"], self.dataset.sequences["scenarios"])

    def user_scenarios(self) -> dict[str, list[str]]:
        """``{user_id: sorted scenarios}`` the user has interactions in (the whole sequence: what serving knows)."""
        self._require_scenarios()
        seqs = self.dataset.sequences
        return {u: sorted(set(s)) for u, s in zip(seqs["user_id"], seqs["scenarios"], strict=True)}

    def train_popularity(self) -> dict[str, int]:
        """``{item_id: interactions in the training part}`` (``train_sequences``: cold-withheld items and valid /
        test targets never count). The one definition of training popularity: the popularity row, the
        evaluation's long-tail slices, popularity negatives of the tasks and the cache fallback all read it
        (``recdata.popularity.train_popularity(split)`` is the same call)."""
        counts: dict[str, int] = {}
        for _, items in self.iter_train_sequences():  # one user at a time: no second copy of every sequence
            for item in items:
                counts[item] = counts.get(item, 0) + 1
        return counts

    def train_scenario_popularity(self) -> dict[str, dict[str, int]]:
        """``{scenario: {item_id: training interactions labelled with it}}`` (the per-scenario popularity)."""
        counts: dict[str, dict[str, int]] = {}
        for _, items, labels in self.train_scenario_sequences():
            for item, label in zip(items, labels, strict=True):
                table = counts.setdefault(label, {})
                table[item] = table.get(item, 0) + 1
        return counts

    def scenario_split(self, scenario: str) -> SplitDataset:
        """The split restricted to one scenario: each user's interactions labelled ``scenario`` (their split
        labels kept), catalogue = the scenario's catalogue. Users with none are left out. This is what a
        per-scenario model trains on (its train part is a prefix, its valid/test targets are the global ones
        that fall in the scenario)."""
        self._require_scenarios()
        catalogue = set(self.scenario_catalogues().get(scenario, []))
        if not catalogue:
            raise UserError(f"scenario {scenario!r} is not in {self.dataset.name}; scenarios: {self.scenario_names()}")
        cols = self.dataset.sequences.to_dict()
        out: dict[str, list] = {k: [] for k in cols}
        for row in range(len(cols["user_id"])):
            keep = [pos for pos, s in enumerate(cols["scenarios"][row]) if s == scenario]
            if not keep:
                continue
            for k, values in cols.items():
                value = values[row]
                out[k].append([value[p] for p in keep] if isinstance(value, list) else value)
        seqs = datasets.Dataset.from_dict(out, features=self.dataset.sequences.features)
        items = self.dataset.items.filter(lambda r: r["item_id"] in catalogue)
        items = datasets.Dataset.from_dict(items.to_dict(), features=items.features)  # no lazy index mapping
        ds = RecDataset(items=items, sequences=seqs, name=f"{self.dataset.name}[{scenario}]", drops=self.dataset.drops)
        return SplitDataset(ds, max_history=self.max_history, protocol=self.protocol)

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


def with_labels(ds: RecDataset, labels: list[list[str]]) -> RecDataset:
    """``ds`` with its ``split`` column replaced by ``labels`` (one label per interaction, aligned with
    ``item_ids``): how the split protocols (``leave_one_out_split``, ``temporal_split``, ``recdata.cold_items``)
    record their labels."""
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
    return SplitDataset(with_labels(ds, labels), max_history=max_history, protocol="leave_one_out")


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
    return SplitDataset(with_labels(ds, labels), max_history=max_history, protocol="temporal")
