"""The flat item head: at every item boundary also predict the next item's own token, over the item-id level.

A semantic-ID model scores an item as ``p(cluster) * p(id | cluster)``: every item competes only inside its
cluster once the cluster is chosen, and the cluster is chosen before the item's own token is seen. SASRec's
flat softmax over the whole catalogue is the other factorisation. With an item-id level (a last code token
unique to each item) the same LM head holds both: at the position that predicts the next item's first code,
the logits restricted to the item-id tokens are a flat distribution over the catalogue. This loss trains it
(cross-entropy over the item-id tokens only, so it does not compete with the code loss's full softmax), and
decoding fuses the two (``inference.beam_search.item_head_bias``): a hybrid of generative and dense retrieval
in one model, with no second network and no extra forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class ItemHeadTargets:
    """Vocabulary-wide lookups of a catalogue's codes (built once per run from the ``[N, L]`` item token ids)."""

    leaf_tokens: torch.Tensor  # [N] each item's last (own) token id
    first_level: torch.Tensor  # [vocab] bool: token starts an item's code
    leaf_item: torch.Tensor  # [vocab] int64: item index of a last-level token, -1 elsewhere
    span: int  # code length - 1: positions from an item's first code label to its last

    @classmethod
    def from_token_ids(cls, token_ids: np.ndarray, vocab_size: int) -> ItemHeadTargets:
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] < 2:
            raise ValueError(f"an item head needs codes of >= 2 tokens (cluster ... own id), got shape {ids.shape}")
        if np.unique(ids[:, -1]).size != len(ids):
            raise ValueError("an item head needs a last code token unique to every item (tokenizer.item_id_level: "
                             "true); this tokenizer's items share last tokens")
        if np.intersect1d(ids[:, 0], ids[:, -1]).size:
            raise ValueError("an item head needs first-level and last-level code tokens to be distinct")
        first = torch.zeros(vocab_size, dtype=torch.bool)
        first[torch.from_numpy(np.unique(ids[:, 0]))] = True
        leaf_item = torch.full((vocab_size,), -1, dtype=torch.int64)
        leaf_item[torch.from_numpy(ids[:, -1])] = torch.arange(len(ids))
        return cls(torch.from_numpy(ids[:, -1].copy()), first, leaf_item, ids.shape[1] - 1)

    def to(self, device: torch.device) -> ItemHeadTargets:
        return ItemHeadTargets(self.leaf_tokens.to(device), self.first_level.to(device), self.leaf_item.to(device),
                               self.span)


def item_head_loss(logits: torch.Tensor, labels: torch.Tensor, targets: ItemHeadTargets) -> torch.Tensor | None:
    """Mean cross-entropy of the flat item head over a batch, or None where no item boundary is supervised.

    ``logits [B, T, V]`` and ``labels [B, T]`` as a causal LM sees them (``labels[t]`` is the token at ``t``; the
    logits at ``t - 1`` predict it; ``-100`` = not supervised). A position qualifies when the token it predicts
    is a first-level code and the label ``span`` tokens later is that item's own token; the head's target is
    that item, its logits those of the item-id tokens at the same position.
    """
    next_labels = labels[:, 1:]  # [B, T-1]: what the logits at each position predict
    width = next_labels.shape[1] - targets.span
    if width <= 0:
        return None
    starts = next_labels[:, :width]
    ends = next_labels[:, targets.span:]
    is_start = (starts >= 0) & targets.first_level[starts.clamp(min=0)]
    item = targets.leaf_item[ends.clamp(min=0)]
    keep = is_start & (ends >= 0) & (item >= 0)
    if not bool(keep.any()):
        return None
    rows, cols = keep.nonzero(as_tuple=True)
    head_logits = logits[rows, cols][:, targets.leaf_tokens].float()  # [M, N]
    return F.cross_entropy(head_logits, item[rows, cols])


MANIFEST_KEY = "item_head"  # alignrec_train.json: {"loss_weight": w, "decode_weight": lambda}; absent = no head


def decode_item_head_weight(run_args) -> float:
    """The fusion weight decoding uses for a run trained with ``run_args`` (0 without an item head)."""
    return float(run_args.item_head_decode_weight) if run_args.item_head_weight else 0.0


def item_head_manifest(run_args) -> dict:
    """The manifest entry naming a run's item head, so every consumer decodes it as ranking validation did."""
    if not run_args.item_head_weight:
        return {}
    return {MANIFEST_KEY: {"loss_weight": float(run_args.item_head_weight),
                           "decode_weight": decode_item_head_weight(run_args)}}


def read_item_head_weight(run_dir) -> float:
    """The decoding fusion weight of a finished run (0.0 for a run without an item head)."""
    from trainer.export import read_manifest

    return float(read_manifest(run_dir).get(MANIFEST_KEY, {}).get("decode_weight", 0.0))
