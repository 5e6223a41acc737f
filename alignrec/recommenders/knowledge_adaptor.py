"""KAR's hybrid-expert adaptor: knowledge vectors (text-encoder space) -> augmented vectors (recommender space).

KAR (Xi et al., "Towards Open-World Recommendation with Knowledge Augmentation from LLMs") maps the encoded
item-factual and user-preference knowledge with a mixture of experts: some experts are *shared* by both
kinds (what the two kinds of text have in common, e.g. the domain vocabulary), the others are *per kind*.
Each kind has its own softmax gate over its candidate experts (shared + its own), computed from the
knowledge vector, so the weights of one row sum to 1. Trained jointly with the backbone, then run once
over every item / user to give the prestored augmented vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["HybridExpertAdaptor"]


def _expert(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class HybridExpertAdaptor(nn.Module):
    """``forward(x, kind) -> (out [rows, out_dim], gates [rows, shared + per_kind])``.

    ``kinds``: the knowledge kinds (``("item", "user")``); ``shared`` experts are candidates of every kind,
    ``per_kind`` experts only of their own. ``out_scale`` sets the initial size of the output relative to a
    unit vector, so the augmentation starts as a small perturbation of the backbone's own embeddings.
    """

    def __init__(self, in_dim: int, out_dim: int, kinds: Sequence[str] = ("item", "user"), shared: int = 2,
                 per_kind: int = 2, hidden: int = 128, dropout: float = 0.1, out_scale: float = 1.0) -> None:
        super().__init__()
        if shared < 0 or per_kind < 0 or shared + per_kind < 1:
            raise ValueError(f"need at least one expert per kind, got shared={shared}, per_kind={per_kind}")
        if in_dim < 1 or out_dim < 1 or hidden < 1:
            raise ValueError(f"in_dim, out_dim and hidden must be >= 1, got {in_dim}, {out_dim}, {hidden}")
        self.kinds = tuple(kinds)
        self.shared = nn.ModuleList(_expert(in_dim, hidden, out_dim, dropout) for _ in range(shared))
        self.own = nn.ModuleDict({k: nn.ModuleList(_expert(in_dim, hidden, out_dim, dropout) for _ in range(per_kind))
                                  for k in self.kinds})
        self.gates = nn.ModuleDict({k: nn.Linear(in_dim, shared + per_kind) for k in self.kinds})
        self.norm = nn.LayerNorm(in_dim)  # encoders differ in scale (MiniLM unit norm, LLM mean pool ~10s)
        with torch.no_grad():
            for expert in [*self.shared, *(e for group in self.own.values() for e in group)]:
                expert[-1].weight.mul_(out_scale)
                expert[-1].bias.zero_()

    def forward(self, x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        if kind not in self.gates:
            raise ValueError(f"unknown knowledge kind {kind!r}; this adaptor has {list(self.kinds)}")
        x = self.norm(x)  # [rows, in_dim]
        experts = [*self.shared, *self.own[kind]]
        outs = torch.stack([e(x) for e in experts], dim=1)  # [rows, experts, out_dim]
        gates = torch.softmax(self.gates[kind](x), dim=-1)  # [rows, experts], each row sums to 1
        return (gates.unsqueeze(-1) * outs).sum(1), gates
