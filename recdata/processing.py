"""Cleaning steps between loading and splitting. Each takes and returns a ``RecDataset`` and adds what it
removed or changed to ``drops`` (and the log), so ``stats()`` always accounts for every difference from the
source files.

Counted keys: ``html_unescaped_fields``, ``low_rating_interactions``, ``unknown_item_interactions``,
``duplicate_interactions``, ``kcore_interactions`` / ``kcore_users`` / ``kcore_items``, ``short_users`` /
``short_user_interactions``, ``unused_items``.
"""

from __future__ import annotations

import html
import logging

import datasets
import numpy as np
import pyarrow as pa

from recdata.dataset import ITEM_TEXT_FIELDS, RecDataset
from recdata.errors import UserError
from recdata.loaders.common import build_items, build_sequences

logger = logging.getLogger(__name__)

ALIGNED = ("item_ids", "timestamps", "ratings", "scenarios")  # per-interaction columns, filtered together


def _count(ds: RecDataset, counts: dict[str, int]) -> dict[str, int]:
    drops = dict(ds.drops)
    for key, value in counts.items():
        if value:
            drops[key] = drops.get(key, 0) + int(value)
            logger.info("%s: %s = %d", ds.name, key, value)
    return drops


class _Flat:
    """All interactions in one flat array (user-major) with the offsets of each user's run."""

    def __init__(self, ds: RecDataset):
        self.columns = ds.sequences.to_dict()
        self.lengths = np.array([len(s) for s in self.columns["item_ids"]], dtype=np.int64)
        self.user_of = np.repeat(np.arange(len(self.lengths)), self.lengths)
        self.items = np.array([i for s in self.columns["item_ids"] for i in s], dtype=object)

    def rebuild(self, ds: RecDataset, keep: np.ndarray, keep_users: np.ndarray | None = None) -> dict[str, list]:
        """Columns with only the ``keep`` interactions (and ``keep_users`` users; default all)."""
        bounds = np.cumsum(self.lengths)[:-1]
        kept_per_user = np.split(keep, bounds) if len(self.lengths) else []
        cols: dict[str, list] = {k: [] for k in self.columns}
        for u, mask in enumerate(kept_per_user):
            if keep_users is not None and not keep_users[u]:
                continue
            for k, values in self.columns.items():
                if k in ALIGNED:
                    cols[k].append([v for v, m in zip(values[u], mask, strict=True) if m])
                else:
                    cols[k].append(values[u])
        return cols


def _take(dset: datasets.Dataset, rows: list[int]) -> datasets.Dataset:
    """Materialised row subset (no lazy indices: RecDataset.save/fingerprint read the Arrow table)."""
    return datasets.Dataset(dset.with_format("arrow")[:].take(pa.array(rows, type=pa.int64())))


def _with_sequences(ds: RecDataset, cols: dict[str, list], drops: dict[str, int]) -> RecDataset:
    return RecDataset(items=ds.items, sequences=build_sequences(cols), name=ds.name, drops=drops)


def html_unescape_items(ds: RecDataset) -> RecDataset:
    """Replace HTML entities (``&amp;`` -> ``&``) in item text, one pass; counts the fields changed."""
    cols = ds.items.to_dict()
    changed = 0
    for field in ITEM_TEXT_FIELDS:
        new = [html.unescape(v) if "&" in v else v for v in cols[field]]
        changed += sum(a != b for a, b in zip(cols[field], new, strict=True))
        cols[field] = new
    if not changed:
        return ds
    items = build_items(cols["item_id"], {f: cols[f] for f in ITEM_TEXT_FIELDS})
    return RecDataset(items=items, sequences=ds.sequences, name=ds.name,
                      drops=_count(ds, {"html_unescaped_fields": changed}))


def filter_min_rating(ds: RecDataset, min_rating: float) -> RecDataset:
    """Drop interactions rated below ``min_rating`` (e.g. keep 4-5 stars as positive feedback)."""
    if "ratings" not in ds.sequences.column_names:
        raise UserError(f"{ds.name}: min_rating is set but the data has no ratings; unset min_rating")
    flat = _Flat(ds)
    ratings = np.array([r for s in flat.columns["ratings"] for r in s], dtype=np.float64)
    keep = ratings >= min_rating
    return _with_sequences(ds, flat.rebuild(ds, keep), _count(ds, {"low_rating_interactions": int((~keep).sum())}))


