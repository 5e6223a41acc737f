"""The one interface of dense recommenders (SASRec, LEARN towers, knowledge SASRec, multi-scenario backbone).

A dense recommender trains on ``split.train_sequences()`` only, scores the whole catalogue from a history and
exposes an item table. That gives the three uses every one of them has, written once here:

- ``recommend`` -> an evaluation row / cache (``as_recommend_fn``), with the same ``exclude_history`` rule;
- ``item_embeddings`` -> tokenizer input (``embeddings.source``);
- ``full_ranking_metrics`` + ``train_with_early_stopping`` -> model selection on the valid targets only, with
  the metrics of ``recdata.metrics`` (the evaluation's: same history exclusion, same tie rule).

Subclasses implement ``score`` (and ``item_embeddings``); ``context`` carries per-row side inputs that a
model may need (``user_ids`` for user knowledge, ``scenarios`` for multi-scenario), ignored by others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recdata.io import atomic_path
from recdata.metrics import mean_metrics, target_ranks, top_k_positions

logger = logging.getLogger(__name__)

RecommendList = list[list[tuple[str, float]]]


class DenseRecommender(nn.Module):
    """Catalogue ``item_ids`` (index ``i`` <-> ``item_ids[i]``), full-catalogue ``score`` and ``recommend``."""

    item_ids: list[str]

    def __init__(self, item_ids: Sequence[str]) -> None:
        super().__init__()
        self.item_ids = [str(i) for i in item_ids]
        self.catalogue_index = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self.train_info: dict[str, Any] = {}  # epochs, best valid NDCG@10, seconds: filled by training

    def score(self, histories: Sequence[Sequence[str]], **context: Any) -> torch.Tensor:
        """Scores ``[len(histories), len(item_ids)]`` (higher = better), on CPU, float32."""
        raise NotImplementedError

    def item_embeddings(self) -> np.ndarray:
        """``[len(item_ids), dim]`` float32 in ``item_ids`` order: the vectors a tokenizer can read."""
        raise NotImplementedError

    def scoring_session(self) -> contextlib.AbstractContextManager:
        """Context around several ``score`` calls with fixed weights (a validation pass): a model may compute what
        they share (e.g. an item table built by a network) once inside it. Default: nothing shared."""
        return contextlib.nullcontext()

    def catalogue_positions(self, items: Sequence[str]) -> list[int]:
        """0-based catalogue positions of ``items``; an unknown id is a ValueError naming it."""
        try:
            return [self.catalogue_index[i] for i in items]
        except KeyError as exc:
            raise ValueError(f"item {exc.args[0]!r} is not in the catalogue of this "
                             f"{type(self).__name__} ({len(self.item_ids)} items)") from None

    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence[str]], k: int = 10, exclude_history: bool = True,
                  allowed: torch.Tensor | None = None, **context: Any) -> RecommendList:
        """Top-``k`` (item_id, score) per history, best first, equal scores in catalogue order (the tie rule of
        ``recdata.metrics``); ``exclude_history`` never returns a history item.

        ``allowed`` (bool ``[len(histories), len(item_ids)]``): the items each row may return (e.g. a scenario's
        catalogue); the others are never returned.
        """
        scores = self.score(histories, **context)
        if allowed is not None:
            if tuple(allowed.shape) != tuple(scores.shape):
                raise ValueError(f"allowed has shape {tuple(allowed.shape)}, scores {tuple(scores.shape)}")
            scores = scores.masked_fill(~allowed, -math.inf)
        if exclude_history:
            for row, history in enumerate(histories):
                scores[row, self.catalogue_positions(history)] = -math.inf
        values, positions = top_k_positions(scores, k)  # [n, k]
        return [
            [(self.item_ids[int(i)], float(s)) for s, i in zip(vals, idx, strict=True) if s > -math.inf]
            for vals, idx in zip(values, positions, strict=True)
        ]


def as_recommend_fn(model: DenseRecommender, k: int, exclude_history: bool = True,
                    context_fn: Callable[[Sequence[str]], dict[str, Any]] | None = None,
                    scenario_items: Mapping[str, Sequence[str]] | None = None):
    """``recommend_fn(user_ids, histories)`` for ``inference.evaluate_recommender`` and the cache build.

    With ``scenario_items`` (``{scenario: item ids}``) the function also takes ``scenarios=[s, ...]``: row ``i``
    then returns items of ``scenarios[i]`` only, and the names reach ``score`` as ``context["scenarios"]``
    (a scenario-aware model reads them in ``final_states``; others ignore them).
    """
    masks = {}
    for name, items in (scenario_items or {}).items():
        mask = torch.zeros(len(model.item_ids), dtype=torch.bool)
        mask[[model.catalogue_index[i] for i in items if i in model.catalogue_index]] = True
        masks[name] = mask

    def recommend_fn(user_ids: Sequence[str], histories: Sequence[Sequence[str]],
                     scenarios: Sequence[str] | None = None) -> RecommendList:
        context = context_fn(user_ids) if context_fn else {}
        if scenarios is None:
            return model.recommend(histories, k=k, exclude_history=exclude_history, **context)
        unknown = sorted(set(scenarios) - set(masks))
        if unknown:
            raise ValueError(f"scenario(s) {unknown} unknown to this recommender; it serves {sorted(masks)}")
        allowed = torch.stack([masks[s] for s in scenarios]) if scenarios else None
        return model.recommend(histories, k=k, exclude_history=exclude_history, allowed=allowed,
                               scenarios=list(scenarios), **context)

    return recommend_fn


@torch.no_grad()
def full_ranking_metrics(model: DenseRecommender, histories: Sequence[Sequence[str]], targets: Sequence[str],
                         k: int = 10, exclude_history: bool = True, chunk_size: int = 256,
                         **context: Any) -> dict[str, float]:
    """Recall@k / NDCG@k of each target among all catalogue items, as ``recdata.metrics`` defines them.

    The same numbers as ``inference.evaluate_recommender`` on ``as_recommend_fn(model, k, exclude_history)`` for
    the same users: ``exclude_history`` leaves history items out (a target repeated from the history is a miss),
    equal scores rank in catalogue order. Scores ``chunk_size`` histories at a time and keeps only their ranks,
    so memory stays ``[chunk_size, items]`` on any catalogue. ``context`` values hold one entry per row.
    """
    if len(histories) != len(targets):
        raise ValueError(f"full_ranking_metrics: {len(histories)} histories but {len(targets)} targets")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    ranks: list[int | None] = []
    with model.scoring_session():  # the weights are fixed for every chunk: shared work is done once
        for start in range(0, len(histories), chunk_size):
            rows = slice(start, start + chunk_size)
            chunk = histories[rows]
            scores = model.score(chunk, **{key: value[rows] for key, value in context.items()})  # [chunk, items]
            excluded = [model.catalogue_positions(history) for history in chunk] if exclude_history else None
            ranks.extend(target_ranks(scores, model.catalogue_positions(targets[rows]), excluded))
    return mean_metrics(ranks, k)


class EpochCheckpoint:
    """One resumable file per training run: weights, optimizer, torch RNG and the early-stopping loop state.

    Written atomically after every epoch (a crash leaves the previous epoch's file), so a rerun with the same
    ``path`` continues where it stopped and ends with the same weights as an uninterrupted run.
    """

    def __init__(self, path: str | os.PathLike, optimizer: torch.optim.Optimizer | None = None,
                 identity: str = "") -> None:
        self.path = Path(path)
        self.optimizer = optimizer
        self.identity = identity  # e.g. a hash of config + data: a checkpoint of another run is refused

    def save(self, model: nn.Module, loop: dict[str, Any]) -> None:
        state = {"model": model.state_dict(), "loop": loop, "rng": torch.get_rng_state(), "identity": self.identity,
                 "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def load(self, model: nn.Module) -> dict[str, Any] | None:
        """Restore model / optimizer / RNG from the file and return the loop state; None when there is none."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("identity") != self.identity:
            from recdata.errors import UserError

            raise UserError(f"checkpoint {self.path} belongs to a run with another config or data; delete it "
                            "to start over, or use a new output folder")
        model.load_state_dict(state["model"])
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        return state["loop"]


def train_with_early_stopping(
    model: DenseRecommender,
    run_epoch: Callable[[int], float],
    valid_histories: Sequence[Sequence[str]],
    valid_targets: Sequence[str],
    *,
    epochs: int,
    patience: int,
    eval_every: int = 1,
    log_file: str | os.PathLike | None = None,
    desc: str = "epochs",
    valid_context: dict[str, Any] | None = None,
    checkpoint: EpochCheckpoint | None = None,
) -> DenseRecommender:
    """Run ``run_epoch(epoch) -> mean loss``; keep the weights with the best valid NDCG@10 (valid targets only).

    ``patience`` 0 trains every epoch and keeps the last weights. ``model.train_info`` gets the epochs run, the
    best valid NDCG@10 and all metrics of that evaluation (``best_valid``: those of the weights returned; {} when
    none ran), the seconds and torch's thread count (a run repeats bit for bit only at the same count).
    ``checkpoint``: saved after every epoch and, when present at the start, resumed from (``run_epoch`` must then
    not depend on state outside the model, the checkpoint's optimizer and torch's RNG, e.g. seed its shuffling from
    ``epoch``).
    """
    best, best_state, since_best, epoch, start, offset = -1.0, None, 0, 0, 1, 0.0
    best_metrics: dict[str, float] = {}
    if checkpoint is not None and (loop := checkpoint.load(model)) is not None:
        best, best_state, since_best = loop["best"], loop["best_state"], loop["since_best"]
        best_metrics = loop.get("best_metrics", {})
        epoch, start, offset = loop["epoch"], loop["epoch"] + 1, loop["seconds"]
        logger.info("%s: resumed after epoch %d from %s", desc, epoch, checkpoint.path)
        if patience and since_best >= patience:  # the saved run had already stopped early
            start = epochs + 1
    started = time.perf_counter() - offset
    bar = tqdm(range(start, epochs + 1), desc=desc, initial=min(start, epochs + 1) - 1, total=epochs)
    for epoch in bar:
        model.train()
        record: dict[str, Any] = {"epoch": epoch, "loss": run_epoch(epoch),
                                  "seconds": round(time.perf_counter() - started, 2)}
        if patience and valid_histories and epoch % eval_every == 0:
            model.eval()
            metrics = full_ranking_metrics(model, valid_histories, valid_targets, **(valid_context or {}))
            record.update({f"valid_{k}": v for k, v in metrics.items()})
            if record["valid_ndcg@10"] > best:
                best, since_best, best_metrics = record["valid_ndcg@10"], 0, metrics
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if log_file:
            with open(log_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if checkpoint is not None:
            checkpoint.save(model, {"epoch": epoch, "best": best, "best_state": best_state, "since_best": since_best,
                                    "best_metrics": best_metrics, "seconds": time.perf_counter() - started})
        if patience and since_best >= patience:
            logger.info("%s: early stop at epoch %d (best valid NDCG@10 %.4f)", desc, epoch, best)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    # the thread count is part of the result: another count sums floats in another order, another trajectory
    model.train_info = {"epochs": epoch, "best_valid_ndcg@10": best, "seconds": time.perf_counter() - started,
                        "torch_threads": torch.get_num_threads(), "best_valid": best_metrics}
    return model.eval()
