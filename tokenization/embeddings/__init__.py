"""Item embeddings for the RQ-VAE: text (sentence encoder / frozen LLM), collaborative (SASRec), fused, file."""

from tokenization.embeddings.cache import EmbeddingCache, cache_key, model_identity
from tokenization.embeddings.compute import compute_item_embeddings
from tokenization.embeddings.config import DEFAULT_TEMPLATE, EmbeddingConfig
from tokenization.embeddings.fusion import fuse_embeddings, l2_normalize
from tokenization.embeddings.text import (
    encode_llm,
    encode_sentence,
    llm_text_targets,
    mean_pool_hidden,
    render_catalogue,
    render_item_text,
)
from tokenization.embeddings.user_provided import load_user_embeddings, read_id_list
from tokenization.embeddings.vectors import ItemEmbeddings

__all__ = [
    "DEFAULT_TEMPLATE",
    "EmbeddingCache",
    "EmbeddingConfig",
    "ItemEmbeddings",
    "cache_key",
    "compute_item_embeddings",
    "encode_llm",
    "encode_sentence",
    "fuse_embeddings",
    "l2_normalize",
    "llm_text_targets",
    "load_user_embeddings",
    "mean_pool_hidden",
    "model_identity",
    "read_id_list",
    "render_catalogue",
    "render_item_text",
]
