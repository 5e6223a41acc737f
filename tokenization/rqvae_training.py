"""RQ-VAE training loop: k-means codebook initialisation, AdamW steps, dead-code reset.

k-means init: before the first step every level's codebook is set to k-means centres (scikit-learn) of that
level's residuals over (a sample of) the catalogue, so all codes start in use. Dead-code reset: a code not
chosen by any item for ``dead_code_steps`` steps is re-seeded with a residual drawn from the current batch
(its Adam moments zeroed), so codebook capacity is not wasted; resets stop for the last 10% of steps.

Step budget (``rq_max_steps``, issue 34): ``rq_epochs`` passes cost ``rq_epochs x N / batch`` steps, ~146k at
1M items; the budget caps the total so the cost stops growing with ``N``, and the epochs follow from it (the
last one may be partial). Below the budget (every catalogue up to 32,768 items by default) nothing changes:
same steps, same shuffles, same weights.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from tokenization.config import TokenizerConfig
from tokenization.rqvae import RQVAE, RQVAEConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: RQVAE
    history: list[dict] = field(default_factory=list)  # one row per epoch: mean losses, resets
    resets: int = 0
    steps: int = 0  # optimiser steps taken (0 for rkmeans: nothing is trained)
    steps_per_epoch: int = 0

    def schedule(self) -> dict:
        """What was trained, for the tokenizer's meta and report: steps, (fractional) epochs, the budget used."""
        epochs = self.steps / self.steps_per_epoch if self.steps_per_epoch else 0.0
        return {"steps": self.steps, "steps_per_epoch": self.steps_per_epoch, "epochs": round(epochs, 4)}


