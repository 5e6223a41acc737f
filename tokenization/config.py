"""``TokenizerConfig``: RQ-VAE architecture, training, alignment loss and collision handling in one place.

Field names are distinct from ``EmbeddingConfig`` so both parse from one command line / YAML file
(``alignrec tokenize``); the alignment LLM is ``EmbeddingConfig.llm_dir``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MAX_AUTO_CODEBOOK = 4096  # was 256: an item-id step of N / 256 children per beam at 1M items (issue 34)
MIN_AUTO_CODEBOOK = 16
# 150 epochs x 32 steps of 1024: every catalogue up to 32,768 items trains as it did before the cap (issue 34)
DEFAULT_RQ_MAX_STEPS = 4800


def auto_codebook_size(num_items: int, levels: int = 1) -> int:
    """Codebook size for a catalogue of ``num_items`` when ``codebook_size=0``, balanced for ``levels`` RQ levels.

    Rule: the smallest power of two ``C`` with ``C^(levels + 1) >= N`` (the power of two nearest above
    ``N^(1 / (levels + 1))``), clipped to [16, 4096]. When the item-id level follows ``levels`` RQ levels, that
    size keeps every step's fan-out about equal: ``C`` children per level-node and ~``N / C^levels`` ~ ``C`` at the
    id step, so a beam step scores ~``C`` edges and decoding cost per user grows as ``N^(1 / (levels + 1))``
    (issue 34: ``levels=2`` -> 1M items 128 codes, ``levels=3`` -> 32). ``levels=1`` (the default, what
    ``TokenizerConfig.codebook_sizes`` uses) is the ``sqrt(N)`` rule: level 1 has about ``sqrt(N)`` items per code
    (k-means fills every code, so usage stays high), and ``C^L`` exceeds ``N`` by a wide margin for ``L >= 3``
    (1.6k items -> 64, 4.3k -> 128, 16.4k-65.5k -> 256 = the paper's 4 x 256). With one level + ``item_id_level``
    (the shipped layout) the id step scores ~``N / C`` children per beam, so the cap grows with the catalogue: 1M
    items -> 1024 codes (~1k children, not ~4k under the old 256 cap), 10M -> 4096. Up to 65,536 items the size is
    what the old [16, 256] rule gave, so shipped runs are unchanged. Integer arithmetic, so an exact power
    (``N = 2^21``, ``levels=2`` -> 128) is not pushed up by a float root's rounding.
    """
    if num_items < 1:
        raise ValueError(f"cannot size a codebook for {num_items} items")
    if levels < 1:
        raise ValueError(f"levels must be >= 1 RQ levels before the item id, got {levels}")
    bits = (int(num_items) - 1).bit_length()  # ceil(log2(N)) for N >= 1
    size = 2 ** -(-bits // (levels + 1))  # 2^ceil(log2(N) / (levels + 1)): C^(levels + 1) >= N, C minimal
    return int(min(MAX_AUTO_CODEBOOK, max(MIN_AUTO_CODEBOOK, size)))


@dataclass
class TokenizerConfig:
    """RQ-VAE item tokenizer (Semantic Convergence): how items become code-token sequences."""

    # --- architecture: capacity of the code space and of the MLP auto-encoder
    num_levels: int = field(default=4, metadata={"help": "RQ levels L = code tokens per item (paper: 4)."})
    codebook_size: int = field(
        default=0,
        metadata={"help": "Codes per level C; 0 = auto: next power of two >= sqrt(num_items), clipped to [16, 4096] (256 up to 65,536 items)."},
    )
    hidden_dims: list[int] = field(
        default_factory=lambda: [256, 128], metadata={"help": "MLP encoder widths (decoder mirrors them)."}
    )
    latent_dim: int = field(default=32, metadata={"help": "Quantised latent size; codebook vectors live here."})
    beta: float = field(default=0.25, metadata={"help": "Commitment weight: pulls encoder outputs to their codes."})
    # --- alignment loss (the paper's contribution)
    quantizer: str = field(
        default="rqvae",
        metadata={"help": "rqvae: MLP encoder + residual codebooks trained with reconstruction (+ alignment) loss. "
                  "rkmeans: residual k-means on the standardised item vectors, no training (GRID: on par with "
                  "RQ-VAE); needs align_weight 0.", "choices": ["rqvae", "rkmeans"]},
    )
    align_weight: float = field(
        default=0.5,
        metadata={"help": "Weight of the LLM alignment loss (relative MSE between the projected quantised vector "
                          "and the LLM's mean input-token embedding of the item text); 0 disables it."},
    )
    align_batch_size: int = field(default=512, metadata={"help": "Item texts per batch when computing LLM targets."})
    # --- optimisation
    rq_epochs: int = field(
        default=150, metadata={"help": "Passes over the catalogue (150: 10k items train in < 60 s on 1 CPU thread), "
                                       "capped by rq_max_steps."}
    )
    rq_max_steps: int = field(
        default=DEFAULT_RQ_MAX_STEPS,
        metadata={"help": "Cap on optimiser steps, so RQ-VAE cost stops growing with the catalogue: above it the "
                          "epochs are derived (rq_max_steps / steps per epoch; the last one may be partial). Default "
                          "4800 = 150 epochs x 32 steps: catalogues up to 32,768 items (batch 1024) train exactly as "
                          "without a cap; 1M items get ~4.9 epochs. 0 = no cap."},
    )
    rq_batch_size: int = field(default=1024, metadata={"help": "Items per step."})
    rq_lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    rq_weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    kmeans_init: bool = field(
        default=True, metadata={"help": "Initialise each level's codebook by k-means on that level's residuals."}
    )
    kmeans_max_samples: int = field(default=20000, metadata={"help": "Items sampled for k-means initialisation."})
    dead_code_steps: int = field(
        default=10,
        metadata={"help": "Re-seed a code from the batch's residuals when unused for this many steps; 0 disables. "
                          "10 steps cover a full epoch up to 10 x rq_batch_size items; raise it for bigger "
                          "catalogues. No resets in the last 10%% of steps, so re-seeded codes settle."},
    )
    rq_seed: int = field(default=42, metadata={"help": "Seed for init, k-means, shuffling and resets (same seed = same codes)."})
    rq_device: str = field(default="cpu", metadata={"help": "torch device for RQ-VAE training."})
    rq_num_threads: int = field(
        default=0,
        metadata={"help": "torch CPU threads while training; 0 = torch's default. 1 is often fastest for this small "
                          "MLP on a busy machine."},
    )
    # --- assignment
    item_id_level: bool = field(
        default=False,
        metadata={"help": "Append a last level holding each item's own index (one token per item): the RQ levels "
                          "stay semantic and may be shared, and every item gets its own input and output "
                          "embedding (SASRec-like per-item capacity for torso and tail items). Costs one "
                          "vocabulary token per item; replaces collision-free reassignment."},
    )
    cold_start_beam: int = field(
        default=64, metadata={"help": "Candidate codes searched per cold-start item before giving up."}
    )
    cold_items: str = field(
        default="auto",
        metadata={"help": "Items without training interactions: 'assign' fits the RQ-VAE on the other (warm) items "
                          "and gives them codes with ItemTokenizer.assign_new_items from their vectors; 'fit' "
                          "fits on every item; 'auto' = 'assign' when the split uses the cold-item protocol "
                          "(data.cold_item_fraction > 0), else 'fit'."},
    )

    def __post_init__(self) -> None:
        if not 1 <= self.num_levels <= 25:
            raise ValueError(f"num_levels must be in 1..25 (one letter per level, one spare), got {self.num_levels}")
        if self.codebook_size != 0 and self.codebook_size < 2:
            raise ValueError(f"codebook_size must be 0 (auto) or >= 2, got {self.codebook_size}")
        if not self.hidden_dims or any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"hidden_dims must be positive widths, got {self.hidden_dims}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.quantizer not in ("rqvae", "rkmeans"):
            raise ValueError(f"quantizer must be rqvae or rkmeans, got {self.quantizer!r}")
        if self.quantizer == "rkmeans" and self.align_weight > 0:
            raise ValueError("quantizer=rkmeans trains nothing, so it has no alignment projection: set align_weight 0")
        if self.beta < 0 or self.align_weight < 0:
            raise ValueError(f"beta and align_weight must be >= 0, got {self.beta}, {self.align_weight}")
        if self.rq_epochs < 1 or self.rq_batch_size < 1 or self.rq_lr <= 0:
            raise ValueError("rq_epochs and rq_batch_size must be >= 1 and rq_lr > 0")
        if self.rq_max_steps < 0:
            raise ValueError(f"rq_max_steps must be >= 0 (0 = no cap), got {self.rq_max_steps}")
        if self.rq_num_threads < 0:
            raise ValueError(f"rq_num_threads must be >= 0 (0 = torch default), got {self.rq_num_threads}")
        if self.cold_items not in ("auto", "assign", "fit"):
            raise ValueError(f"cold_items must be 'auto', 'assign' or 'fit', got {self.cold_items!r}")
        if self.dead_code_steps < 0 or self.kmeans_max_samples < 1 or self.cold_start_beam < 1:
            raise ValueError("dead_code_steps must be >= 0, kmeans_max_samples and cold_start_beam >= 1")

    def codebook_sizes(self, num_items: int) -> list[int]:
        """``codebook_size`` per RQ level, or auto: balanced over the levels when the item-id level follows them
        (one level: sqrt(N), as shipped; two: ~N^(1/3), so decoding 1M items stays as cheap as 10k), else sqrt(N)."""
        levels = self.num_levels if self.item_id_level else 1
        size = self.codebook_size or auto_codebook_size(num_items, levels)
        return [size] * self.num_levels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
