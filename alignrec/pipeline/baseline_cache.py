"""Trained baseline SASRecs of the evaluate stage, cached by what determines them.

The evaluate stage re-runs whenever our model changes (a new schedule, a decoding weight), but the SASRec rows it
trains itself (the BCE row, the tuned bar, the content bar) depend only on the split, their hyper-parameters and
seed, and for the content row the text vectors. On a 27k-item catalogue they cost ~30 min of 2 cores per run, so
re-training them for every change of ours is pure waste. They live in the embedding cache beside the CF SASRec and
LEARN (``EmbeddingCache``: atomic entries, checksums, the full key recorded), the trained model in the entry's
``model/`` folder; a hit loads it and its training record. ``embeddings.use_cache: false`` trains afresh.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from alignrec.recommenders.sasrec import SASRec
from alignrec.recommenders.sasrec_config import SASRecConfig
from alignrec.recommenders.valid_sample import model_key
from recdata.item_vectors import ItemEmbeddings
from recdata.split import SplitDataset

logger = logging.getLogger(__name__)

__all__ = ["baseline_key", "cache_root", "cached_baseline"]

MODEL_DIR = "model"


def baseline_key(split: SplitDataset, cfg: SASRecConfig, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The key of a trained SASRec: the split (labels included), its config (device aside) and ``extra`` (what
    else it reads, e.g. the content row's adaptor knobs and text-vector key)."""
    return {"data": split.dataset.fingerprint(), "max_history": split.max_history,
            "sasrec": model_key(cfg, "sasrec_device"),
            "extra": dict(extra or {})}


def cache_root(emb_cfg: Any) -> Path | None:
    """Where the embeddings section keeps its cache, or None when it turns the cache off (``use_cache: false``)."""
    return emb_cfg.resolved_cache_dir() if emb_cfg.use_cache else None


def cached_baseline(kind: str, key: Mapping[str, Any], cache_root: str | Path | None,
                    train: Callable[[], SASRec], load: Callable[[Path], SASRec]) -> SASRec:
    """The model of ``key`` from the cache (``load`` of its folder, ``train_info`` restored with ``cache_hit``),
    else ``train()``'s, written to the cache. ``cache_root`` None: no cache, always ``train()``."""
    from tokenization.embeddings.cache import EmbeddingCache

    if cache_root is None:
        return train()
    cache, parts = EmbeddingCache(cache_root), dict(key)
    entry = cache.path(kind, parts)
    hit = cache.get(kind, parts)
    if hit is not None and (entry / MODEL_DIR).is_dir():
        model = load(entry / MODEL_DIR)
        model.train_info = {**hit.meta.get("train_info", {}), "cache_hit": str(entry)}
        logger.info("%s: trained model reused from %s", kind, entry)
        return model
    model = train()
    info = json.loads(json.dumps({k: v for k, v in model.train_info.items() if k != "cache_hit"}, default=float))
    entry = cache.put(kind, parts, ItemEmbeddings(list(model.item_ids), model.item_embeddings(),
                                                  {"kind": kind, "train_info": info}))
    model.save_pretrained(entry / MODEL_DIR)
    return model
