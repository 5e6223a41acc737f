"""The SASRec bar: a tuned SASRec, and a SASRec that reads the same item text our tokenizer reads.

A bar point is a flat dict of ``SASRecConfig`` keys (``sasrec_dim``, ``sasrec_dropout``, ...) plus, for the
content row, the ``content_*`` knobs of its text adaptor. The content row is the one SASRec extension that
reads side vectors, ``KnowledgeSASRec``, given the text vectors as item knowledge and no user knowledge: each
item's input and output embedding is its ID embedding plus a learned projection of its text vector.
``alignrec sasrec-tune`` chooses both points on the valid targets; the pipeline's evaluate stage trains them per
seed (``evaluate.sasrec_tuned`` / ``evaluate.sasrec_content``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alignrec.recommenders.knowledge_sasrec import KnowledgeSASRec
from alignrec.recommenders.sasrec import SASRec, seed_everything, train_sasrec
from alignrec.recommenders.sasrec_config import SASRecConfig
from recdata.errors import ConfigError
from recdata.split import SplitDataset

__all__ = ["CONTENT_DEFAULTS", "CONTENT_SPACE", "bar_sasrec_config", "content_sasrec", "train_bar"]

# The content row's own knobs (the adaptor between the text vectors and the ID embeddings), searched from here.
CONTENT_DEFAULTS: dict[str, Any] = {"content_adaptor_hidden": 128, "content_adaptor_dropout": 0.1,
                                    "content_experts": 2}
CONTENT_SPACE: dict[str, list[Any]] = {"content_adaptor_hidden": [64, 128, 256],
                                       "content_adaptor_dropout": [0.1, 0.3],
                                       "content_experts": [1, 2]}


def bar_sasrec_config(params: Mapping[str, Any], **overrides: Any) -> SASRecConfig:
    """The ``SASRecConfig`` of a bar point (its ``content_*`` keys left out); a key SASRec lacks is a ConfigError."""
    fields = {f.name for f in dataclasses.fields(SASRecConfig)}
    unknown = sorted(set(params) - fields - set(CONTENT_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown SASRec bar key(s) {unknown}; valid: {sorted(fields | set(CONTENT_DEFAULTS))}")
    try:
        return SASRecConfig(**{k: v for k, v in params.items() if k in fields}, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"SASRec bar point {dict(params)}: {exc}") from None


def content_sasrec(item_ids: Sequence[str], cfg: SASRecConfig, text: tuple[Sequence[str], np.ndarray],
                   params: Mapping[str, Any] | None = None) -> KnowledgeSASRec:
    """A SASRec whose items add an adaptor-projected text vector (``text``: ``(ids, [n, K] vectors)``)."""
    knobs = {**CONTENT_DEFAULTS, **{k: v for k, v in (params or {}).items() if k in CONTENT_DEFAULTS}}
    vectors = np.asarray(text[1], dtype=np.float32)
    return KnowledgeSASRec(item_ids, cfg, (list(text[0]), vectors), ([], np.zeros((0, vectors.shape[1]), np.float32)),
                           user_history_items={}, experts_shared=int(knobs["content_experts"]),
                           experts_per_kind=int(knobs["content_experts"]),
                           adaptor_hidden=int(knobs["content_adaptor_hidden"]),
                           adaptor_dropout=float(knobs["content_adaptor_dropout"]))


def train_bar(split: SplitDataset, params: Mapping[str, Any], *, seed: int | None = None,
              text: tuple[Sequence[str], np.ndarray] | None = None,
              log_file: str | os.PathLike | None = None) -> SASRec:
    """Train one bar point on ``split`` (valid-only early stopping); ``text`` given = the content row."""
    overrides = {"sasrec_seed": seed} if seed is not None else {}
    cfg = bar_sasrec_config(params, **overrides)
    model = None
    if text is not None:  # built here, before train_sasrec seeds: seed first, or its init follows the global RNG
        seed_everything(cfg.sasrec_seed)
        model = content_sasrec(split.dataset.item_ids(), cfg, text, params)
    return train_sasrec(split, cfg, log_file=log_file, model=model)
