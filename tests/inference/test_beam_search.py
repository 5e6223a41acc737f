"""Constrained beam search: exact vs brute force, batch == one-by-one, exclusion, fail-closed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.beam_search import constrained_beam_search, sequence_log_probs
from inference.recommender import left_pad, tokenize_prompts
from inference.trie import ItemTrie


def _setup(coded, prompts):
    model, hf_tok, item_tok = coded
    token_ids = item_tok.item_token_ids(hf_tok)
    input_ids, mask = left_pad(tokenize_prompts(hf_tok, prompts))
    return model, ItemTrie(token_ids, item_tok.item_ids), torch.from_numpy(token_ids), input_ids, mask


def _assert_same_ranking(items, scores, brute, atol=1e-4):
    """Beam output equals brute force: same scores, same order modulo near-ties."""
    ref_scores, ref_order = brute.sort(descending=True)
    assert torch.allclose(scores, ref_scores[: len(scores)], atol=atol)
    assert torch.allclose(brute[items], scores, atol=atol)  # each returned item scores what it claims
    mismatch = items != ref_order[: len(items)]
    assert bool(((ref_scores[: len(items)] - scores).abs() < atol)[mismatch].all())


def test_beams_equal_to_catalogue_size_reproduce_brute_force_ranking(coded, prompts):
    model, trie, token_ids, input_ids, mask = _setup(coded, prompts)
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items)
    brute = sequence_log_probs(model, input_ids, mask, token_ids)  # [batch, items]
    assert out.items.shape == (len(prompts), trie.num_items)
    for row in range(len(prompts)):
        assert sorted(out.items[row].tolist()) == list(range(trie.num_items))  # every item exactly once
        _assert_same_ranking(out.items[row], out.scores[row], brute[row])
    assert brute.std() > 0.1  # the sharpened model does separate items


def test_batch_with_left_padding_equals_one_by_one(coded, prompts):
    model, trie, _, input_ids, mask = _setup(coded, prompts)
    assert len(set(mask.sum(1).tolist())) == len(prompts)  # prompts really have different lengths
    batched = constrained_beam_search(model, input_ids, mask, trie, num_beams=5)
    for row, prompt in enumerate(prompts):
        _, _, _, ids1, mask1 = _setup(coded, [prompt])
        single = constrained_beam_search(model, ids1, mask1, trie, num_beams=5)
        assert batched.items[row].tolist() == single.items[0].tolist()
        assert torch.allclose(batched.scores[row], single.scores[0], atol=1e-4)


def test_narrow_beams_return_valid_items_with_true_scores(coded, prompts):
    model, trie, token_ids, input_ids, mask = _setup(coded, prompts)
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=3)
    brute = sequence_log_probs(model, input_ids, mask, token_ids)
    assert bool((out.items >= 0).all())
    for row in range(len(prompts)):
        assert len(set(out.items[row].tolist())) == 3
        assert torch.allclose(brute[row, out.items[row]], out.scores[row], atol=1e-4)
        assert bool((out.scores[row][:-1] >= out.scores[row][1:]).all())


def test_exclusion_removes_items_and_keeps_exact_ranking_of_the_rest(coded, prompts):
    model, trie, token_ids, input_ids, mask = _setup(coded, prompts)
    brute = sequence_log_probs(model, input_ids, mask, token_ids)
    # row 0 excludes its brute-force top 3, row 1 nothing, row 2 the whole first-level subtree of item 0
    first = token_ids[:, 0] == token_ids[0, 0]
    exclude = [brute[0].topk(3).indices.tolist(), [], torch.nonzero(first).flatten().tolist()]
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items, exclude=exclude)
    for row, excl in enumerate(exclude):
        alive = out.items[row] >= 0
        kept = out.items[row][alive]
        assert set(kept.tolist()) == set(range(trie.num_items)) - set(excl)
        assert bool(torch.isinf(out.scores[row][~alive]).all())
        ref = brute[row].clone()
        ref[excl] = float("-inf")
        _assert_same_ranking(kept, out.scores[row][alive], ref)


def test_popularity_bias_ranks_exactly_by_log_prob_minus_scaled_log_prior(coded, prompts):
    model, trie, token_ids, input_ids, mask = _setup(coded, prompts)
    weights = np.arange(1, trie.num_items + 1, dtype=np.float64) ** 2  # a steep prior: the ranking must change
    bias = trie.popularity_bias(weights, 0.7)
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items, node_bias=bias)
    brute = sequence_log_probs(model, input_ids, mask, token_ids)
    adjusted = brute - 0.7 * torch.from_numpy(np.log(weights / weights.sum())).float()
    plain = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items)
    assert out.items.tolist() != plain.items.tolist()
    for row in range(len(prompts)):
        _assert_same_ranking(out.items[row], out.scores[row], adjusted[row])
    narrow = constrained_beam_search(model, input_ids, mask, trie, num_beams=3, node_bias=bias)
    for row in range(len(prompts)):  # narrow beams: true adjusted scores, best first
        assert torch.allclose(adjusted[row, narrow.items[row]], narrow.scores[row], atol=1e-4)
    with pytest.raises(ValueError, match="node_bias"):
        constrained_beam_search(model, input_ids, mask, trie, num_beams=3, node_bias=bias[:-1])


def test_fail_closed_when_the_model_prefers_an_invalid_combination(bigram_lm):
    # items (10, 20) and (11, 21): each token is valid at its position, but (10, 21) is no item
    vocab = 32
    table = torch.zeros(vocab, vocab)
    table[1, 10] = 5.0  # after the prompt token 1, strongly prefer 10 ...
    table[10, 21] = 9.0  # ... then 21: the invalid combination (10, 21)
    model = bigram_lm(table)
    trie = ItemTrie(np.array([[10, 20], [11, 21]]), ["x", "y"])
    out = constrained_beam_search(model, torch.tensor([[1]]), torch.tensor([[1]]), trie, num_beams=1)
    assert out.items.tolist() == [[0]]  # x = (10, 20), scored by hand below
    assert out.scores[0, 0].item() == pytest.approx(model.log_prob(1, [10, 20]), abs=1e-5)
    wide = constrained_beam_search(model, torch.tensor([[1]]), torch.tensor([[1]]), trie, num_beams=5)
    hand = [model.log_prob(1, [10, 20]), model.log_prob(1, [11, 21])]
    assert hand[1] > hand[0]  # greedy (1 beam) picks x, the wider search finds y
    assert wide.items[0].tolist() == [1, 0, -1, -1, -1]
    assert wide.scores[0, :2].tolist() == pytest.approx([hand[1], hand[0]], abs=1e-5)
    assert bool(torch.isinf(wide.scores[0, 2:]).all())
    everything = constrained_beam_search(model, torch.tensor([[1]]), torch.tensor([[1]]), trie, num_beams=2,
                                         exclude=[[0, 1]])
    assert everything.items.tolist() == [[-1, -1]]  # nothing left: no item rather than an invalid one


def test_bad_arguments_raise(coded, prompts):
    model, trie, _, input_ids, mask = _setup(coded, prompts)
    with pytest.raises(ValueError, match="num_beams"):
        constrained_beam_search(model, input_ids, mask, trie, num_beams=0)
    right_padded = torch.flip(mask, dims=[1])
    with pytest.raises(ValueError, match="left-padded"):
        constrained_beam_search(model, input_ids, right_padded, trie, num_beams=2)
    with pytest.raises(ValueError, match="exclude has 1 rows"):
        constrained_beam_search(model, input_ids, mask, trie, num_beams=2, exclude=[[]])


@pytest.mark.parametrize("architecture", ["llama", "phi", "gpt2"])
def test_item_id_level_tries_with_shared_prefixes_reproduce_brute_force(architecture, prompts):
    """A last level with one token per item (prefixes shared by many items) decodes exactly like any other grid."""
    model, trie, token_ids, input_ids, mask = _setup(_item_id_model(architecture), prompts)
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items)
    brute = sequence_log_probs(model, input_ids, mask, token_ids)
    for row in range(len(prompts)):
        assert sorted(out.items[row].tolist()) == list(range(10))
        _assert_same_ranking(out.items[row], out.scores[row], brute[row])

def _item_id_model(architecture):
    """A tiny sharpened decoder over 10 items coded (2 x 2 prefix, own id): 4 prefixes shared by up to 3 items."""
    from tests.conftest import build_tiny_hf_tokenizer, build_tiny_llama
    from tests.inference.conftest import tiny_decoder
    from tokenization import ItemTokenizer

    hf_tok = build_tiny_hf_tokenizer()
    item_ids = [f"item{i}" for i in range(10)]
    prefixes = np.array([[i % 2, (i // 2) % 2] for i in range(10)], dtype=np.int64)
    item_tok = ItemTokenizer.from_codes(item_ids, np.concatenate([prefixes, np.arange(10)[:, None]], 1), [2, 2, 10])
    item_tok.add_to_tokenizer(hf_tok)
    model = tiny_decoder(architecture, len(hf_tok), build_tiny_llama(len(hf_tok)))
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model.eval(), hf_tok, item_tok


@pytest.mark.parametrize("architecture", ["llama", "phi", "gpt2"])
def test_item_head_ranks_exactly_by_code_log_prob_plus_weighted_head_log_prob(architecture, prompts):
    model, trie, token_ids, input_ids, mask = _setup(_item_id_model(architecture), prompts)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():  # brute-force head: softmax of the prompt's last logits over each item's own token
        last = model(input_ids=input_ids, attention_mask=mask, position_ids=pos).logits[:, -1]
    head = torch.log_softmax(last[:, token_ids[:, -1]], dim=-1)  # [batch, items]
    fused = sequence_log_probs(model, input_ids, mask, token_ids) + 0.6 * head
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items, item_head_weight=0.6)
    plain = constrained_beam_search(model, input_ids, mask, trie, num_beams=trie.num_items)
    assert out.items.tolist() != plain.items.tolist()  # the head really changes the ranking
    for row in range(len(prompts)):
        assert sorted(out.items[row].tolist()) == list(range(10))
        _assert_same_ranking(out.items[row], out.scores[row], fused[row])
    narrow = constrained_beam_search(model, input_ids, mask, trie, num_beams=3, item_head_weight=0.6,
                                     exclude=[[0], [], [1, 2]])
    for row, excl in enumerate([[0], [], [1, 2]]):  # narrow beams: true fused scores, best first, none excluded
        assert torch.allclose(fused[row, narrow.items[row]], narrow.scores[row], atol=1e-4)
        assert not set(narrow.items[row].tolist()) & set(excl)
        assert bool((narrow.scores[row][:-1] >= narrow.scores[row][1:]).all())


def test_item_head_needs_a_last_token_unique_to_every_item(coded, prompts):
    model, _, token_ids, input_ids, mask = _setup(coded, prompts)
    shared = token_ids[:2].clone()
    shared[1, :-1] = shared[0, :-1] + (1 if shared[0, 0] == token_ids[:, 0].min() else -1)  # another prefix ...
    shared[1, -1] = shared[0, -1]  # ... but the same last token
    trie = ItemTrie(shared, ["a", "b"])
    assert not trie.unique_last_tokens
    with pytest.raises(ValueError, match="item_id_level"):
        constrained_beam_search(model, input_ids, mask, trie, num_beams=2, item_head_weight=1.0)
    plain = constrained_beam_search(model, input_ids, mask, trie, num_beams=2)  # without a head the trie is fine
    assert sorted(plain.items[0].tolist()) == [0, 1]