def planned_steps(num_items: int, cfg: TokenizerConfig) -> tuple[int, int]:
    """``(total steps, steps per epoch)`` for ``num_items``: ``rq_epochs`` passes, capped by ``rq_max_steps``."""
    steps_per_epoch = -(-num_items // min(cfg.rq_batch_size, num_items))
    total = cfg.rq_epochs * steps_per_epoch
    return (min(total, cfg.rq_max_steps) if cfg.rq_max_steps else total), steps_per_epoch


def kmeans_centers(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` centres ``[k, D]``; with fewer distinct points than ``k`` the extra centres are jittered copies."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    points = np.asarray(points, dtype=np.float32)
    distinct = np.unique(points, axis=0)
    if len(distinct) >= k:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=seed).fit(points)
        return km.cluster_centers_.astype(np.float32)
    rng = np.random.default_rng(seed)
    extra = distinct[rng.integers(0, len(distinct), size=k - len(distinct))]
    scale = float(points.std()) or 1.0
    extra = extra + rng.normal(0.0, 1e-3 * scale, size=extra.shape).astype(np.float32)
    return np.concatenate([distinct, extra], axis=0)


@torch.no_grad()
def kmeans_init(model: RQVAE, x: torch.Tensor, seed: int) -> None:
    """Set each codebook to k-means centres of its level's residuals of ``x`` (``[N, in_dim]``)."""
    residual = model.encode(x)  # [N, latent]
    for level, book in enumerate(model.codebooks):
        centres = torch.from_numpy(kmeans_centers(residual.cpu().numpy(), book.shape[0], seed + level))
        book.data.copy_(centres.to(book.device))
        idx = torch.cdist(residual, book).argmin(dim=1)
        residual = residual - book[idx]


class DeadCodeTracker:
    """Remembers the last step each code was used; re-seeds codes idle for ``patience`` steps."""

    def __init__(self, sizes: list[int], patience: int, seed: int) -> None:
        self.patience = patience
        self.last_used = [np.zeros(c, dtype=np.int64) for c in sizes]
        self.rng = np.random.default_rng(seed)

    def update(self, codes: torch.Tensor, step: int) -> None:
        for level, used in enumerate(self.last_used):
            used[np.unique(codes[:, level].cpu().numpy())] = step

    @torch.no_grad()
    def reset(self, model: RQVAE, residuals: list[torch.Tensor], optimizer: torch.optim.Optimizer, step: int) -> int:
        count = 0
        for level, used in enumerate(self.last_used):
            dead = np.flatnonzero(step - used >= self.patience)
            if dead.size == 0:
                continue
            book = model.codebooks[level]
            pool = residuals[level].detach()  # [B, latent]
            rows = self.rng.choice(len(pool), size=dead.size, replace=dead.size > len(pool))
            noise = torch.from_numpy(self.rng.normal(0, 1e-4, size=(dead.size, pool.shape[1])).astype(np.float32))
            idx = torch.from_numpy(dead).to(book.device)
            book.data[idx] = pool[torch.from_numpy(rows).to(pool.device)] + noise.to(pool.device)
            state = optimizer.state.get(book, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][idx] = 0.0
            used[dead] = step
            count += int(dead.size)
        return count


def build_rqvae(cfg: TokenizerConfig, in_dim: int, num_items: int, align_dim: int = 0) -> RQVAE:
    rkmeans = cfg.quantizer == "rkmeans"
    return RQVAE(
        RQVAEConfig(
            in_dim=in_dim,
            codebook_sizes=cfg.codebook_sizes(num_items),
            hidden_dims=[] if rkmeans else list(cfg.hidden_dims),
            latent_dim=in_dim if rkmeans else cfg.latent_dim,
            beta=cfg.beta,
            align_dim=align_dim if cfg.align_weight > 0 else 0,
            identity_encoder=rkmeans,
        )
    )


def train_rqvae(vectors: np.ndarray, cfg: TokenizerConfig, targets: np.ndarray | None = None) -> TrainResult:
    """Train an RQ-VAE on item vectors ``[N, D]`` (and LLM targets ``[N, llm_dim]`` when align_weight > 0)."""
    threads = torch.get_num_threads()
    if cfg.rq_num_threads:
        torch.set_num_threads(cfg.rq_num_threads)
    try:
        return _train(vectors, cfg, targets)
    finally:
        torch.set_num_threads(threads)


def _train(vectors: np.ndarray, cfg: TokenizerConfig, targets: np.ndarray | None) -> TrainResult:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"item vectors must be a non-empty [N, D] array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise ValueError(f"item vector row {row} has NaN/inf values; fix the embeddings")
    if cfg.align_weight > 0:
        if targets is None:
            raise ValueError("align_weight > 0 needs alignment targets (llm_text_targets); pass --align_weight 0 to disable")
        targets = np.asarray(targets, dtype=np.float32)
        if targets.ndim != 2 or len(targets) != len(vectors):
            raise ValueError(f"targets must be [N={len(vectors)}, llm_dim], got shape {targets.shape}")
    device = torch.device(cfg.rq_device)
    torch.manual_seed(cfg.rq_seed)
    n = len(vectors)
    model = build_rqvae(cfg, vectors.shape[1], n, targets.shape[1] if cfg.align_weight > 0 else 0).to(device)
    x_all = torch.from_numpy(vectors).to(device)
    t_all = torch.from_numpy(targets).to(device) if cfg.align_weight > 0 else None
    rng = np.random.default_rng(cfg.rq_seed)
    model.set_input_stats(x_all)
    if cfg.kmeans_init or cfg.quantizer == "rkmeans":
        sample = rng.choice(n, size=min(n, cfg.kmeans_max_samples), replace=False)
        kmeans_init(model, x_all[torch.from_numpy(np.sort(sample)).to(device)], cfg.rq_seed)
    if cfg.quantizer == "rkmeans":  # the codebooks are the per-level k-means centres; nothing is trained
        model.eval()
        return TrainResult(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.rq_lr, weight_decay=cfg.rq_weight_decay)
    batch = min(cfg.rq_batch_size, n)
    total_steps, steps_per_epoch = planned_steps(n, cfg)
    epochs = -(-total_steps // steps_per_epoch)  # = rq_epochs unless the step budget cut it
    if total_steps < cfg.rq_epochs * steps_per_epoch:
        logger.info("RQ-VAE: %d items, step budget rq_max_steps=%d: %.2f epochs instead of %d", n, total_steps,
                    total_steps / steps_per_epoch, cfg.rq_epochs)
    tracker = DeadCodeTracker(model.cfg.codebook_sizes, cfg.dead_code_steps, cfg.rq_seed) if cfg.dead_code_steps else None
    result = TrainResult(model, steps_per_epoch=steps_per_epoch)
    step = 0
    model.train()
    for epoch in tqdm(range(epochs), desc="RQ-VAE", unit="epoch", leave=False):
        sums: dict[str, float] = {}
        epoch_resets = 0
        perm = torch.from_numpy(rng.permutation(n)).to(device)
        epoch_steps = min(steps_per_epoch, total_steps - step)  # the last epoch of a budget may be partial
        for start in range(0, epoch_steps * batch, batch):
            idx = perm[start : start + batch]
            out = model(x_all[idx], None if t_all is None else t_all[idx], cfg.align_weight)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            step += 1
            for k, v in out.losses.items():
                sums[k] = sums.get(k, 0.0) + v
            if tracker is not None:
                tracker.update(out.codes, step)
                if step < 0.9 * total_steps:
                    epoch_resets += tracker.reset(model, out.residuals, optimizer, step)
        result.resets += epoch_resets
        row = {"epoch": epoch, **{k: v / epoch_steps for k, v in sums.items()}, "resets": epoch_resets}
        result.history.append(row)
        if epoch % max(1, epochs // 10) == 0 or epoch == epochs - 1:
            logger.info("RQ-VAE epoch %d: %s", epoch, {k: round(v, 5) for k, v in row.items() if k != "epoch"})
    result.steps = step
    model.eval()
    return result
