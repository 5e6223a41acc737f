"""``LEARNConfig``: hyper-parameters of the LEARN twin towers over frozen content embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field

LEARN_LOSSES = ("auto", "softmax", "infonce")


@dataclass
class LEARNConfig:
    """LEARN (Jia et al., AAAI 2025): a user tower and an item tower trained over frozen item content vectors."""

    learn_dim: int = field(default=64, metadata={"help": "Width of both towers = size of the user / item vectors."})
    learn_layers: int = field(default=2, metadata={"help": "Causal self-attention blocks of the user tower."})
    learn_heads: int = field(default=2, metadata={"help": "Attention heads of the user tower; must divide learn_dim."})
    learn_dropout: float = field(default=0.2, metadata={"help": "Dropout in the adaptors and the user tower."})
    learn_max_len: int = field(
        default=50, metadata={"help": "Longest history the user tower reads; longer training sequences are cut "
                                      "into windows (as SASRec)."}
    )
    learn_loss: str = field(
        default="auto",
        metadata={"help": "'softmax': contrastive loss against every catalogue item (exact, item tower over the "
                          "whole catalogue each step); 'infonce': in-batch + learn_negatives sampled negatives "
                          "(scales to large catalogues); 'auto': softmax up to learn_softmax_max_items items."},
    )
    learn_negatives: int = field(
        default=512, metadata={"help": "infonce: uniformly sampled negatives shared by a batch (plus in-batch)."}
    )
    learn_softmax_max_items: int = field(
        default=50_000, metadata={"help": "auto: catalogues up to this size use the full softmax."}
    )
    learn_temperature: float = field(
        default=0.07, metadata={"help": "Softmax temperature on cosine(user, item); lower = sharper."}
    )
    learn_lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    learn_weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    learn_batch_size: int = field(default=128, metadata={"help": "Training windows per step."})
    learn_epochs: int = field(default=100, metadata={"help": "Maximum epochs (early stopping usually ends sooner)."})
    learn_patience: int = field(
        default=5, metadata={"help": "Stop after this many evaluations without a better valid NDCG@10; "
                                     "0 disables early stopping (train all epochs, keep the last weights)."}
    )
    learn_eval_every: int = field(default=1, metadata={"help": "Evaluate on the valid targets every N epochs."})
    learn_valid_users: int = field(
        default=0, metadata={"help": "Valid users early stopping ranks each evaluation, as sasrec_valid_users: "
                                     "0 = auto (all of them while users x items <= 1e10 scores, else a seeded "
                                     "sample of 1e10 // items); N: a seeded sample of at most N."}
    )
    learn_seed: int = field(default=42, metadata={"help": "Seed for initialisation, shuffling, sampling, dropout."})
    learn_device: str = field(default="cpu", metadata={"help": "torch device for the towers ('cpu', 'cuda', ...)."})

    def __post_init__(self) -> None:
        validate_learn(self)

    def resolved_loss(self, num_items: int) -> str:
        """The loss actually used for a catalogue of ``num_items``."""
        if self.learn_loss != "auto":
            return self.learn_loss
        return "softmax" if num_items <= self.learn_softmax_max_items else "infonce"


def validate_learn(cfg: LEARNConfig) -> None:
    from recdata.errors import ConfigError

    positive = ("learn_dim", "learn_layers", "learn_heads", "learn_max_len", "learn_batch_size", "learn_epochs",
                "learn_eval_every", "learn_negatives", "learn_softmax_max_items")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.learn_dim % cfg.learn_heads:
        raise ConfigError(f"learn_heads ({cfg.learn_heads}) must divide learn_dim ({cfg.learn_dim})")
    if not 0.0 <= cfg.learn_dropout < 1.0:
        raise ConfigError(f"learn_dropout must be in [0, 1), got {cfg.learn_dropout}")
    if cfg.learn_loss not in LEARN_LOSSES:
        raise ConfigError(f"learn_loss must be one of {LEARN_LOSSES}, got {cfg.learn_loss!r}")
    if cfg.learn_temperature <= 0 or cfg.learn_lr <= 0:
        raise ConfigError("learn_temperature and learn_lr must be > 0")
    if cfg.learn_weight_decay < 0 or cfg.learn_patience < 0 or cfg.learn_valid_users < 0:
        raise ConfigError("learn_weight_decay, learn_patience and learn_valid_users must be >= 0")
