"""The ``cache`` stage: offline top-K of every user, published to a SQLite store and checked by serving.

Reads: the split, the served model and the ``cache`` section (``CacheBuildConfig``); by default it decodes with the
evaluate section's ``popularity_penalty``, ``item_head_decode_weight``, ``item_vector_prior_weight`` and
``decode_normaliser`` (serve what was evaluated; a key the cache section sets itself wins); the content prior's
vectors are the embeddings stage's (not an upstream of its key: they reach it through the tokenizer and train keys). Writes: ``build/`` and ``store/``.
The check after publishing (``verify_store``) compares the store's user count with the split's and looks up a
seeded sample of users (1,000), not every user: one lookup per user is O(users) work after every build.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    build_section,
    cache_classes,
    served_model_dir,
)

VERIFY_SAMPLE = 1000  # users looked up after publishing (seeded): enough to catch a broken store, O(1) in users


# The evaluate section's decoding keys (with their defaults) the cache decodes with unless its own section sets them.
EVALUATED_DECODING = {"popularity_penalty": 0.0, "item_head_decode_weight": None, "item_vector_prior_weight": 0.0,
                      "decode_normaliser": "auto"}


def _evaluated_decoding(section: dict[str, Any], run_cfg: Any) -> dict[str, float | str]:
    """The evaluate section's decoding keys the cache inherits: those the cache section leaves unset, at a value
    other than the default (so a run that sets none keeps its stage key); numbers as floats, names as given."""
    evaluate = run_cfg.sections.get("evaluate", {})
    return {key: evaluate[key] if isinstance(default, str) else float(evaluate[key])
            for key, default in EVALUATED_DECODING.items()
            if key not in section and evaluate.get(key, default) != default}


def run_cache(ctx: StageContext) -> dict[str, Any]:
    from inference.cache.cli import CachePublishConfig, run_build, run_publish
    from recdata import SplitDataset

    split_dir = str(ctx.upstream("data") / "split")
    injected = {"split_dir": split_dir, "out_dir": str(ctx.out_dir / "build"),
                "model_dir": str(served_model_dir(ctx)), "item_vectors": str(ctx.upstream("embeddings"))}
    injected.update(_evaluated_decoding(ctx.config, ctx.run_config))  # serve what was evaluated
    (cfg,) = build_section(cache_classes(), ctx.config, injected, "cache")
    started = time.time()
    manifest = run_build(cfg)
    build_seconds = time.time() - started
    if manifest is None:
        raise RuntimeError("cache build finished without a manifest (some shard is missing)")
    store = run_publish(CachePublishConfig(cache_dir=cfg.out_dir, store_dir=str(ctx.out_dir / "store"),
                                           split_dir=split_dir))
    users = list(SplitDataset.load(split_dir).serving_histories())
    check = verify_store(ctx.out_dir / "store", users)
    return {"users": len(users), "k": cfg.k, "build_seconds": build_seconds,
            "users_per_second": len(users) / build_seconds if build_seconds else None, **check, "store": str(store)}


def verify_store(store_dir: str | Path, users: Sequence[str], sample: int = VERIFY_SAMPLE, seed: int = 0) -> dict:
    """The published store serves every user: its user count is the split's, and a seeded sample of ``sample``
    users (all when fewer) is answered from the cache, one lookup each (``lookup_mean_us``), never the fallback.

    Raises ``RuntimeError`` naming a missing user; returns ``{"verified_users", "lookup_mean_us"}``.
    """
    import numpy as np

    from inference.cache import CacheReader

    rng = np.random.default_rng(seed)
    picked = [users[i] for i in np.sort(rng.choice(len(users), size=min(sample, len(users)), replace=False))]
    with CacheReader(store_dir) as reader:
        stored = int(reader.metadata["num_users"])
        if stored != len(users):
            raise RuntimeError(f"the published cache {store_dir} holds {stored} users, the split serves {len(users)}")
        lookups = time.perf_counter()
        results = [reader.get(u) for u in picked]
        lookup_seconds = time.perf_counter() - lookups
    missing = [r.user_id for r in results if r.fallback]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(picked)} sampled user(s) missing from the published cache "
                           f"{store_dir}, e.g. {missing[0]!r}")
    return {"verified_users": len(picked), "lookup_mean_us": 1e6 * lookup_seconds / max(1, len(picked))}


def _cache_key(section: dict[str, Any], run_cfg: Any) -> dict[str, Any]:
    """The evaluate section's decoding keys the cache inherits (none it sets itself; none at their defaults)."""
    return _evaluated_decoding(section, run_cfg)


# version 2: the store holds binary rows (catalogue indices + fp16 scores); a version-1 store is refused by serving,
# so an old run republishes instead of skipping the stage
STAGE = Stage("cache", run_cache, ("data", "train", "preference"), extra_key=_cache_key, version=2)
