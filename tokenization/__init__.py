"""Alignment tokenization: item embeddings -> RQ-VAE -> collision-free ``ItemTokenizer`` -> vocab export.

Names are imported lazily (PEP 562) so ``alignrec --help`` does not pay for importing datasets / torch.
"""

from __future__ import annotations

from recdata.lazy import lazy_exports

_EXPORTS = {
    "RQVAE": "tokenization.rqvae",
    "AssignmentResult": "tokenization.collisions",
    "EmbeddingConfig": "tokenization.embeddings.config",
    "ItemTokenizer": "tokenization.item_tokenizer",
    "RQVAEConfig": "tokenization.rqvae",
    "TokenizerConfig": "tokenization.config",
    "TrainResult": "tokenization.rqvae_training",
    "assign_cold_start": "tokenization.collisions",
    "assign_unique_codes": "tokenization.collisions",
    "auto_codebook_size": "tokenization.config",
    "build_item_tokenizer": "tokenization.pipeline",
    "build_report": "tokenization.report",
    "count_collisions": "tokenization.collisions",
    "export_vocab": "tokenization.vocab_export",
    "fit_item_tokenizer": "tokenization.pipeline",
    "level_stats": "tokenization.report",
    "save_report": "tokenization.report",
    "text_embeddings": "tokenization.embeddings.compute",
    "train_rqvae": "tokenization.rqvae_training",
    "validate_vocab": "tokenization.vocab_export",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
