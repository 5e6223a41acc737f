"""Frozen text encoders of item / knowledge texts: a sentence encoder and a causal LLM mean-pooled.

They sit in the LLM-features layer (below ``tokenization`` and the knowledge stages) because both the item
embeddings of the tokenizer (``tokenization.embeddings``) and the knowledge vectors (``alignrec.knowledge``) read
them. Moved from ``tokenization.embeddings.text``, which still exports them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["encode_llm", "encode_sentence", "mean_pool_hidden", "right_padding_tokenizer"]


def encode_sentence(texts: Sequence[str], model_dir: str | os.PathLike, batch_size: int = 64,
                    device: str = "cpu", max_length: int | None = None) -> np.ndarray:
    """Sentence-transformers embeddings ``[N, D]`` float32 (not normalised: fusion normalises)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    if max_length is not None:
        model.max_seq_length = min(max_length, model.max_seq_length or max_length)
    vectors = model.encode(list(texts), batch_size=batch_size, show_progress_bar=len(texts) > batch_size,
                           convert_to_numpy=True, normalize_embeddings=False)
    return np.asarray(vectors, dtype=np.float32)


@torch.no_grad()
def mean_pool_hidden(model, tokenizer, texts: Sequence[str], batch_size: int = 16, max_length: int = 256,
                     device: str = "cpu") -> np.ndarray:
    """Mean of the last hidden states over each text's real tokens (padding masked out).

    Right padding keeps every real token's causal context identical to the unpadded text, so a padded
    batch gives the same vectors as one text at a time.
    """
    base = model.base_model if hasattr(model, "base_model") else model
    base.eval().to(device)
    tokenizer = right_padding_tokenizer(tokenizer)
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="llm item embeddings", disable=len(texts) <= batch_size):
        batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt").to(device)
        hidden = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
        out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu())  # [batch, hidden]
    return torch.cat(out).numpy().astype(np.float32)


def encode_llm(texts: Sequence[str], llm_dir: str | os.PathLike, batch_size: int = 16, max_length: int = 256,
               device: str = "cpu") -> np.ndarray:
    """Frozen causal LLM item encoder (fp32 on CPU): mean-pooled last hidden states."""
    from transformers import AutoModel, AutoTokenizer

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = AutoModel.from_pretrained(str(llm_dir), dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir), local_files_only=True)
    return mean_pool_hidden(model, tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device)


def right_padding_tokenizer(tokenizer):
    """``tokenizer`` itself when it pads on the right with a pad token, else a shallow copy that does (pad = eos)."""
    if tokenizer.padding_side != "right" or tokenizer.pad_token is None:
        tokenizer = copy.copy(tokenizer)
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
