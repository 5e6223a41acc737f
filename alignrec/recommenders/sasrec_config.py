"""``SASRecConfig``: hyper-parameters of the one SASRec (CF item encoder, baseline, extension base)."""

from __future__ import annotations

from dataclasses import dataclass, field

# auto | full | chunked | sampled: alignrec.recommenders.sampled_softmax (one implementation with the LLM's item
# head); "ce" is full's former name (saved models and configs use it); "bce": the original SASRec loss.
SASREC_LOSSES = ("auto", "full", "chunked", "sampled", "ce", "bce")


@dataclass
class SASRecConfig:
    """SASRec hyper-parameters; also the CF baseline that evaluation compares against."""

    sasrec_dim: int = field(default=64, metadata={"help": "Hidden size = item embedding size of the CF part."})
    sasrec_layers: int = field(default=2, metadata={"help": "Self-attention blocks (more = more capacity, slower)."})
    sasrec_heads: int = field(default=2, metadata={"help": "Attention heads; must divide sasrec_dim."})
    sasrec_dropout: float = field(default=0.3, metadata={"help": "Dropout on embeddings, attention and FFN."})
    sasrec_max_len: int = field(
        default=50, metadata={"help": "Longest item window the model reads; longer sequences are cut into windows."}
    )
    sasrec_loss: str = field(
        default="auto", metadata={"help": "auto: full below 100,000 items, sampled from there (the choice is "
                                          "recorded in train_info['loss']). full (alias ce): softmax over the "
                                          "whole catalogue. chunked: the same loss, exactly, computed 8192 items at "
                                          "a time (memory bounded, ~2x compute). sampled: softmax over the target "
                                          "and sasrec_num_negatives shared negatives with the logQ correction "
                                          "(alignrec/recommenders/sampled_softmax.py). bce: one sampled negative "
                                          "per position (original SASRec)."}
    )
    sasrec_num_negatives: int = field(
        default=2048, metadata={"help": "sampled loss: negatives drawn per batch, shared by every position (more = "
                                        "closer to full softmax, slower)."}
    )
    sasrec_negative_alpha: float = field(
        default=0.75, metadata={"help": "sampled loss: negatives drawn proportional to (training count + 1)^alpha "
                                        "(0 = uniform, 1 = popularity); the logQ correction keeps any alpha "
                                        "consistent, alpha only changes the variance."}
    )
    sasrec_lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    sasrec_weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    sasrec_batch_size: int = field(default=128, metadata={"help": "Training windows per step."})
    sasrec_epochs: int = field(default=200, metadata={"help": "Maximum epochs (early stopping usually ends sooner)."})
    sasrec_patience: int = field(
        default=10, metadata={"help": "Stop after this many evaluations without a better valid NDCG@10; "
                                      "0 disables early stopping (train all epochs, keep the last weights)."}
    )
    sasrec_eval_every: int = field(default=1, metadata={"help": "Evaluate on the valid targets every N epochs."})
    sasrec_valid_users: int = field(
        default=0, metadata={"help": "Valid users early stopping ranks (against the whole catalogue) each "
                                     "evaluation. 0 = auto: all of them while users x items <= 1e10 scores, else "
                                     "a seeded sample of 1e10 // items users (10,000 at 1M items); N: a seeded "
                                     "sample of at most N. The same users every epoch; train_info records the "
                                     "count as valid_users of valid_users_of."}
    )
    sasrec_seed: int = field(default=42, metadata={"help": "Seed for initialisation, shuffling and dropout."})
    sasrec_device: str = field(default="cpu", metadata={"help": "torch device for SASRec ('cpu', 'cuda', ...)."})

    def __post_init__(self) -> None:
        validate_sasrec(self)

    def sasrec_config(self) -> SASRecConfig:
        """The SASRec part alone (what ``train_sasrec`` needs) of a config that extends this one."""
        return SASRecConfig(**{k: getattr(self, k) for k in SASRecConfig.__dataclass_fields__})


def validate_sasrec(cfg: SASRecConfig) -> None:
    if cfg.sasrec_valid_users < 0:
        raise ValueError(f"sasrec_valid_users must be >= 0 (0 = auto), got {cfg.sasrec_valid_users}")
    positive = ("sasrec_dim", "sasrec_layers", "sasrec_heads", "sasrec_max_len", "sasrec_batch_size",
                "sasrec_epochs", "sasrec_eval_every", "sasrec_num_negatives")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.sasrec_dim % cfg.sasrec_heads:
        raise ValueError(f"sasrec_heads ({cfg.sasrec_heads}) must divide sasrec_dim ({cfg.sasrec_dim})")
    if not 0.0 <= cfg.sasrec_dropout < 1.0:
        raise ValueError(f"sasrec_dropout must be in [0, 1), got {cfg.sasrec_dropout}")
    if cfg.sasrec_loss not in SASREC_LOSSES:
        raise ValueError(f"sasrec_loss must be one of {SASREC_LOSSES}, got {cfg.sasrec_loss!r}")
    if not 0.0 <= cfg.sasrec_negative_alpha < float("inf"):
        raise ValueError(f"sasrec_negative_alpha must be a finite value >= 0, got {cfg.sasrec_negative_alpha}")
    if cfg.sasrec_lr <= 0 or cfg.sasrec_weight_decay < 0 or cfg.sasrec_patience < 0:
        raise ValueError("sasrec_lr must be > 0, sasrec_weight_decay and sasrec_patience >= 0")

