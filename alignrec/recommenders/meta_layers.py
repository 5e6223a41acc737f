"""Multi-scenario layers: STAR-style per-scenario towers and LLM4MSR's generated (meta) layers.

- ``ScenarioTowers`` (STAR, Sheng et al. 2021, star topology): one fully connected layer per scenario whose weight
  is the element-wise product of a shared weight and the scenario's own (``W_s * W_shared``), bias the sum;
  residual, so every tower starts as the identity plus the shared part.
- ``MetaLayerGenerator`` (LLM4MSR, Wang et al. 2024): a *meta network* maps a knowledge vector (an encoded LLM
  answer about a scenario or a user) to the weights of a small low-rank residual layer, which is then applied to
  the recommender state of that row. The layer's weights are generated, not learned per scenario / user, so a
  user seen in training only through its LLM summary still gets its own layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MetaLayerGenerator", "ScenarioTowers"]


class ScenarioTowers(nn.Module):
    """``forward(states [rows, dim], scenario [rows]) -> [rows, dim]``; scenario 0 = unknown (shared part only).

    ``out = x + (W_shared * W_s) x + b_shared + b_s``. ``W_s`` starts at ones and ``b_s`` at zeros, so at
    initialisation every tower equals the shared layer, which itself starts close to zero (near identity).
    """

    def __init__(self, dim: int, num_scenarios: int, init_std: float = 0.02) -> None:
        super().__init__()
        if dim < 1 or num_scenarios < 1:
            raise ValueError(f"dim and num_scenarios must be >= 1, got {dim}, {num_scenarios}")
        self.shared_weight = nn.Parameter(torch.randn(dim, dim) * init_std)  # [out, in]
        self.shared_bias = nn.Parameter(torch.zeros(dim))
        self.weight = nn.Parameter(torch.ones(num_scenarios + 1, dim, dim))  # [scenarios + 1, out, in], row 0 unknown
        self.bias = nn.Parameter(torch.zeros(num_scenarios + 1, dim))

    def forward(self, states: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        out = states.clone()
        for s in scenario.unique().tolist():  # a few scenarios: one matmul each instead of a [rows, d, d] gather
            rows = scenario == s
            weight = self.shared_weight * self.weight[s]  # [out, in]
            out[rows] = states[rows] + states[rows] @ weight.T + self.shared_bias + self.bias[s]
        return out


class MetaLayerGenerator(nn.Module):
    """Meta network: knowledge ``[rows, in_dim]`` -> a low-rank residual layer applied to states ``[rows, dim]``.

    ``forward(states, knowledge, active=None)``: generates ``down [rows, dim, rank]``, ``up [rows, rank, dim]`` and
    ``bias [rows, dim]`` from each row's knowledge and returns ``x + (gelu(x @ down) @ up + bias) * active``
    (``active`` [rows] 0/1 switches the layer off for rows without knowledge). ``rank`` bounds what a generated
    layer can change; the last linear layer starts small (``init_std``) so the layers start near the identity
    while their outputs already depend on the knowledge (the gradient reaches the meta network from step one).
    """

    def __init__(self, in_dim: int, dim: int, rank: int = 4, hidden: int = 64, init_std: float = 0.02) -> None:
        super().__init__()
        if min(in_dim, dim, rank, hidden) < 1:
            raise ValueError(f"in_dim, dim, rank and hidden must be >= 1, got {in_dim}, {dim}, {rank}, {hidden}")
        self.dim, self.rank = dim, rank
        self.norm = nn.LayerNorm(in_dim)  # encoders differ in scale (MiniLM unit norm, LLM mean pool ~10s)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 2 * dim * rank + dim))
        nn.init.normal_(self.net[-1].weight, std=init_std)
        nn.init.zeros_(self.net[-1].bias)

    def weights(self, knowledge: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(down [rows, dim, rank], up [rows, rank, dim], bias [rows, dim])`` generated from ``knowledge``."""
        flat = self.net(self.norm(knowledge))  # [rows, 2 * dim * rank + dim]
        d, r = self.dim, self.rank
        down = flat[:, :d * r].view(-1, d, r)
        up = flat[:, d * r:2 * d * r].view(-1, r, d)
        return down, up, flat[:, 2 * d * r:]

    def forward(self, states: torch.Tensor, knowledge: torch.Tensor, active: torch.Tensor | None = None
                ) -> torch.Tensor:
        if states.shape[0] != knowledge.shape[0] or states.shape[1] != self.dim:
            raise ValueError(f"states {tuple(states.shape)} and knowledge {tuple(knowledge.shape)} must share rows "
                             f"and states must be [rows, {self.dim}]")
        down, up, bias = self.weights(knowledge)
        hidden = F.gelu(torch.einsum("nd,ndr->nr", states, down))  # [rows, rank]
        delta = torch.einsum("nr,nrd->nd", hidden, up) + bias  # [rows, dim]
        if active is not None:
            delta = delta * active.to(delta.dtype).unsqueeze(-1)
        return states + delta
