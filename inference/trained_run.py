"""A finished training run as a recommender: the weights plus everything its manifest says about decoding.

A run is decoded the way it was trained: prompts are written in its tasks' ``prompt_format`` and carry the user
knowledge its training prompts carried, and a model trained with the flat item head ranks with it. Every consumer (evaluation, the cache, ``alignrec
recommend``, the pipeline's rows, the benchmark scripts) loads a run here, so a new decoding property of a run
is read in one place and no consumer can serve a model differently from how ranking validation chose it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

OVERRIDE_KEY = "item_head_decode_weight"  # the evaluate / cache build / recommend key that overrides the run's weight


def check_item_head_override(model_dir: str | os.PathLike, weight: float | None) -> float | None:
    """An evaluation-time override of the run's item-head decoding weight (``OVERRIDE_KEY``), checked before the
    model loads: None keeps the run's own; a value must be >= 0 and needs a run trained with the flat item head
    (``train.item_head_weight`` > 0), else ``ConfigError`` (one line). Returns what ``TrainedRun.recommender``
    takes as ``item_head_weight``."""
    if weight is None:
        return None
    from recdata.errors import ConfigError
    from trainer import has_item_head

    if weight < 0:
        raise ConfigError(f"{OVERRIDE_KEY} must be >= 0, got {weight:g}")
    if not has_item_head(model_dir):
        raise ConfigError(f"{OVERRIDE_KEY} {weight:g}: {model_dir} was trained without an item head "
                          "(train.item_head_weight 0), so there is no head to weigh; drop the key")
    return float(weight)


def run_normaliser(model_dir: str | os.PathLike, mode: str) -> str:
    """``decode_normaliser`` ``mode`` resolved for the run's catalogue without loading the run (a cache's identity is
    computed before, or without, the model: the Ray driver never loads it). The size is read from the manifest of
    the run's item tokenizer copy (``ItemTokenizer.save_pretrained`` writes ``num_items`` there), only for ``auto``."""
    from inference.decode_normaliser import resolve_normaliser

    if mode != "auto":
        return resolve_normaliser(mode, 0)
    from recdata.errors import InputFileError
    from trainer.export import ITEM_TOKENIZER_DIR

    path = Path(model_dir) / ITEM_TOKENIZER_DIR / "manifest.json"
    try:
        num_items = int(json.loads(path.read_text(encoding="utf-8"))["num_items"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(f"{path}: cannot read the catalogue size ({exc}); is {model_dir} a finished run folder?"
                             ) from None
    return resolve_normaliser(mode, num_items)


@dataclass
class TrainedRun:
    """Model (eval mode), HF tokenizer, ItemTokenizer and the run's decoding properties."""

    model: Any
    hf_tokenizer: Any
    item_tokenizer: Any
    user_knowledge: dict[str, str] | None
    item_head_weight: float
    prompt_format: str = "chat"  # sft_tasks TaskConfig.prompt_format, from the run's manifest

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None) -> TrainedRun:
        from trainer import load_for_inference, read_item_head_weight, read_prompt_format, read_user_knowledge

        model, hf_tokenizer, item_tokenizer = load_for_inference(model_dir, device=device, dtype=dtype)
        return cls(model, hf_tokenizer, item_tokenizer, read_user_knowledge(model_dir),
                   read_item_head_weight(model_dir), read_prompt_format(model_dir))

    def recommender(self, k: int, num_beams: int, exclude_history: bool = True, batch_size: int = 8,
                    item_head_weight: float | None = None, **kwargs: Any) -> Any:
        """``inference.llm_recommender`` over this run; ``kwargs`` go there (scenarios, popularity penalty, the content
        prior: ``inference.item_prior.load_item_prior``'s dict).

        ``item_head_weight`` None = the run's own (0 for a run without an item head); a value overrides it, e.g.
        for a sweep chosen on valid users.
        """
        from inference.recommender import llm_recommender

        weight = self.item_head_weight if item_head_weight is None else item_head_weight
        return llm_recommender(self.model, self.hf_tokenizer, self.item_tokenizer, k, num_beams, exclude_history,
                               batch_size, user_knowledge=self.user_knowledge, item_head_weight=weight,
                               prompt_format=self.prompt_format, **kwargs)
