"""The LLM's softmax masks under the cold-item protocol: what its code loss and item head leave out (issue 31).

The tasks build records the items without training (``sft_tasks.read_build_cold_items``; only under the protocol,
so other runs train exactly as before). They stand for items that arrive after training; kept in the training
softmaxes as negatives, every step would push their item-id tokens down. Here they become two masks:

- ``items [N]`` (item tokenizer order): the flat item head's columns (``ItemHeadObjective.masked``);
- ``tokens [V]``: the code tokens that only those items use, left out of the code loss's vocabulary softmax at every
  position. With ``tokenizer.item_id_level`` these are exactly their item-id tokens; code tokens of other levels that
  warm items share stay in.

The masked rows get no gradient from either loss and keep their starting values (``new_rows_init: item_vectors``
starts them from content), which is how a cold item stays reachable. Held-out losses apply the same masks as
training (one objective; a masked target keeps its own logit, ``alignrec.recommenders.softmax_mask``); ranking
validation decodes over the whole catalogue, untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alignrec.recommenders.softmax_mask import check_mask
from recdata.errors import InputFileError

logger = logging.getLogger(__name__)

__all__ = ["MANIFEST_KEY", "ColdItemMask", "read_cold_item_mask"]

MANIFEST_KEY = "cold_items"  # alignrec_train.json: {"masked_items": n, "masked_tokens": t}; absent = no mask


@dataclass
class ColdItemMask:
    """The items (``[N]`` bool, item tokenizer order) and tokens (``[V]`` bool) the training softmaxes leave out."""

    items: torch.Tensor
    tokens: torch.Tensor

    @classmethod
    def build(cls, cold_items: Sequence[str], item_ids: Sequence[str], token_ids: np.ndarray,
              vocab_size: int) -> ColdItemMask:
        """``token_ids [N, L]``: each item's code tokens (``ItemTokenizer.item_token_ids``) in ``item_ids`` order;
        ``vocab_size``: the width of the model's logits."""
        row = {item: i for i, item in enumerate(item_ids)}
        unknown = [item for item in cold_items if item not in row]
        if unknown:
            raise InputFileError(f"{len(unknown)} item(s) the tasks build lists as without training have no code in "
                                 f"the item tokenizer, e.g. {unknown[:5]}; rebuild the tasks with this tokenizer")
        items = torch.zeros(len(item_ids), dtype=torch.bool)
        items[[row[item] for item in cold_items]] = True
        items = check_mask(items, len(item_ids))
        ids = torch.as_tensor(np.asarray(token_ids, dtype=np.int64))  # [N, L]
        if ids.shape[0] != len(item_ids) or int(ids.max()) >= vocab_size:
            raise ValueError(f"item code tokens {tuple(ids.shape)} (max id {int(ids.max())}) do not fit {len(item_ids)} "
                             f"items and a vocabulary of {vocab_size}")
        tokens = torch.zeros(vocab_size, dtype=torch.bool)
        tokens[ids[items].flatten()] = True
        tokens[ids[~items].flatten()] = False  # a code token a warm item uses stays in
        return cls(items, tokens)

    def to(self, device: torch.device | str) -> ColdItemMask:
        return ColdItemMask(self.items.to(device), self.tokens.to(device))

    def manifest(self) -> dict:
        """The run manifest's entry: how many items and tokens training left out."""
        return {MANIFEST_KEY: {"masked_items": int(self.items.sum()), "masked_tokens": int(self.tokens.sum())}}


def read_cold_item_mask(dataset_dir: str | Path, item_tokenizer, hf_tokenizer, vocab_size: int) -> ColdItemMask | None:
    """The mask for a tasks build made under the cold-item protocol, else None (training unchanged)."""
    from sft_tasks import read_build_cold_items

    cold = read_build_cold_items(dataset_dir)
    if cold is None:
        return None
    mask = ColdItemMask.build(cold, item_tokenizer.item_ids, item_tokenizer.item_token_ids(hf_tokenizer), vocab_size)
    logger.info("cold-item protocol: %s left out of the training softmaxes", mask.manifest()[MANIFEST_KEY])
    return mask
