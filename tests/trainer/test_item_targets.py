"""Counting supervised next-item targets (items whose every code token carries loss): exact on hand-built labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.item_targets import CodeLevels, count_item_targets, count_loss_tokens

# vocab: 0 pad, 1 eos, 2 text, 3-4 level-0 codes, 5-8 level-1 codes; items (3,5) (3,6) (4,7) (4,8)
CODES = np.array([[3, 5], [3, 6], [4, 7], [4, 8]])
VOCAB = 9
X = -100


@pytest.mark.parametrize(("labels", "targets", "loss_tokens"), [
    # codes-format seqrec_full row: BOS, prompt item (masked), 3 supervised items, eos
    ([[X, X, X, 4, 7, 3, 6, 4, 8, 1]], 3, 7),
    # chat seqrec with loss on everything: text, 2 history items, text, the target, eos
    ([[2, 3, 5, 4, 8, 2, 2, 3, 6, 1]], 3, 9),
    # an item whose first code is masked, one cut off by truncation, one at position 0 (never predicted)
    ([[X, 6, 4, 7, 3]], 1, 4),
    ([[3, 5, 4, 7]], 1, 3),
    # two rows (padded batch) and level tokens out of order (5 then 3 is no item)
    ([[X, X, 3, 5, X], [X, 5, 3, 6, 1]], 2, 6),
])
def test_item_targets_are_counted_exactly(labels, targets, loss_tokens):
    levels = CodeLevels.from_token_ids(CODES, VOCAB)
    t = torch.tensor(labels)
    assert count_item_targets(t, levels) == targets
    assert count_loss_tokens(t) == loss_tokens


def test_code_levels_map_tokens_to_their_level():
    levels = CodeLevels.from_token_ids(CODES, VOCAB)
    assert levels.level_of.tolist() == [-1, -1, -1, 0, 0, 1, 1, 1, 1] and levels.num_levels == 2
    with pytest.raises(ValueError, match="another level"):
        CodeLevels.from_token_ids(np.array([[3, 5], [5, 6]]), VOCAB)
