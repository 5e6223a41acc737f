"""Ranking-based validation: constrained beam search on a fixed subset of valid users at every evaluation.

A teacher-forced loss on a few rows says little about the ranking a recommender is judged on; this callback
adds ``eval_ranking_recall@10`` and ``eval_ranking_ndcg@10`` to the evaluation metrics, so the HF machinery
does the rest: ``metric_for_best_model: eval_ranking_ndcg@10`` + ``load_best_model_at_end`` keeps the best
checkpoint and ``EarlyStoppingCallback`` (``early_stopping_patience``) stops. The rows come from the task
DatasetDict's ``validation`` split, which holds valid targets only: the test part is never read. One definition
for SFT, DPO and any other HF-Trainer stage.

It decodes with ``inference.recommend``, so it belongs to ``inference`` (above ``trainer``): the trainer never
imports it. The entry scripts (``trainer/sft.py``, ``trainer/dpo.py``) pass ``ranking_validation_callback`` to
``run_sft`` / ``run_dpo`` as their ``ranking_validation`` factory. Moved from ``trainer.ranking_validation``
(kept one release as a deprecated alias).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import datasets
import numpy as np
from transformers import TrainerCallback

from recdata.errors import UserError
from recdata.metrics import ndcg_at_k, recall_at_k

logger = logging.getLogger(__name__)

__all__ = ["METRIC_PREFIX", "RANKING_COLUMNS", "RankingValidationCallback", "ranking_subset",
           "ranking_validation_callback"]

RANKING_COLUMNS = ("prompt", "history", "target")
METRIC_PREFIX = "eval_ranking_"


def ranking_subset(validation: datasets.Dataset, users: int, seed: int) -> datasets.Dataset:
    """A fixed, seeded subset of ``users`` validation rows (all when fewer), in their original order."""
    missing = [c for c in RANKING_COLUMNS if c not in validation.column_names]
    if missing:
        raise UserError(f"the validation split lacks column(s) {missing} needed by ranking validation; rebuild the "
                        "tasks with this version (`alignrec tasks build`) or set ranking_eval_users: 0")
    if users >= len(validation):
        return validation
    rows = np.sort(np.random.default_rng(seed).choice(len(validation), size=users, replace=False))
    return validation.select(rows.tolist())


class RankingValidationCallback(TrainerCallback):
    """Adds ranking metrics to every evaluation (see module docstring). Call ``bind(trainer)`` once."""

    def __init__(self, examples: datasets.Dataset, item_tokenizer: Any, hf_tokenizer: Any, k: int = 10,
                 num_beams: int = 20, exclude_history: bool = True, batch_size: int = 32,
                 item_head_weight: float = 0.0) -> None:
        self.prompts = list(examples["prompt"])
        self.histories = [list(h) for h in examples["history"]]
        self.targets = list(examples["target"])
        self.item_tokenizer, self.hf_tokenizer = item_tokenizer, hf_tokenizer
        self.k, self.num_beams, self.exclude_history, self.batch_size = k, num_beams, exclude_history, batch_size
        self.item_head_weight = item_head_weight  # decode as the run will be decoded (a model with an item head)
        self.trainer = None
        self._last: tuple[int, dict[str, float]] | None = None  # (step, metrics): one search per evaluation step

    def bind(self, trainer: Any) -> RankingValidationCallback:
        self.trainer = trainer
        return self

    def compute(self, model: Any) -> dict[str, float]:
        from inference.recommender import recommend

        started = time.perf_counter()
        recs = recommend(model, self.hf_tokenizer, self.item_tokenizer, self.prompts, self.k, self.num_beams,
                         exclude=self.histories if self.exclude_history else None, batch_size=self.batch_size,
                         item_head_weight=self.item_head_weight)
        ranked = [[item for item, _ in rec] for rec in recs]
        return {
            f"{METRIC_PREFIX}recall@{self.k}": float(np.mean([recall_at_k(r, t, self.k) for r, t in zip(ranked, self.targets, strict=True)])),
            f"{METRIC_PREFIX}ndcg@{self.k}": float(np.mean([ndcg_at_k(r, t, self.k) for r, t in zip(ranked, self.targets, strict=True)])),
            f"{METRIC_PREFIX}seconds": round(time.perf_counter() - started, 2),
        }

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if metrics is None or model is None:
            return
        if self._last is None or self._last[0] != state.global_step:  # several eval sets: search once per step
            values = self.compute(model)
            self._last = (state.global_step, values)
            logger.info("step %d ranking validation (%d users): %s", state.global_step, len(self.prompts), values)
            if self.trainer is not None:
                self.trainer.log(dict(values))  # -> metrics.jsonl, TensorBoard
        metrics.update(self._last[1])  # seen by best-checkpoint selection and early stopping after us


def ranking_validation_callback(validation: datasets.Dataset, users: int, seed: int, item_tokenizer: Any,
                                hf_tokenizer: Any, *, num_beams: int = 20, exclude_history: bool = True,
                                item_head_weight: float = 0.0) -> RankingValidationCallback:
    """The ``ranking_validation`` factory of ``trainer.train.run_sft`` / ``trainer.dpo_run.run_dpo``: a callback
    over a seeded subset of ``users`` validation rows (``ranking_subset``)."""
    return RankingValidationCallback(ranking_subset(validation, users, seed), item_tokenizer, hf_tokenizer,
                                     num_beams=num_beams, exclude_history=exclude_history,
                                     item_head_weight=item_head_weight)
