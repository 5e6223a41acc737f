"""The evaluate stage's SASRec bar rows: ``evaluate.sasrec_tuned`` and ``evaluate.sasrec_content``.

Each key holds a bar point chosen by ``alignrec sasrec-tune`` (valid targets only): SASRec keys, plus the
content adaptor's knobs for the content row. The rows train here, with the run's SASRec seed
(``embeddings.sasrec_seed``, which ``bench_quality.py --seeds`` sets per seed), so seed i of the bar pairs with
seed i of ours. The content row reads the same text vectors as the embeddings stage (its text encoder, template
and length; the embedding cache makes that free). Their own keys leave ``embeddings.sasrec_*`` alone: those
train the CF half of our fused item vectors, which stays as it was measured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recdata.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["BAR_KEYS", "bar_recommenders", "check_bar_section"]

BAR_KEYS = ("sasrec_tuned", "sasrec_content")


def check_bar_section(section: Mapping[str, Any]) -> None:
    """Fail before any stage runs when a bar point names an unknown key or an invalid value."""
    from alignrec.recommenders.bar import bar_sasrec_config

    for key in BAR_KEYS:
        value = section.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"evaluate.{key} must be a mapping of SASRec keys (the `{key}:` block that "
                              f"`alignrec sasrec-tune` writes), got {value!r}")
        bar_sasrec_config(value)


def bar_recommenders(section: Mapping[str, Any], emb_cfg: Any, split: Any, out_dir: Path, k: int,
                     exclude_history: bool) -> dict[str, Any]:
    """``{row: recommend_fn}`` of the bar points the section names; their training records go to bar.json."""
    from alignrec.recommenders import as_recommend_fn
    from recdata.io import atomic_write_json
    from tokenization.embeddings import text_embeddings

    check_bar_section(section)
    rows, info = {}, {}
    for key in BAR_KEYS:
        params = section.get(key)
        if params is None:
            continue
        text = None
        if key == "sasrec_content":
            vectors = text_embeddings(emb_cfg, split)
            text = (list(vectors.item_ids), vectors.vectors)
        model = _train_cached(key, split, params, emb_cfg, text, out_dir / f"{key}_metrics.jsonl")
        info[key] = {"params": dict(params), "seed": emb_cfg.sasrec_seed, **model.train_info}
        logger.info("%s: valid NDCG@10 %.4f after %d epochs", key, model.train_info["best_valid_ndcg@10"],
                    model.train_info["epochs"])
        rows[key] = as_recommend_fn(model, k=k, exclude_history=exclude_history,
                                    context_fn=model.context_for if text is not None else None)
    if info:
        atomic_write_json(out_dir / "bar.json", json.loads(json.dumps(info, default=float)))
    return rows


def _train_cached(key: str, split: Any, params: Mapping[str, Any], emb_cfg: Any, text: Any, log_file: Path):
    """The bar point trained with the run's SASRec seed, or its cached model (``baseline_cache``): a re-run of the
    evaluate stage for a change of ours does not re-train the bar. The content row's key holds the text vectors'
    digest and its adaptor knobs."""
    import hashlib

    import numpy as np

    from alignrec.pipeline.baseline_cache import baseline_key, cache_root, cached_baseline
    from alignrec.recommenders import KnowledgeSASRec, SASRec
    from alignrec.recommenders.bar import CONTENT_DEFAULTS, bar_sasrec_config, train_bar

    extra: dict[str, Any] = {}
    if text is not None:
        digest = hashlib.sha256(json.dumps(list(text[0])).encode())
        digest.update(np.ascontiguousarray(text[1], dtype=np.float32).tobytes())
        extra = {"content": {k: params.get(k, v) for k, v in CONTENT_DEFAULTS.items()}, "text": digest.hexdigest()}
    cfg = bar_sasrec_config(params, sasrec_seed=emb_cfg.sasrec_seed)
    loader = KnowledgeSASRec.from_pretrained if text is not None else SASRec.from_pretrained
    return cached_baseline(f"bar-{key}", baseline_key(split, cfg, extra),
                           cache_root(emb_cfg),
                           lambda: train_bar(split, params, seed=emb_cfg.sasrec_seed, text=text, log_file=log_file),
                           loader)
