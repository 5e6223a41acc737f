"""Item embeddings for the RQ-VAE: text (sentence encoder / frozen LLM), collaborative (SASRec), LEARN, fused, file.

Names are imported lazily (PEP 562) so ``alignrec --help`` does not pay for importing datasets / torch.
"""

from __future__ import annotations

from recdata.lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_TEMPLATE": "tokenization.embeddings.config",
    "EmbeddingCache": "tokenization.embeddings.cache",
    "EmbeddingConfig": "tokenization.embeddings.config",
    "ItemEmbeddings": "recdata.item_vectors",
    "cache_key": "tokenization.embeddings.cache",
    "compute_item_embeddings": "tokenization.embeddings.compute",
    "encode_llm": "alignrec.llm.text_encoders",
    "encode_sentence": "alignrec.llm.text_encoders",
    "fuse_embeddings": "tokenization.embeddings.fusion",
    "l2_normalize": "tokenization.embeddings.fusion",
    "llm_text_targets": "tokenization.embeddings.text",
    "load_embeddings_dir": "recdata.item_vectors",
    "load_user_embeddings": "recdata.item_vectors",
    "mean_pool_hidden": "alignrec.llm.text_encoders",
    "model_identity": "tokenization.embeddings.cache",
    "read_id_list": "recdata.item_vectors",
    "render_catalogue": "tokenization.embeddings.text",
    "render_item_text": "tokenization.embeddings.text",
    "text_embeddings": "tokenization.embeddings.compute",
    "train_learn_cached": "tokenization.embeddings.compute",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
