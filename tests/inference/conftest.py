"""Inference fixtures: a coded catalogue on the tiny tokenizer/Llama, and a scripted bigram LM."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

CODEBOOKS = [3, 3, 3]


def random_codes(num_items: int, codebook_sizes: list[int], seed: int = 0) -> np.ndarray:
    """``num_items`` distinct code rows drawn without replacement from the full grid."""
    grid = np.stack(np.meshgrid(*[np.arange(c) for c in codebook_sizes], indexing="ij"), -1).reshape(-1, len(codebook_sizes))
    pick = np.random.default_rng(seed).choice(len(grid), size=num_items, replace=False)
    return grid[np.sort(pick)].astype(np.int64)


def tiny_decoder(architecture: str, vocab_size: int, tiny_llama):
    """The tiny Llama, or a tiny Phi / GPT-2 (the other scratch architectures the trainer ships)."""
    from transformers import GPT2Config, GPT2LMHeadModel, PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    if architecture == "phi":
        return PhiForCausalLM(PhiConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
                                        resid_pdrop=0.1, embd_pdrop=0.1, attention_dropout=0.1, pad_token_id=3))
    if architecture == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=512,
                                          pad_token_id=3))
    return tiny_llama


@pytest.fixture(params=["llama", "phi", "gpt2"])
def coded(request, tiny_hf_tokenizer, tiny_llama):
    """(model, hf_tokenizer, item_tokenizer) for each shipped architecture: 14 items with 3-level codes, tokens
    added, embeddings resized."""
    from tokenization import ItemTokenizer

    tiny_llama = tiny_decoder(request.param, len(tiny_hf_tokenizer), tiny_llama)

    item_ids = [f"item{i}" for i in range(14)]
    item_tok = ItemTokenizer.from_codes(item_ids, random_codes(14, CODEBOOKS), CODEBOOKS)
    item_tok.add_to_tokenizer(tiny_hf_tokenizer)
    torch.manual_seed(1)
    tiny_llama.resize_token_embeddings(len(tiny_hf_tokenizer), mean_resizing=False)
    with torch.no_grad():  # sharper than a random init so rankings have clear gaps
        tiny_llama.lm_head.weight.mul_(8.0)
    return tiny_llama.eval(), tiny_hf_tokenizer, item_tok


def tiny_peft_llama(vocab_size: int, base_vocab: int, tied: bool, rows: str):
    """A LoRA (q, v) tiny Llama whose added token rows (``base_vocab`` on) train as ``rows``: ``trainable_tokens``
    (peft token rows) or ``modules_to_save`` (full copies); adapters and rows moved sharply off their start, eval."""
    from peft import LoraConfig, get_peft_model

    from tests.conftest import build_tiny_llama

    names = ["embed_tokens"] + ([] if tied else ["lm_head"])
    extra = ({"trainable_token_indices": {n: list(range(base_vocab, vocab_size)) for n in names}}
             if rows == "trainable_tokens" else {"modules_to_save": names})
    model = get_peft_model(build_tiny_llama(vocab_size, tie_word_embeddings=tied),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                      task_type="CAUSAL_LM", **extra))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn(p.shape, generator=gen))
    return model.eval()


PROMPTS = [
    "Recommend the next item for this user.",
    "The user bought these items in order: pipette tips, nitrile gloves, safety glasses, digital scale",
    "Toy Story",
]


class _NullCache:
    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        pass


class BigramLM(torch.nn.Module):
    """Scripted LM: the next-token logits depend only on the last input token (``table[token]``)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table.float(), requires_grad=False)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                logits_to_keep=0, **_):
        logits = self.table[input_ids]  # [batch, seq, vocab]
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits, past_key_values=_NullCache())

    def log_prob(self, prev: int, seq: list[int]) -> float:
        """Hand reference: sum of bigram log-probs of ``seq`` after token ``prev``."""
        total = 0.0
        for tok in seq:
            total += float(torch.log_softmax(self.table[prev], -1)[tok])
            prev = tok
        return total


@pytest.fixture
def prompts() -> list[str]:
    """Three prompts of different token lengths (exercises left padding)."""
    return list(PROMPTS)


@pytest.fixture
def bigram_lm():
    """The ``BigramLM`` class (build one with a ``[vocab, vocab]`` logits table)."""
    return BigramLM
