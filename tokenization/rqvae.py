"""Residual-quantised VAE (RQ-VAE) with the Semantic Convergence LLM alignment loss.

Forward pass for an item embedding ``x`` (``[B, in_dim]``)::

    x~      = (x - mu) / sigma                             # per-feature standardisation (catalogue stats, buffers)
    z       = encoder(x~)                                  # [B, latent]   MLP
    r_0     = z;  k_l = argmin_c ||r_l - e_{l,c}||^2;  q_l = e_{l,k_l};  r_{l+1} = r_l - q_l   (l < Lq)
    z_q     = sum_l q_l                                    # [B, latent]   quantised vector
    x_hat   = decoder(z + sg(z_q - z))                     # straight-through estimator, predicts x~

Loss (each term averaged over the batch)::

    L = L_recon + L_rq + align_weight * L_align
    L_recon = mean_d (x_hat - x~)^2
    L_rq    = sum_l  mean_d (sg(r_l) - q_l)^2  +  beta * mean_d (r_l - sg(q_l))^2     (beta = commitment, 0.25)
    L_align = mean_{b,d} (W z_q + b - t)^2 / mean_{b,d} t^2      (relative MSE, scale-free weight)

where ``t`` is the LLM's mean input-token embedding of the item text (``llm_text_targets``) and
``W, b`` (``align_proj``) a learnable linear map latent -> llm_dim. ``L_align`` uses ``z_q`` itself (not the
straight-through copy), so it moves the codebooks and the projection: code vectors become
LLM-interpretable, and ``W e_{l,c} + b / Lq`` initialises the code-token embeddings
(``ItemTokenizer.code_token_embeddings``). MSE rather than cosine keeps the LLM's embedding scale; dividing
by the batch's mean squared target makes ``align_weight = 1`` mean "as important as 100% relative error"
whatever that scale is. Standardising ``x`` does the same for ``L_recon``: unit-norm sentence embeddings
(per-feature variance ~1/D) would otherwise give a reconstruction loss hundreds of times smaller than the
other terms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class RQVAEConfig:
    """Architecture only (what ``ItemTokenizer`` saves to rebuild the model for cold-start encoding)."""

    in_dim: int
    codebook_sizes: list[int]
    hidden_dims: list[int] = field(default_factory=lambda: [256, 128])
    latent_dim: int = 32
    beta: float = 0.25
    align_dim: int = 0  # LLM hidden size; 0 = no alignment projection
    identity_encoder: bool = False  # residual k-means: quantise the standardised input itself (latent = in_dim)

    def __post_init__(self) -> None:
        if self.in_dim < 1 or self.latent_dim < 1:
            raise ValueError(f"in_dim and latent_dim must be >= 1, got {self.in_dim}, {self.latent_dim}")
        if not self.codebook_sizes or any(int(c) < 2 for c in self.codebook_sizes):
            raise ValueError(f"codebook_sizes must be a non-empty list of sizes >= 2, got {self.codebook_sizes}")
        self.codebook_sizes = [int(c) for c in self.codebook_sizes]
        self.hidden_dims = [int(h) for h in self.hidden_dims]
        if self.identity_encoder and self.latent_dim != self.in_dim:
            raise ValueError(f"identity_encoder needs latent_dim == in_dim, got {self.latent_dim} != {self.in_dim}")

    def to_dict(self) -> dict:
        return asdict(self)


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


@dataclass
class RQVAEOutput:
    x_hat: torch.Tensor  # [B, in_dim]
    z: torch.Tensor  # [B, latent]
    z_q: torch.Tensor  # [B, latent]
    codes: torch.Tensor  # [B, Lq] int64
    residuals: list[torch.Tensor]  # Lq x [B, latent]: r_l, the input of level l
    loss: torch.Tensor
    losses: dict[str, float]


class RQVAE(nn.Module):
    def __init__(self, cfg: RQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.identity_encoder:  # residual k-means (GRID's RK-means): no encoder/decoder to train
            self.encoder, self.decoder = nn.Identity(), nn.Identity()
        else:
            self.encoder = _mlp([cfg.in_dim, *cfg.hidden_dims, cfg.latent_dim])
            self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden_dims), cfg.in_dim])
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(c, cfg.latent_dim) * 0.1) for c in cfg.codebook_sizes]
        )
        self.align_proj = nn.Linear(cfg.latent_dim, cfg.align_dim) if cfg.align_dim > 0 else None
        self.register_buffer("in_mean", torch.zeros(cfg.in_dim))
        self.register_buffer("in_std", torch.ones(cfg.in_dim))

    @torch.no_grad()
    def set_input_stats(self, x: torch.Tensor) -> None:
        """Per-feature mean/std of the catalogue ``[N, in_dim]`` (constant features get std 1)."""
        self.in_mean.copy_(x.mean(0))
        std = x.std(0, unbiased=False)
        self.in_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.in_mean) / self.in_std

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent ``z`` ``[B, latent]`` of raw item embeddings."""
        return self.encoder(self.normalize(x))

    @property
    def num_levels(self) -> int:
        return len(self.codebooks)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Greedy residual quantisation: (z_q ``[B, latent]``, codes ``[B, Lq]``, residual inputs per level)."""
        residual = z
        codes, residuals, z_q = [], [], torch.zeros_like(z)
        for book in self.codebooks:
            residuals.append(residual)
            idx = torch.cdist(residual.detach(), book.detach()).argmin(dim=1)  # [B]
            q = book[idx]  # [B, latent]
            codes.append(idx)
            z_q = z_q + q
            residual = residual - q
        return z_q, torch.stack(codes, dim=1), residuals

    def forward(
        self, x: torch.Tensor, target: torch.Tensor | None = None, align_weight: float = 0.0
    ) -> RQVAEOutput:
        x = self.normalize(x)
        z = self.encoder(x)
        z_q, codes, residuals = self.quantize(z)
        rq_loss = x.new_zeros(())
        for level, r in enumerate(residuals):
            q = self.codebooks[level][codes[:, level]]
            rq_loss = rq_loss + F.mse_loss(q, r.detach()) + self.cfg.beta * F.mse_loss(r, q.detach())
        z_st = z + (z_q - z).detach()  # value z_q, gradient to the encoder
        x_hat = self.decoder(z_st)
        recon = F.mse_loss(x_hat, x)
        loss = recon + rq_loss
        losses = {"recon": float(recon.detach()), "rq": float(rq_loss.detach())}
        if align_weight > 0:
            if self.align_proj is None or target is None:
                raise ValueError("align_weight > 0 needs an RQVAE built with align_dim > 0 and alignment targets")
            align = F.mse_loss(self.align_proj(z_q), target) / target.pow(2).mean().clamp_min(1e-12)
            loss = loss + align_weight * align
            losses["align"] = float(align.detach())
        losses["loss"] = float(loss.detach())
        return RQVAEOutput(x_hat, z, z_q, codes, residuals, loss, losses)

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Greedy codes ``[B, Lq]`` of item embeddings."""
        return self.quantize(self.encode(x))[1]

    @torch.no_grad()
    def beam_codes(self, x: torch.Tensor, beam: int, max_elements: int = 1 << 26) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``beam`` full codes per item ranked by final residual norm: (codes ``[B, K, Lq]``, score ``[B, K]``).

        Beam 1 equals ``encode_codes``. Cold-start assignment walks this list to find the nearest free code.
        The search runs on blocks of rows whose ``[rows, beam, C, latent]`` distance tensor holds at most
        ``max_elements`` floats (256 MB by default; one block held 100k items x 64 x 256 x 32 = 210 GB), each row
        computed exactly as in one block.
        """
        z = self.encode(x)
        rows = max(1, max_elements // (beam * max(book.shape[0] for book in self.codebooks) * z.shape[1]))
        if z.shape[0] <= rows:
            return self._beam_search(z, beam)
        blocks = [self._beam_search(z[start:start + rows], beam) for start in range(0, z.shape[0], rows)]
        return torch.cat([codes for codes, _ in blocks]), torch.cat([score for _, score in blocks])

    def _beam_search(self, z: torch.Tensor, beam: int) -> tuple[torch.Tensor, torch.Tensor]:
        residual = z[:, None, :]  # [B, K=1, latent]
        codes = torch.zeros(z.shape[0], 1, 0, dtype=torch.long, device=z.device)  # [B, K, l]
        score = torch.zeros(z.shape[0], 1, device=z.device)
        for book in self.codebooks:
            dist = ((residual[:, :, None, :] - book[None, None]) ** 2).sum(-1)  # [B, K, C]
            k = min(beam, dist.shape[1] * dist.shape[2])
            score, flat = dist.flatten(1).topk(k, dim=1, largest=False)  # [B, k]
            parent, code = flat // book.shape[0], flat % book.shape[0]
            residual = torch.gather(residual, 1, parent[..., None].expand(-1, -1, residual.shape[-1])) - book[code]
            codes = torch.cat([torch.gather(codes, 1, parent[..., None].expand(-1, -1, codes.shape[-1])), code[..., None]], -1)
        return codes, score
