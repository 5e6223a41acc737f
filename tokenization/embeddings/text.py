"""Item text: template rendering and two frozen encoders (sentence encoder, causal LLM mean-pooled).

Also ``llm_text_targets``: the mean input-token embedding of each item text, the target of the RQ-VAE
alignment loss. It reads only the LLM's input embedding matrix, never the full model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from recdata.dataset import ITEM_TEXT_FIELDS
from recdata.errors import InputFileError, UserError
from recdata.io import sha256_json
from recdata.paths import default_llm_dir, require
from tokenization.embeddings.cache import EmbeddingCache, model_identity
from tokenization.embeddings.vectors import ItemEmbeddings

logger = logging.getLogger(__name__)

TEMPLATE_FIELDS = ("item_id", *ITEM_TEXT_FIELDS)


def template_fields(template: str) -> list[str]:
    """Field names used by a ``str.format`` template; raises on fields items do not have."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UserError(f"text template {template!r} is not a valid str.format template: {exc}") from exc
    unknown = sorted({n for n in names if n not in TEMPLATE_FIELDS})
    if unknown or any(n == "" for n in names):
        raise UserError(f"text template uses unknown field(s) {unknown or ['{}']}; allowed: {list(TEMPLATE_FIELDS)}")
    return names


def render_item_text(item: dict[str, str], template: str) -> str:
    """Fill the template line by line; a line whose fields are all empty is dropped (no 'Brand: ' noise)."""
    template_fields(template)
    values = {f: re.sub(r"\s+", " ", str(item.get(f) or "")).strip() for f in TEMPLATE_FIELDS}
    lines = []
    for line in template.split("\n"):
        fields = template_fields(line)
        if fields and not any(values[f] for f in fields):
            continue
        lines.append(line.format(**values).rstrip())
    return "\n".join(lines).strip()


def render_catalogue(items: dict[str, dict[str, str]], item_ids: Sequence[str], template: str) -> list[str]:
    """Rendered text of each item in ``item_ids`` order; raises naming an item whose text is empty."""
    texts = []
    for item_id in item_ids:
        text = render_item_text(items[item_id], template)
        if not text:
            raise UserError(f"item {item_id!r} renders to an empty text with template {template!r}; "
                             "use a template with fields this item has (title, description, ...)")
        texts.append(text)
    return texts


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
    tokenizer = _padding_tokenizer(tokenizer)
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


def _padding_tokenizer(tokenizer):
    if tokenizer.padding_side != "right" or tokenizer.pad_token is None:
        import copy

        tokenizer = copy.copy(tokenizer)
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_input_embeddings(llm_dir: str | os.PathLike) -> torch.Tensor:
    """The ``[vocab, dim]`` input embedding matrix read straight from the safetensors shard(s) holding it."""
    from safetensors import safe_open

    llm_dir = Path(llm_dir)
    index_file = llm_dir / "model.safetensors.index.json"
    if index_file.is_file():
        weight_map = json.loads(index_file.read_text())["weight_map"]
        candidates = {k: llm_dir / f for k, f in weight_map.items()}
    else:
        single = llm_dir / "model.safetensors"
        if not single.is_file():
            raise InputFileError(f"{llm_dir} has no model.safetensors(.index.json); convert the LLM to safetensors")
        with safe_open(str(single), framework="pt") as f:
            candidates = {k: single for k in f.keys()}
    keys = [k for k in candidates if k.endswith("embed_tokens.weight") or k.endswith("wte.weight")]
    if not keys:
        raise UserError(f"{llm_dir}: no input embedding tensor (*embed_tokens.weight / *wte.weight) in the weights")
    with safe_open(str(candidates[keys[0]]), framework="pt") as f:
        return f.get_tensor(keys[0]).float()


def llm_text_targets(llm_dir: str | os.PathLike | None, texts: Sequence[str], batch_size: int = 512,
                     cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> np.ndarray:
    """Mean input-embedding row of each text's tokens (no special tokens): ``[N, llm_dim]`` float32.

    Cached under ``cache_dir`` (default ``$ALIGNREC_HOME/cache/embeddings``) keyed by model and texts.
    """
    from transformers import AutoTokenizer

    from recdata.paths import alignrec_home

    llm_dir = require(Path(llm_dir) if llm_dir else default_llm_dir(), "LLM folder")
    cache = EmbeddingCache(cache_dir or alignrec_home() / "cache" / "embeddings")
    parts = {"model": model_identity(llm_dir), "texts": sha256_json(list(texts))}
    if use_cache and (hit := cache.get("llm-targets", parts)) is not None:
        return hit.vectors
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir), local_files_only=True)
    table = load_input_embeddings(llm_dir)  # [vocab, llm_dim]
    out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc="llm text targets", disable=len(texts) <= batch_size):
        ids = tokenizer(list(texts[start:start + batch_size]), add_special_tokens=False)["input_ids"]
        for offset, row in enumerate(ids):
            if not row:
                raise UserError(f"text {start + offset} ({texts[start + offset]!r}) has no tokens; give a non-empty text")
            if max(row) >= table.shape[0]:
                raise UserError(f"{llm_dir}: tokenizer id {max(row)} >= embedding rows {table.shape[0]}")
            out[start + offset] = table[torch.tensor(row)].mean(0).numpy()
    if use_cache:
        cache.put("llm-targets", parts, ItemEmbeddings([str(i) for i in range(len(texts))], out,
                                                        {"kind": "llm-targets", "llm_dir": str(llm_dir)}))
    return out
