"""Count what a batch supervises: loss tokens and next-item targets (items whose every code token carries loss).

A training row teaches next-item prediction once per item whose whole code is in the loss: the seqrec completion
(one item), every history item too with ``completion_only_loss: false``, every item after the first in a
``seqrec_full`` row. Throughput in those targets per second, not tokens per second, is what a recommender's
training budget buys (``scripts/bench_train.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CodeLevels", "count_item_targets", "count_loss_tokens"]

IGNORE_INDEX = -100


@dataclass
class CodeLevels:
    """The code level of every vocabulary token (-1: not a code token) for a catalogue's ``[N, L]`` token ids."""

    level_of: torch.Tensor  # [vocab] int64
    num_levels: int

    @classmethod
    def from_token_ids(cls, token_ids: np.ndarray, vocab_size: int) -> CodeLevels:
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise ValueError(f"token_ids must be [items, levels], got shape {ids.shape}")
        level_of = torch.full((vocab_size,), -1, dtype=torch.int64)
        for level in range(ids.shape[1]):
            column = torch.from_numpy(np.unique(ids[:, level]))
            if bool((level_of[column] >= 0).any()):
                raise ValueError(f"a token id of code level {level} is also used at another level")
            level_of[column] = level
        return cls(level_of, ids.shape[1])


def count_loss_tokens(labels: torch.Tensor) -> int:
    """Tokens a causal LM loss counts in ``labels [B, T]`` (``labels[:, 0]`` is never predicted)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def count_item_targets(labels: torch.Tensor, levels: CodeLevels) -> int:
    """Items supervised in ``labels [B, T]``: runs of level-0, 1, ..., L-1 code tokens at consecutive positions,
    all carrying loss (a position 0 token is never predicted, so it starts none)."""
    supervised = labels[:, 1:]  # [B, T-1]
    width = supervised.shape[1] - levels.num_levels + 1
    if width <= 0:
        return 0
    level_of = levels.level_of.to(labels.device)
    level = torch.where(supervised >= 0, level_of[supervised.clamp(min=0)], -1)  # [B, T-1]
    run = torch.ones(supervised.shape[0], width, dtype=torch.bool, device=labels.device)
    for j in range(levels.num_levels):
        run &= level[:, j:j + width] == j
    return int(run.sum())
