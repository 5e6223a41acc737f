"""The one dataset type every stage consumes: an item catalogue plus per-user chronological sequences."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recdata.errors import InputFileError, UserError
from recdata.io import atomic_path, atomic_write_json
from recdata.scenarios import has_scenarios, scenario_names, scenario_stats, validate_scenarios

logger = logging.getLogger(__name__)

ITEM_TEXT_FIELDS = ("title", "description", "brand", "categories")
OPTIONAL_SEQUENCE_FIELDS = ("timestamps", "ratings", "domain", "scenarios", "split")
FORMAT_VERSION = 1


@dataclass
class RecDataset:
    """Items (``item_id`` + text fields) and sequences (``user_id``, chronological ``item_ids``).

    ``drops`` counts what processing removed (duplicates, k-core, short users), so no change is silent.
    """

    items: datasets.Dataset
    sequences: datasets.Dataset
    name: str = "dataset"
    drops: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in ("item_id", *ITEM_TEXT_FIELDS) if c not in self.items.column_names]
        if missing:
            raise UserError(f"{self.name}: item table lacks column(s) {missing}; loaders must fill them ('' if unknown)")
        missing = [c for c in ("user_id", "item_ids") if c not in self.sequences.column_names]
        if missing:
            raise UserError(f"{self.name}: sequence table lacks column(s) {missing}")

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_records(
        cls,
        items: list[dict[str, Any]],
        sequences: list[dict[str, Any]],
        name: str = "dataset",
        drops: dict[str, int] | None = None,
    ) -> RecDataset:
        """Build from plain dicts; item text fields default to ''. Used by loaders and tests."""
        item_rows = [{"item_id": str(r["item_id"]), **{f: str(r.get(f) or "") for f in ITEM_TEXT_FIELDS}} for r in items]
        seq_rows = [{**r, "user_id": str(r["user_id"]), "item_ids": [str(i) for i in r["item_ids"]]} for r in sequences]
        ds = cls(
            items=datasets.Dataset.from_list(item_rows) if item_rows else _empty_items(),
            sequences=datasets.Dataset.from_list(seq_rows) if seq_rows else _empty_sequences(),
            name=name,
            drops=dict(drops or {}),
        )
        return ds

    # ---- validation ---------------------------------------------------------------------------------
    def validate(self, source: str | None = None) -> RecDataset:
        """Raise a ValueError naming the offending id when the dataset is not usable as is."""
        where = source or self.name
        if len(self.items) == 0:
            raise UserError(f"{where}: the item catalogue is empty; check the item file path and format")
        item_ids = self.items["item_id"]
        seen: set[str] = set()
        for item_id in item_ids:
            if item_id in seen:
                raise UserError(f"{where}: duplicate item id {item_id!r} in the catalogue; item ids must be unique")
            seen.add(item_id)
        users: set[str] = set()
        for user_id, seq in zip(self.sequences["user_id"], self.sequences["item_ids"], strict=True):
            if user_id in users:
                raise UserError(f"{where}: duplicate user id {user_id!r}; merge the user's rows into one sequence")
            users.add(user_id)
            for item_id in seq:
                if item_id not in seen:
                    raise UserError(
                        f"{where}: user {user_id!r} interacts with item {item_id!r} which is not in the catalogue; "
                        "add it to the item file or drop the interaction"
                    )
        if self.has_scenarios:
            seqs = self.sequences
            validate_scenarios(seqs["user_id"], seqs["item_ids"], seqs["scenarios"], where)
        return self

    # ---- views --------------------------------------------------------------------------------------
    def item_ids(self) -> list[str]:
        return list(self.items["item_id"])

    def item_table(self) -> dict[str, dict[str, str]]:
        return {row["item_id"]: row for row in self.items}

    @property
    def has_scenarios(self) -> bool:
        """True when every interaction carries a scenario label (the ``scenarios`` column)."""
        return has_scenarios(self.sequences)

    def scenario_names(self) -> list[str]:
        """Sorted scenario labels ([] when the dataset has none)."""
        return scenario_names(self.sequences["scenarios"]) if self.has_scenarios else []
    def untitled_items(self) -> list[str]:
        """Ids of items whose title is empty or blank (text tasks and text embeddings show them nameless)."""
        return [i for i, t in zip(self.items["item_id"], self.items["title"], strict=True) if not str(t).strip()]

    def warn_untitled(self, source: str, consequence: str) -> int:
        """Log one warning with the count of untitled items; returns the count."""
        untitled = self.untitled_items()
        if untitled:
            logger.warning("%s: %d item(s) of %d have no title (e.g. %s); %s", source, len(untitled), len(self.items),
                           untitled[:3], consequence)
        return len(untitled)

    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences["item_ids"]))

    def stats(self) -> dict[str, Any]:
        lengths = np.array([len(s) for s in self.sequences["item_ids"]], dtype=np.int64)
        n_users, n_items, n_inter = len(self.sequences), len(self.items), int(lengths.sum()) if len(lengths) else 0
        out: dict[str, Any] = {
            "name": self.name,
            "users": n_users,
            "items": n_items,
            "interactions": n_inter,
            "density": n_inter / (n_users * n_items) if n_users and n_items else 0.0,
        }
        if len(lengths):
            pct = np.percentile(lengths, [0, 25, 50, 75, 90, 99, 100])
            out["sequence_length"] = {
                "mean": float(lengths.mean()),
                **{k: float(v) for k, v in zip(["min", "p25", "p50", "p75", "p90", "p99", "max"], pct, strict=True)},
            }
        if self.has_scenarios:
            seqs = self.sequences
            out["scenarios"] = scenario_stats(seqs["user_id"], seqs["item_ids"], seqs["scenarios"])
        out["drops"] = dict(self.drops)
        return out

    def fingerprint(self) -> str:
        """sha256 of the content (items, sequences, name), stable across save/load."""
        digest = hashlib.sha256(self.name.encode())
        for table in (_arrow(self.items), _arrow(self.sequences)):
            _update_with_table(digest, table)
        return digest.hexdigest()

    # ---- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write ``items.parquet``, ``sequences.parquet`` and ``meta.json`` atomically into ``path``."""
        with atomic_path(path, is_dir=True) as tmp:
            pq.write_table(_arrow(self.items), tmp / "items.parquet")
            pq.write_table(_arrow(self.sequences), tmp / "sequences.parquet")
            atomic_write_json(
                tmp / "meta.json",
                {"format_version": FORMAT_VERSION, "name": self.name, "drops": self.drops,
                 "fingerprint": self.fingerprint(), "stats": self.stats()},
            )

    @classmethod
    def load(cls, path: str | Path) -> RecDataset:
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise InputFileError(f"{path} is not a saved RecDataset (no meta.json); create it with `alignrec data prepare`")
        meta = json.loads(meta_file.read_text())
        ds = cls(
            items=datasets.Dataset(pq.read_table(path / "items.parquet")),
            sequences=datasets.Dataset(pq.read_table(path / "sequences.parquet")),
            name=meta["name"],
            drops=meta.get("drops", {}),
        )
        if ds.fingerprint() != meta["fingerprint"]:
            raise UserError(f"{path}: content does not match the fingerprint in meta.json; the files were changed or corrupted")
        return ds


