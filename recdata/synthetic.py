"""A synthetic catalogue and interaction log of any size, with structure a model can learn (``make_synthetic.py``).

Why: our real datasets stop at ~16k items, so the cost of every stage at 10^5-10^7 items, and whether quality
survives there, can only be measured on generated data. The output is the ``tabular`` layout in Parquet
(``items.parquet`` + ``interactions.parquet``, auto-detected by ``recdata.loaders``), so the real data stage reads it.

The world (seeded, O(items) memory):

- items fall into ``num_clusters`` latent clusters (default about sqrt(items)); an item's title, categories and
  description come from word templates of its cluster, so item text carries the cluster;
- item popularity is Zipf: the item of popularity rank r has weight (r + 1) ** -zipf_exponent;
- the items of a cluster form a cycle (a chain), and each cluster has ``cluster_fanout`` successor clusters.

A user's first item is drawn by popularity; each next item is, with probability ``chain_prob``, the chain successor
of the previous item; with ``cluster_prob``, a popular item of one of the previous cluster's successor clusters;
otherwise a popular item of the whole catalogue (noise). So the next item is predictable from the previous one
well beyond popularity (a first-order Markov count model beats the popularity ranking), and the planted share is
known. No user repeats an item (a repeat is redrawn by popularity), so ``dedup`` drops nothing.

Users are generated in fixed blocks of ``USERS_PER_BLOCK``, each with its own seeded stream and written as one
Parquet row group: memory is bounded by the block and the catalogue, not by the number of users, and the same
config gives the same bytes. The folder is built under a temporary name and renamed into place with its manifest
``synthetic.json``; a non-empty folder this generator did not write is refused.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from recdata.errors import ConfigError, OutputFolderError
from recdata.io import atomic_path, sha256_file
from recdata.outputs import MARKER, read_marker

logger = logging.getLogger(__name__)

__all__ = ["COMMAND", "MANIFEST", "SyntheticConfig", "SyntheticWorld", "generate_synthetic", "user_histories"]

COMMAND = "make_synthetic"  # the marker's command: the only folders this generator replaces
MANIFEST = "synthetic.json"
GENERATED_FILES = ("items.parquet", "interactions.parquet", MANIFEST, MARKER)  # all it writes
USERS_PER_BLOCK = 16384  # users per row group and per seeded stream: fixed, so the bytes depend on the config only
_ITEM_ROWS_PER_GROUP = 65536
_BASE_TIME = 1_600_000_000  # unix seconds of the earliest first interaction
_FORMAT_VERSION = 1  # bump when the same config would give other bytes

_DEPARTMENTS = ("Kitchen", "Garden", "Office", "Lab", "Outdoor", "Audio", "Toys", "Fitness", "Books", "Beauty",
                "Tools", "Pets", "Travel", "Music", "Baby", "Auto")
_NOUNS = ("kettle", "lamp", "notebook", "pipette", "tent", "headphone", "puzzle", "dumbbell", "novel", "serum",
          "wrench", "leash", "backpack", "guitar string", "stroller", "wiper", "mug", "planter", "stapler",
          "beaker", "lantern", "speaker", "kite", "yoga mat", "atlas", "brush", "drill", "collar", "suitcase",
          "drumstick", "bottle", "jump starter")
_ADJECTIVES = ("compact", "deluxe", "classic", "rugged", "portable", "quiet", "smart", "vintage", "heavy-duty",
               "lightweight", "eco", "premium", "travel", "pro", "mini", "family", "wireless", "foldable",
               "reusable", "sport")
_MATERIALS = ("steel", "bamboo", "glass", "canvas", "ceramic", "aluminium", "oak", "silicone", "leather", "cotton",
              "carbon", "wool")
_USES = ("everyday use", "weekend trips", "small spaces", "professionals", "beginners", "gifts", "the whole family",
         "long sessions")


@dataclass
class SyntheticConfig:
    """What to generate; the same values (and code version) give the same bytes."""

    out_dir: str = field(metadata={"help": "Output folder (written atomically; refused when it holds files that "
                                           "make_synthetic did not write)."})
    num_items: int = field(default=10_000, metadata={"help": "Catalogue size."})
    num_users: int = field(default=10_000, metadata={"help": "Number of users."})
    interactions_per_user: int = field(default=20, metadata={
        "help": "Mean history length; each user's length is uniform in [max(3, mean // 2), 2 * mean - that]."})
    num_clusters: int = field(default=0, metadata={
        "help": "Latent item clusters (title templates, chains, cluster transitions); 0 = round(sqrt(num_items))."})
    zipf_exponent: float = field(default=1.0, metadata={
        "help": "Popularity of the item of rank r is (r + 1) ** -zipf_exponent; larger = a heavier head."})
    chain_prob: float = field(default=0.5, metadata={
        "help": "Probability that the next item is the chain successor of the previous item (the planted signal)."})
    cluster_prob: float = field(default=0.35, metadata={
        "help": "Probability that the next item is a popular item of a successor cluster of the previous item's."})
    cluster_fanout: int = field(default=3, metadata={"help": "Successor clusters per cluster."})
    num_scenarios: int = field(default=0, metadata={
        "help": "Scenarios (an item column 'scenario', one per cluster; load with scenario_item_field=scenario); "
                "0 = none."})
    seed: int = field(default=0, metadata={"help": "Seed of the world and of every user block."})

    def __post_init__(self) -> None:
        if self.num_items < 1 or self.num_users < 1:
            raise ConfigError(f"num_items and num_users must be >= 1, got {self.num_items}, {self.num_users}")
        if self.interactions_per_user < 3:
            raise ConfigError(f"interactions_per_user must be >= 3 (leave-one-out needs 3 per user), got "
                              f"{self.interactions_per_user}")
        longest = self.length_range()[1]
        if self.num_items < 2 * longest:
            raise ConfigError(f"num_items={self.num_items} is too small for users of up to {longest} distinct items; "
                              f"use num_items >= {2 * longest} or a smaller interactions_per_user")
        if not (0 <= self.chain_prob and 0 <= self.cluster_prob and self.chain_prob + self.cluster_prob <= 1):
            raise ConfigError(f"chain_prob={self.chain_prob} and cluster_prob={self.cluster_prob} must be >= 0 with a "
                              "sum <= 1 (the rest is popularity noise)")
        if self.num_clusters < 0 or self.num_clusters > self.num_items:
            raise ConfigError(f"num_clusters must be in [0, num_items={self.num_items}], got {self.num_clusters}")
        if self.cluster_fanout < 1 or self.zipf_exponent < 0 or self.num_scenarios < 0:
            raise ConfigError("cluster_fanout must be >= 1, zipf_exponent >= 0 and num_scenarios >= 0")

    def length_range(self) -> tuple[int, int]:
        """Shortest and longest history (uniform in between, mean ``interactions_per_user``)."""
        low = max(3, self.interactions_per_user // 2)
        return low, 2 * self.interactions_per_user - low

    def clusters(self) -> int:
        return self.num_clusters or max(1, round(math.sqrt(self.num_items)))


class SyntheticWorld:
    """Clusters, chains, popularity and cluster transitions of one config, with vectorised samplers."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        n, c = cfg.num_items, cfg.clusters()
        rng = np.random.default_rng([cfg.seed, 0])
        order = rng.permutation(n)  # cluster k holds order[k::c], in that (chain) order
        self.cluster = np.empty(n, dtype=np.int64)
        self.cluster[order] = np.arange(n) % c
        nxt = np.arange(n) + c  # the successor of order[j] is order[j + c], the cluster's last wraps to its first
        wrap = nxt >= n
        nxt[wrap] = np.arange(n)[wrap] % c
        self.successor = np.empty(n, dtype=np.int64)
        self.successor[order] = order[nxt]
        rank = rng.permutation(n)  # popularity rank of each item (0 = most popular)
        self.weight = (rank + 1.0) ** -cfg.zipf_exponent
        self.cdf = np.cumsum(self.weight) / self.weight.sum()
        self.next_clusters = rng.integers(0, c, size=(c, cfg.cluster_fanout))  # [clusters, fanout]
        fan = 0.6 ** np.arange(cfg.cluster_fanout)
        self.fanout_p = fan / fan.sum()
        # per-cluster popularity sampling: keys cluster + cumulative share, sorted by (cluster, item)
        self.by_cluster = np.argsort(self.cluster, kind="stable")
        sorted_cluster = self.cluster[self.by_cluster]
        w = self.weight[self.by_cluster]
        starts = np.searchsorted(sorted_cluster, np.arange(c))
        totals = np.add.reduceat(w, starts)
        cum = np.cumsum(w) - np.repeat(np.cumsum(w)[starts] - w[starts], np.diff(np.append(starts, n)))
        frac = cum / np.repeat(totals, np.diff(np.append(starts, n)))
        frac[np.append(starts[1:], n) - 1] = 1.0
        self.cluster_keys = sorted_cluster + frac

    def sample_popular(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, rng.random(size), side="right"), self.cfg.num_items - 1)

    def sample_in_clusters(self, rng: np.random.Generator, clusters: np.ndarray) -> np.ndarray:
        """One item per entry of ``clusters``, by popularity within that cluster."""
        pos = np.searchsorted(self.cluster_keys, clusters + rng.random(len(clusters)), side="left")
        return self.by_cluster[np.minimum(pos, self.cfg.num_items - 1)]

    def next_items(self, rng: np.random.Generator, prev: np.ndarray) -> np.ndarray:
        """The planted step: chain successor / successor cluster / popularity noise, per user."""
        u = rng.random(len(prev))
        out = np.empty_like(prev)
        chain = u < self.cfg.chain_prob
        hop = ~chain & (u < self.cfg.chain_prob + self.cfg.cluster_prob)
        noise = ~chain & ~hop
        out[chain] = self.successor[prev[chain]]
        choice = rng.choice(self.cfg.cluster_fanout, size=int(hop.sum()), p=self.fanout_p)
        out[hop] = self.sample_in_clusters(rng, self.next_clusters[self.cluster[prev[hop]], choice])
        out[noise] = self.sample_popular(rng, int(noise.sum()))
        return out

    def item_table(self, start: int, stop: int) -> pa.Table:
        """Catalogue rows ``start:stop``: id and template text of the item's cluster (+ scenario)."""
        idx = np.arange(start, stop)
        clusters = self.cluster[idx]
        rows: dict[str, list[str]] = {"item_id": [f"i{i}" for i in idx], "title": [], "categories": [],
                                      "description": []}
        n_noun, n_adj = len(_NOUNS), len(_ADJECTIVES)
        for i, c in zip(idx.tolist(), clusters.tolist(), strict=True):
            noun, adj = _NOUNS[c % n_noun], _ADJECTIVES[(c // n_noun) % n_adj]
            material = _MATERIALS[(c // (n_noun * n_adj)) % len(_MATERIALS)]
            dept = _DEPARTMENTS[(c * 7 + c // n_noun) % len(_DEPARTMENTS)]
            rows["title"].append(f"{adj.capitalize()} {material} {noun} {i % 997}")
            rows["categories"].append(f"{dept} > {noun.capitalize()}s > {adj.capitalize()}")
            rows["description"].append(f"A {adj} {noun} in {material} for {_USES[c % len(_USES)]}, "
                                       f"collection {c}.")
        if self.cfg.num_scenarios:
            rows["scenario"] = [f"S{c % self.cfg.num_scenarios}" for c in clusters.tolist()]
        return pa.table(rows)


def user_histories(world: SyntheticWorld, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Block ``block``'s users: item indices ``[users, longest]`` (-1 past a user's end) and their lengths."""
    cfg = world.cfg
    first = block * USERS_PER_BLOCK
    n = min(USERS_PER_BLOCK, cfg.num_users - first)
    rng = np.random.default_rng([cfg.seed, 1, block])
    low, high = cfg.length_range()
    lengths = rng.integers(low, high + 1, size=n)
    longest = int(lengths.max())
    hist = np.full((n, longest), -1, dtype=np.int64)  # [users, positions]
    hist[:, 0] = world.sample_popular(rng, n)
    for t in range(1, longest):
        nxt = world.next_items(rng, hist[:, t - 1])
        dup = np.flatnonzero((hist[:, :t] == nxt[:, None]).any(axis=1))
        rounds = 0
        while len(dup):  # redraw repeats by popularity, then uniformly (ends: num_items >= 2 x longest)
            rounds += 1
            nxt[dup] = (world.sample_popular(rng, len(dup)) if rounds <= 32
                        else rng.integers(0, cfg.num_items, size=len(dup)))
            dup = dup[(hist[dup, :t] == nxt[dup, None]).any(axis=1)]
        hist[:, t] = nxt
    hist[np.arange(longest)[None, :] >= lengths[:, None]] = -1
    return hist, lengths


def _interaction_table(world: SyntheticWorld, block: int, item_names: pa.Array) -> pa.Table:
    hist, lengths = user_histories(world, block)
    first = block * USERS_PER_BLOCK
    rng = np.random.default_rng([world.cfg.seed, 2, block])
    start = _BASE_TIME + rng.integers(0, 365 * 86400, size=len(lengths))
    gaps = 60 + rng.exponential(86400.0, size=hist.shape).astype(np.int64)  # [users, positions], strictly increasing
    times = start[:, None] + np.cumsum(gaps, axis=1) - gaps[:, :1]
    keep = hist >= 0  # row-major: user after user, each in time order
    users = pa.array([f"u{u}" for u in range(first, first + len(lengths))])
    return pa.table({"user_id": users.take(pa.array(np.repeat(np.arange(len(lengths)), lengths))),
                     "item_id": item_names.take(pa.array(hist[keep])),
                     "timestamp": pa.array(times[keep], type=pa.int64())})


def _check_out_dir(out: Path) -> None:
    """Refuse a file, a non-empty folder whose marker does not say this generator wrote it, or one of ours that
    now also holds files it did not write (replacing the folder would lose them)."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"output {out} is a file; choose a folder path for make_synthetic")
    if out.is_dir() and any(out.iterdir()) and read_marker(out).get("command") != COMMAND:
        raise OutputFolderError(f"output folder {out} is not empty and was not written by make_synthetic; choose a "
                                "new or empty folder (its files are left alone)")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in GENERATED_FILES) if out.is_dir() else []
    if foreign:
        raise OutputFolderError(f"output folder {out} was written by make_synthetic but now also holds {foreign}, "
                                "which it did not write; move them out or choose another folder")


def remove_synthetic(out: str | Path) -> None:
    """Delete a folder this generator wrote: its own files only, after the same check as a rewrite."""
    out = Path(out)
    if not out.is_dir():
        return
    _check_out_dir(out)
    for name in GENERATED_FILES:
        (out / name).unlink(missing_ok=True)
    out.rmdir()


def _config_dict(cfg: SyntheticConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(cfg).items() if k != "out_dir"}


def generate_synthetic(cfg: SyntheticConfig, progress: bool = True) -> dict[str, Any]:
    """Write ``cfg.out_dir`` (items.parquet, interactions.parquet, synthetic.json) and return the manifest.

    A folder this generator already wrote with the same config and code version is kept as it is (returned
    manifest); one it wrote with another config is replaced; anything else is refused.
    """
    out = Path(cfg.out_dir)
    _check_out_dir(out)
    wanted = {"format_version": _FORMAT_VERSION, "config": _config_dict(cfg)}
    if (out / MANIFEST).is_file():
        old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        if {k: old.get(k) for k in wanted} == wanted:
            logger.info("%s already holds this synthetic dataset; kept", out)
            return old
        logger.info("%s holds another synthetic dataset; replacing it", out)
    world = SyntheticWorld(cfg)
    interactions = 0
    with atomic_path(out, is_dir=True) as tmp:
        with pq.ParquetWriter(tmp / "items.parquet", world.item_table(0, 1).schema) as writer:
            for start in range(0, cfg.num_items, _ITEM_ROWS_PER_GROUP):
                writer.write_table(world.item_table(start, min(cfg.num_items, start + _ITEM_ROWS_PER_GROUP)))
        item_names = pa.array([f"i{i}" for i in range(cfg.num_items)])
        blocks = math.ceil(cfg.num_users / USERS_PER_BLOCK)
        bar = tqdm(total=cfg.num_users, unit="user", desc="synthetic users", disable=not progress)
        writer = None
        try:
            for block in range(blocks):
                table = _interaction_table(world, block, item_names)
                if writer is None:
                    writer = pq.ParquetWriter(tmp / "interactions.parquet", table.schema)
                writer.write_table(table)
                interactions += table.num_rows
                bar.update(min(USERS_PER_BLOCK, cfg.num_users - block * USERS_PER_BLOCK))
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        manifest = {**wanted, "items": cfg.num_items, "users": cfg.num_users, "interactions": interactions,
                    "clusters": cfg.clusters(), "users_per_block": USERS_PER_BLOCK,
                    "load": {"format": "tabular", **({"scenario_item_field": "scenario"} if cfg.num_scenarios else {})},
                    "sha256": {name: sha256_file(tmp / name) for name in ("items.parquet", "interactions.parquet")}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps({"command": COMMAND}) + "\n", encoding="utf-8")
    logger.info("wrote %s: %d items, %d users, %d interactions", out, cfg.num_items, cfg.num_users, interactions)
    return manifest
