"""The flat item head's loss: exact targets on a hand-built batch, guards on codes it cannot serve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.item_head import ItemHeadTargets, item_head_loss

# vocab: 0 pad, 1 eos, 2-3 clusters, 4-7 the items' own tokens; items (cluster, own): (2,4) (2,5) (3,6) (3,7)
CODES = np.array([[2, 4], [2, 5], [3, 6], [3, 7]])
VOCAB = 8


def test_targets_map_first_level_and_own_tokens():
    t = ItemHeadTargets.from_token_ids(CODES, VOCAB)
    assert t.leaf_tokens.tolist() == [4, 5, 6, 7]
    assert t.first_level.nonzero().flatten().tolist() == [2, 3]
    assert t.leaf_item.tolist() == [-1, -1, -1, -1, 0, 1, 2, 3]
    assert t.span == 1


def test_loss_is_cross_entropy_over_own_tokens_at_every_supervised_item_boundary():
    t = ItemHeadTargets.from_token_ids(CODES, VOCAB)
    # row 0: prompt item 0 (unsupervised), then items 2 and 1, eos; row 1: prompt, item 3, eos, padding
    input_ids = torch.tensor([[2, 4, 3, 6, 2, 5, 1], [2, 5, 3, 7, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, 3, 6, 2, 5, 1], [-100, -100, 3, 7, 1, -100, -100]])
    assert input_ids.shape == labels.shape
    logits = torch.randn(2, 7, VOCAB, generator=torch.Generator().manual_seed(0))
    # boundaries: position 1 predicts label[2]=3 (item 2's cluster) -> item 2; position 3 -> label[4]=2 -> item 1;
    # row 1 position 1 -> item 3. Nothing else: own tokens, eos and the prompt are no boundary.
    picked = torch.stack([logits[0, 1, 4:8], logits[0, 3, 4:8], logits[1, 1, 4:8]])
    expected = F.cross_entropy(picked, torch.tensor([2, 1, 3]))
    got = item_head_loss(logits, labels, t)
    assert got is not None and got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_loss_ignores_a_cluster_whose_own_token_is_cut_off():
    t = ItemHeadTargets.from_token_ids(CODES, VOCAB)
    labels = torch.tensor([[-100, -100, 3]])  # truncated right after a cluster token: no item to predict
    assert item_head_loss(torch.zeros(1, 3, VOCAB), labels, t) is None


def test_loss_gradient_reaches_only_own_token_logits():
    t = ItemHeadTargets.from_token_ids(CODES, VOCAB)
    logits = torch.zeros(1, 4, VOCAB, requires_grad=True)
    item_head_loss(logits, torch.tensor([[-100, -100, 2, 5]]), t).backward()
    grad = logits.grad[0, 1]
    assert grad[:4].abs().sum() == 0 and grad[4:].abs().sum() > 0
    assert grad[5] < 0  # the target's logit is pushed up
    assert logits.grad[0, [0, 2, 3]].abs().sum() == 0


@pytest.mark.parametrize("codes, match", [
    (np.array([[2, 4], [3, 4]]), "unique to every item"),
    (np.array([[2], [3]]), ">= 2 tokens"),
    (np.array([[2, 3], [3, 4]]), "distinct"),
])
def test_codes_an_item_head_cannot_serve_raise(codes, match):
    with pytest.raises(ValueError, match=match):
        ItemHeadTargets.from_token_ids(codes, VOCAB)


@pytest.mark.parametrize("by_items, training, steps, expected", [
    (False, True, 4, 1.0),  # per-batch mean code loss: the Trainer divides the sum of both by the steps
    (True, True, 4, 0.25),  # code loss over the accumulated batch's tokens: the head's mean must be split too
    (True, False, 4, 1.0),  # evaluation: no accumulation
])  # no device factor: a rank's head mean is whole (2 ranks against 1: tests/trainer/test_deepspeed_ranks.py)
def test_head_loss_scale_matches_how_hf_scales_the_code_loss(by_items, training, steps, expected):
    from trainer.trl_trainer import head_loss_scale

    assert head_loss_scale(by_items, training, steps) == expected