def handle_unknown_items(ds: RecDataset, policy: str = "error", source: str | None = None) -> RecDataset:
    """Interactions whose item is not in the catalogue: raise (``error``) naming user and item, or ``drop``."""
    if policy not in ("error", "drop"):
        raise UserError(f"unknown_items must be 'error' or 'drop', got {policy!r}")
    known = set(ds.items["item_id"])
    flat = _Flat(ds)
    keep = np.fromiter((i in known for i in flat.items), dtype=bool, count=len(flat.items))
    n_bad = int((~keep).sum())
    if not n_bad:
        return ds
    if policy == "error":
        first = int(np.flatnonzero(~keep)[0])
        user = flat.columns["user_id"][flat.user_of[first]]
        raise UserError(
            f"{source or ds.name}: user {user!r} interacts with item {flat.items[first]!r}, which is not in the item "
            f"catalogue ({n_bad} such interaction(s)); add the items to the item file or set unknown_items=drop "
            "to drop those interactions (counted in drops)"
        )
    return _with_sequences(ds, flat.rebuild(ds, keep), _count(ds, {"unknown_item_interactions": n_bad}))


def dedup_interactions(ds: RecDataset) -> RecDataset:
    """Keep only the first (earliest) interaction of each repeated (user, item) pair."""
    flat = _Flat(ds)
    keep = np.ones(len(flat.items), dtype=bool)
    pos = 0
    for seq in flat.columns["item_ids"]:
        seen: set[str] = set()
        for item in seq:
            if item in seen:
                keep[pos] = False
            seen.add(item)
            pos += 1
    n = int((~keep).sum())
    if not n:
        return ds
    return _with_sequences(ds, flat.rebuild(ds, keep), _count(ds, {"duplicate_interactions": n}))


def kcore_filter(ds: RecDataset, k: int) -> RecDataset:
    """Iteratively drop users and items with fewer than ``k`` interactions until both are at least ``k``.

    Items k-core removes leave the catalogue too (counted as ``kcore_items``, not again as ``unused_items``).
    """
    if k <= 1:
        return ds
    flat = _Flat(ds)
    item_codes = np.unique(flat.items.astype(str), return_inverse=True)[1].reshape(-1) if len(flat.items) \
        else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(flat.items), dtype=bool)
    n_users = len(flat.lengths)
    while True:
        user_counts = np.bincount(flat.user_of[keep], minlength=n_users)
        item_counts = np.bincount(item_codes[keep], minlength=int(item_codes.max()) + 1 if len(item_codes) else 0)
        bad = keep & ((user_counts[flat.user_of] < k) | (item_counts[item_codes] < k))
        if not bad.any():
            break
        keep &= ~bad
    users_before = int((flat.lengths > 0).sum())
    keep_users = np.bincount(flat.user_of[keep], minlength=n_users) > 0
    items_before = len(np.unique(item_codes))
    items_after = len(np.unique(item_codes[keep]))
    counts = {"kcore_interactions": int((~keep).sum()), "kcore_users": users_before - int(keep_users.sum()),
              "kcore_items": items_before - items_after}
    if not counts["kcore_interactions"]:
        return ds
    removed = set(flat.items[~keep].tolist()) - set(flat.items[keep].tolist())
    items = _take(ds.items, [pos for pos, i in enumerate(ds.items["item_id"]) if i not in removed])
    cols = flat.rebuild(ds, keep, keep_users)
    return RecDataset(items=items, sequences=build_sequences(cols), name=ds.name, drops=_count(ds, counts))


def drop_short_users(ds: RecDataset, min_interactions: int) -> RecDataset:
    """Drop users with fewer than ``min_interactions`` (leave-one-out needs 3: train, valid, test)."""
    lengths = np.array([len(s) for s in ds.sequences["item_ids"]], dtype=np.int64)
    short = lengths < min_interactions
    if not short.any():
        return ds
    for user, n in zip(np.array(ds.sequences["user_id"], dtype=object)[short][:5], lengths[short][:5], strict=True):
        logger.debug("%s: dropping user %r with %d interaction(s)", ds.name, user, n)
    seqs = _take(ds.sequences, np.flatnonzero(~short).tolist())
    counts = {"short_users": int(short.sum()), "short_user_interactions": int(lengths[short].sum())}
    return RecDataset(items=ds.items, sequences=seqs, name=ds.name, drops=_count(ds, counts))


def prune_unused_items(ds: RecDataset) -> RecDataset:
    """Drop catalogue items no remaining user interacts with (they could never be a target)."""
    used = {i for s in ds.sequences["item_ids"] for i in s}
    keep = [pos for pos, i in enumerate(ds.items["item_id"]) if i in used]
    if len(keep) == len(ds.items):
        return ds
    counts = {"unused_items": len(ds.items) - len(keep)}
    return RecDataset(items=_take(ds.items, keep), sequences=ds.sequences, name=ds.name, drops=_count(ds, counts))
