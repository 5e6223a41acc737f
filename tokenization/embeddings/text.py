"""Item text: template rendering; the two frozen encoders (sentence encoder, causal LLM mean-pooled) live in
``alignrec.llm.text_encoders`` (the knowledge stage reads them too); ``tokenization.embeddings`` exports them.

Also ``llm_text_targets``: the mean input-token embedding of each item text, the target of the RQ-VAE
alignment loss. It reads only the LLM's input embedding matrix, never the full model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from recdata.dataset import ITEM_TEXT_FIELDS
from recdata.errors import InputFileError, UserError
from recdata.io import sha256_json
from recdata.item_vectors import ItemEmbeddings
from recdata.paths import default_llm_dir, require
from tokenization.embeddings.cache import EmbeddingCache, model_identity

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


_MOVED = ("encode_llm", "encode_sentence", "mean_pool_hidden")


def __getattr__(name: str):
    """Deprecated aliases (one release): the encoders moved to ``alignrec.llm.text_encoders``."""
    if name in _MOVED:
        warnings.warn(f"tokenization.embeddings.text.{name} moved to alignrec.llm.text_encoders.{name}; import it "
                      "from there (or from tokenization.embeddings)", DeprecationWarning, stacklevel=2)
        from alignrec.llm import text_encoders

        return getattr(text_encoders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
