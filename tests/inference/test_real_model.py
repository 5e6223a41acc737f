"""Slow: on the real SmolLM2, our beam search equals HF generate with the trie processor, and is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList

from inference.beam_search import constrained_beam_search, sequence_log_probs
from inference.logits_processor import TrieLogitsProcessor
from inference.recommender import recommend
from inference.trie import ItemTrie

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recdata.paths import default_llm_dir
    from tokenization import ItemTokenizer

    path = default_llm_dir()
    if not (path / "config.json").is_file():
        pytest.skip(f"{path} not present (the converted SmolLM2; run `make setup`)")
    hf_tok = AutoTokenizer.from_pretrained(path)
    grid = np.stack(np.meshgrid(*[np.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3)
    codes = grid[np.random.default_rng(0).choice(len(grid), 40, replace=False)]
    item_tok = ItemTokenizer.from_codes([f"item{i}" for i in range(40)], codes, [8, 8, 8])
    item_tok.add_to_tokenizer(hf_tok)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    torch.manual_seed(0)
    model.resize_token_embeddings(len(hf_tok), mean_resizing=False)
    return model.eval(), hf_tok, item_tok


PROMPTS = ["Recommend the next lab item for a chemistry student.", "Which item should this user buy next?"]


def test_real_model_matches_hf_generate_and_brute_force(smol):
    model, hf_tok, item_tok = smol
    token_ids = item_tok.item_token_ids(hf_tok)
    trie = ItemTrie(token_ids, item_tok.item_ids)
    enc = hf_tok(PROMPTS, padding=True, padding_side="left", return_tensors="pt", add_special_tokens=False)
    ours = constrained_beam_search(model, enc.input_ids, enc.attention_mask, trie, num_beams=40)
    brute = sequence_log_probs(model, enc.input_ids, enc.attention_mask, torch.from_numpy(token_ids))
    assert torch.allclose(ours.scores, brute.sort(descending=True).values, atol=1e-3)
    gen = model.generate(
        **enc, num_beams=10, num_return_sequences=5, max_new_tokens=3, do_sample=False, length_penalty=0.0,
        early_stopping=True, pad_token_id=hf_tok.pad_token_id or hf_tok.eos_token_id,
        logits_processor=LogitsProcessorList([TrieLogitsProcessor(trie, enc.input_ids.shape[1])]),
    )
    narrow = constrained_beam_search(model, enc.input_ids, enc.attention_mask, trie, num_beams=10)
    got = gen[:, enc.input_ids.shape[1]:].view(len(PROMPTS), 5, 3)
    assert torch.equal(got, torch.from_numpy(token_ids)[narrow.items[:, :5]])
    recs = recommend(model, hf_tok, item_tok, PROMPTS, k=5, num_beams=10)
    assert [[i for i, _ in r] for r in recs] == [[item_tok.item_ids[i] for i in row[:5]] for row in narrow.items.tolist()]
