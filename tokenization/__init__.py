"""Alignment tokenization: item embeddings -> RQ-VAE -> collision-free ``ItemTokenizer`` -> vocab export."""

from tokenization.collisions import AssignmentResult, assign_cold_start, assign_unique_codes, count_collisions
from tokenization.config import TokenizerConfig, auto_codebook_size
from tokenization.item_tokenizer import ItemTokenizer
from tokenization.pipeline import build_item_tokenizer, fit_item_tokenizer
from tokenization.report import build_report, level_stats, save_report
from tokenization.rqvae import RQVAE, RQVAEConfig
from tokenization.rqvae_training import TrainResult, train_rqvae
from tokenization.vocab_export import export_vocab, validate_vocab

__all__ = [
    "RQVAE",
    "AssignmentResult",
    "ItemTokenizer",
    "RQVAEConfig",
    "TokenizerConfig",
    "TrainResult",
    "assign_cold_start",
    "assign_unique_codes",
    "auto_codebook_size",
    "build_item_tokenizer",
    "build_report",
    "count_collisions",
    "export_vocab",
    "fit_item_tokenizer",
    "level_stats",
    "save_report",
    "train_rqvae",
    "validate_vocab",
]
