"""Decoding leaves the model as it found it: picklable, with no hook added. In transformers 5 the first forward with
``output_hidden_states`` installs output-capturing hooks on every submodule (closures over a ``ContextVar``), after
which neither pickle nor cloudpickle can serialize the model, so a model used for local decoding could no longer be
handed to Ray actors (``tests/inference/test_cache_ray.py``). The decode steps read the base decoder's
``last_hidden_state`` instead: checked here on the tiny Llama, Phi and GPT-2 and on peft (LoRA) models."""

from __future__ import annotations

import pickle

import pytest
import torch

import inference.beam_search as beam_search
from inference.beam_search import constrained_beam_search
from inference.recommender import left_pad, tokenize_prompts
from inference.trie import ItemTrie
from tests.inference.conftest import PROMPTS, tiny_decoder, tiny_peft_llama

CODES = [[i % 3, i] for i in range(9)]  # an item-id level: decode steps score from the decoder's states


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _hooked(model: torch.nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if getattr(m, "_output_capturing_hooks_installed", False)]


@pytest.mark.parametrize("case", ["llama", "phi", "gpt2", "lora_trainable_tokens", "lora_modules_to_save"])
def test_decoding_adds_no_hooks_and_the_model_still_pickles(case, monkeypatch):
    import numpy as np

    from tests.conftest import build_tiny_hf_tokenizer, build_tiny_llama
    from tokenization import ItemTokenizer

    hf_tok = build_tiny_hf_tokenizer()
    base_vocab = len(hf_tok)
    item_tok = ItemTokenizer.from_codes([f"item{i}" for i in range(len(CODES))], np.array(CODES), [3, len(CODES)])
    item_tok.add_to_tokenizer(hf_tok)
    if case.startswith("lora_"):
        model = tiny_peft_llama(len(hf_tok), base_vocab, tied=False, rows=case.removeprefix("lora_"))
    else:
        model = tiny_decoder(case, len(hf_tok), build_tiny_llama(len(hf_tok))).eval()
    trie = ItemTrie(item_tok.item_token_ids(hf_tok), item_tok.item_ids)
    input_ids, mask = left_pad(tokenize_prompts(hf_tok, PROMPTS))
    hooks = _hooks(model)
    tiled = []
    normaliser = beam_search.linear_logsumexp
    monkeypatch.setattr(beam_search, "linear_logsumexp", lambda *a, **k: tiled.append(1) or normaliser(*a, **k))
    kwargs = {"num_beams": 4, "exclude": [[0], [], [1, 2]], "item_head_weight": 0.6}
    out = constrained_beam_search(model, input_ids, mask, trie, **kwargs)
    assert tiled == [1]  # the id step ran on the decoder's hidden states, not the model's logits
    assert _hooked(model) == [] and _hooks(model) == hooks
    clone = pickle.loads(pickle.dumps(model))
    again = constrained_beam_search(clone, input_ids, mask, trie, **kwargs)
    assert again.items.tolist() == out.items.tolist()
    assert torch.allclose(again.scores, out.scores, atol=1e-6, rtol=0)
