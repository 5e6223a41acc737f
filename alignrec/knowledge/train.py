"""Train "SASRec + knowledge" jointly with its adaptor, prestore the augmented vectors, evaluate beside SASRec.

Both rows use the same split, SASRec config, full-catalogue ranking and ``exclude_history=True``; the test
targets are read only by the final evaluation (early stopping reads the valid targets).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.knowledge.config import KnowledgeTrainConfig
from alignrec.knowledge.encode import load_knowledge_vectors, load_user_history_items
from alignrec.recommenders import SASRec, as_recommend_fn, train_sasrec
from alignrec.recommenders.knowledge_sasrec import KnowledgeSASRec
from recdata.split import SplitDataset

logger = logging.getLogger(__name__)

__all__ = ["build_knowledge_sasrec", "knowledge_sasrec_from_vectors", "train_knowledge_recommender"]


def knowledge_sasrec_from_vectors(vectors_dir: str | Path, item_ids: Sequence[str], sasrec_cfg: Any,
                                  kinds: Sequence[str] = ("item",), **adaptor: Any) -> KnowledgeSASRec:
    """A SASRec + knowledge over ``alignrec knowledge encode`` output, reading only ``kinds`` of it."""
    items = load_knowledge_vectors(vectors_dir, "item") if "item" in kinds else None
    users = load_knowledge_vectors(vectors_dir, "user") if "user" in kinds else None
    history = load_user_history_items(vectors_dir) if users is not None else {}
    dim = (items or users)[1].shape[1]
    off = ([], np.zeros((0, dim), np.float32))
    return KnowledgeSASRec(item_ids, sasrec_cfg, items or off, users or off, user_history_items=history, **adaptor)


def build_knowledge_sasrec(cfg: KnowledgeTrainConfig, split: SplitDataset) -> KnowledgeSASRec:
    return knowledge_sasrec_from_vectors(cfg.vectors_dir, split.dataset.item_ids(), cfg.sasrec_config(),
                                         cfg.knowledge_kind_list(), experts_shared=cfg.experts_shared,
                                         experts_per_kind=cfg.experts_per_kind, adaptor_hidden=cfg.adaptor_hidden,
                                         adaptor_dropout=cfg.adaptor_dropout)


def _evaluate(model: SASRec, split: SplitDataset, ks: list[int], part: str) -> dict[str, Any]:
    from recdata.evaluation import evaluate_recommender
    from recdata.popularity import train_popularity

    fn = as_recommend_fn(model, k=max(ks), exclude_history=True, context_fn=model.context_for)
    return evaluate_recommender(fn, split.eval_examples(part), ks, split.dataset.item_ids(), train_popularity(split),
                                show_progress=False)


def train_knowledge_recommender(cfg: KnowledgeTrainConfig, split: SplitDataset, out_dir: Path) -> dict[str, Any]:
    """Train (baseline +) knowledge model; write ``model/`` (+ ``model/augmented/``), ``metrics.json`` / ``metrics.md``; return reports."""
    from recdata.evaluation import write_report

    ks = cfg.k_list()
    sasrec_cfg = cfg.sasrec_config()
    reports: dict[str, Any] = {}
    info: dict[str, Any] = {}
    if cfg.baseline:
        base = train_sasrec(split, sasrec_cfg, log_file=out_dir / "sasrec_metrics.jsonl")
        reports["sasrec"] = _evaluate(base, split, ks, "test")
        info["sasrec"] = base.train_info
    coverage: dict[str, Any] = {}
    if cfg.knowledge_model:
        model = build_knowledge_sasrec(cfg, split)
        train_sasrec(split, sasrec_cfg, log_file=out_dir / "knowledge_sasrec_metrics.jsonl", model=model)
        info["sasrec+knowledge"] = model.train_info
        model.prestore()
        model.save_pretrained(out_dir / "model")  # weights + model/augmented/ (prestored item / user vectors)
        served = KnowledgeSASRec.from_pretrained(out_dir / "model")  # the row is scored from the prestored files
        reports["sasrec+knowledge"] = _evaluate(served, split, ks, "test")
        coverage = {"items_with_knowledge": int(model.item_has.sum()), "items": len(model.item_ids),
                    "users_with_knowledge": int(model.user_has.sum())}
    write_report(reports, out_dir, extra={"config": dataclasses.asdict(cfg), "train_info": info,
                                          "knowledge_coverage": coverage},
                 title="SASRec vs SASRec + knowledge (test, full ranking, history excluded)")
    return {"reports": reports, "train_info": info, "coverage": coverage}
