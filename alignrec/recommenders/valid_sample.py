"""Which valid users a dense recommender's early stopping ranks, and the cache-key rule that came with the choice.

Ranking every valid user against the whole catalogue after each epoch is 1e11 scores a pass at 1M items x 100k
users: longer than the epoch itself. Above ``VALID_SCORES`` the auto rule ranks a seeded sample instead (the same
users every epoch), as the evaluate stage samples its test users. Every dataset we publish stays below it, so
their runs rank all valid users, bit for bit as before the rule existed.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from recdata.evaluation import sample_examples

logger = logging.getLogger(__name__)

# auto ranks every valid user while users x items is at most this (943 x 1,682 up to 100k x 100k), else a seeded
# sample of VALID_SCORES // items users (10,000 at 1M items)
VALID_SCORES = 10**10
# fields left out of a trained model's cache key at these values: added after models were cached, they change
# nothing at them below VALID_SCORES, so those models stay cache hits
KEY_NEUTRAL = {"sasrec_valid_users": 0, "learn_valid_users": 0}


def early_stopping_users(valid_users: int, num_users: int, num_items: int) -> int:
    """How many of ``num_users`` valid users early stopping ranks: ``valid_users`` (at most all), or, for 0
    (auto), all of them up to ``VALID_SCORES`` scores a pass and ``VALID_SCORES // num_items`` (>= 1) above."""
    if valid_users:
        return min(valid_users, num_users)
    if num_users * num_items <= VALID_SCORES:
        return num_users
    return max(1, min(num_users, VALID_SCORES // max(num_items, 1)))


def early_stopping_examples(valid, num_items: int, valid_users: int, seed: int, model: str = "model"
                            ) -> tuple[Any, dict[str, int]]:
    """The valid rows (a ``split.eval_examples`` dataset) early stopping ranks: all, or a seeded sample
    (``recdata.evaluation.sample_examples``). Returns them and ``{"valid_users": n, "valid_users_of": total}``
    for ``train_info``."""
    n = early_stopping_users(valid_users, len(valid), num_items)
    if n < len(valid):
        logger.info("%s early stopping ranks a seeded sample of %d of %d valid users", model, n, len(valid))
    return sample_examples(valid, n, seed), {"valid_users": n, "valid_users_of": len(valid)}


def model_key(cfg: Any, device_field: str) -> dict[str, Any]:
    """A dense recommender's config as a trained model's cache key: every field but the device, and the
    ``KEY_NEUTRAL`` fields left out at their neutral value (the keys models were cached under before them)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items()
            if k != device_field and not (k in KEY_NEUTRAL and v == KEY_NEUTRAL[k])}