def _arrow(dset: datasets.Dataset) -> pa.Table:
    """The rows a Dataset shows, honouring a select()/filter() index mapping (``.data`` alone ignores it)."""
    return dset.flatten_indices().data.table if dset._indices is not None else dset.data.table


def _update_with_table(digest: Any, table: pa.Table, rows: int = 4096) -> None:
    """Hash the canonical bytes of a table's values (column order and names kept), independent of Arrow layout:
    ``json.dumps({column: values}, ensure_ascii=False)`` in UTF-8, written ``rows`` rows at a time (json.dumps
    joins list items and dict entries with ", " and keys with ": "), so memory holds one slice of Python values,
    not every value of the table (a split of 1M users is tens of millions of objects)."""
    digest.update(b"{")
    for k, name in enumerate(table.column_names):
        digest.update(f"{', ' if k else ''}{json.dumps(name, ensure_ascii=False)}: [".encode())
        column = table.column(name)
        for start in range(0, len(column), rows):
            piece = json.dumps(column.slice(start, rows).to_pylist(), ensure_ascii=False)[1:-1]
            digest.update(f"{', ' if start else ''}{piece}".encode())
        digest.update(b"]")
    digest.update(b"}")


def _empty_items() -> datasets.Dataset:
    return datasets.Dataset.from_dict({"item_id": [], **{f: [] for f in ITEM_TEXT_FIELDS}},
                                      features=datasets.Features({"item_id": datasets.Value("string"),
                                                                  **{f: datasets.Value("string") for f in ITEM_TEXT_FIELDS}}))


def _empty_sequences() -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"user_id": [], "item_ids": []},
        features=datasets.Features({"user_id": datasets.Value("string"), "item_ids": datasets.Sequence(datasets.Value("string"))}),
    )
