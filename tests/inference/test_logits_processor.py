"""TrieLogitsProcessor: exact masks, fail-closed rows, and HF generate == our beam search."""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessorList

from inference.beam_search import constrained_beam_search
from inference.logits_processor import TrieLogitsProcessor
from inference.recommender import left_pad, tokenize_prompts
from inference.trie import ItemTrie

IDS = np.array([[5, 1, 7], [5, 2, 7], [6, 1, 7], [5, 1, 8]])


def test_mask_allows_exactly_the_trie_children():
    proc = TrieLogitsProcessor(ItemTrie(IDS), prompt_length=2, eos_token_id=0)
    prompt = [3, 4]
    cases = [  # (generated suffix, allowed tokens)
        ([], {5, 6}),
        ([5], {1, 2}),
        ([6], {1}),
        ([5, 1], {7, 8}),
        ([6, 2], set()),  # off the trie: nothing allowed, never an unconstrained row
        ([5, 1, 8], {0}),  # complete item: only EOS
        ([6, 2, 7], set()),  # complete length but invalid: nothing
    ]
    for suffix, allowed in cases:
        ids = torch.tensor([prompt + suffix])
        out = proc(ids, torch.zeros(1, 12))
        assert set(torch.nonzero(torch.isfinite(out[0])).flatten().tolist()) == allowed, suffix


def test_rows_at_the_same_depth_are_masked_independently():
    proc = TrieLogitsProcessor(ItemTrie(IDS), prompt_length=1)
    scores = torch.randn(3, 12)
    out = proc(torch.tensor([[0, 5, 1], [0, 5, 2], [0, 6, 1]]), scores)
    finite = torch.isfinite(out)
    assert [torch.nonzero(r).flatten().tolist() for r in finite] == [[7, 8], [7], [7]]
    assert torch.equal(out[finite], scores[finite])  # allowed scores pass through unchanged


def test_hf_generate_with_processor_matches_our_beam_search(coded, prompts):
    model, hf_tok, item_tok = coded
    token_ids = item_tok.item_token_ids(hf_tok)
    trie = ItemTrie(token_ids, item_tok.item_ids)
    input_ids, mask = left_pad(tokenize_prompts(hf_tok, prompts), pad_id=hf_tok.pad_token_id)
    beams, k = 6, 4
    ours = constrained_beam_search(model, input_ids, mask, trie, num_beams=beams)
    gen = model.generate(
        input_ids=input_ids, attention_mask=mask, num_beams=beams, num_return_sequences=k, do_sample=False,
        max_new_tokens=trie.code_len, length_penalty=0.0, early_stopping=True, pad_token_id=hf_tok.pad_token_id,
        logits_processor=LogitsProcessorList([TrieLogitsProcessor(trie, input_ids.shape[1])]),
        output_scores=True, return_dict_in_generate=True,
    )
    codes = gen.sequences[:, input_ids.shape[1]:].view(len(prompts), k, -1)
    ours_codes = torch.from_numpy(token_ids)[ours.items[:, :k]]
    assert torch.equal(codes, ours_codes)
    assert torch.allclose(gen.sequences_scores.view(len(prompts), k), ours.scores[:, :k], atol=1e-4)
