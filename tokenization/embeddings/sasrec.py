"""SASRec (Kang & McAuley 2018) in plain torch: the CF item encoder and the CF baseline of evaluation.

Causal self-attention over the last ``max_len`` items, learned positions, pre-LayerNorm blocks, item
embeddings shared between input and output. Trained on ``split.train_sequences()`` only; the valid
targets are used for early stopping alone. Index 0 is padding; item ``item_ids[i]`` is index ``i + 1``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from recdata.io import atomic_path, atomic_write_json
from recdata.split import SplitDataset
from tokenization.embeddings.config import SASRecConfig

logger = logging.getLogger(__name__)


class _Block(nn.Module):
    """Pre-LN causal self-attention + position-wise feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, seq, dim]
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(nn.Module):
    """Sequences are RIGHT-padded: with a causal mask no real position ever attends to padding."""

    def __init__(self, item_ids: Sequence[str], cfg: SASRecConfig) -> None:
        super().__init__()
        self.item_ids = [str(i) for i in item_ids]
        self.index = {item_id: i + 1 for i, item_id in enumerate(self.item_ids)}
        self.cfg = cfg
        self.train_info: dict = {}  # filled by train_sasrec: epochs, best valid NDCG@10, seconds
        self.item_emb = nn.Embedding(len(self.item_ids) + 1, cfg.sasrec_dim, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.sasrec_max_len, cfg.sasrec_dim)
        self.emb_drop = nn.Dropout(cfg.sasrec_dropout)
        self.blocks = nn.ModuleList(
            [_Block(cfg.sasrec_dim, cfg.sasrec_heads, cfg.sasrec_dropout) for _ in range(cfg.sasrec_layers)]
        )
        self.ln = nn.LayerNorm(cfg.sasrec_dim)
        nn.init.normal_(self.item_emb.weight, std=cfg.sasrec_dim ** -0.5)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    # ---- model ------------------------------------------------------------------------------------------
    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """``seqs`` [batch, seq] right-padded item indices -> hidden states [batch, seq, dim]."""
        positions = torch.arange(seqs.shape[1], device=seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.cfg.sasrec_dim) + self.pos_emb(positions)
        x = self.emb_drop(x)
        for block in self.blocks:
            x = block(x)
        return self.ln(x)

    def training_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Next-item loss at every non-padding position; ``targets`` [batch, seq], 0 = ignore."""
        hidden = self.encode(inputs)[targets > 0]  # [positions, dim]
        gold = targets[targets > 0]
        if self.cfg.sasrec_loss == "ce":
            logits = hidden @ self.item_emb.weight[1:].T  # [positions, items]
            return F.cross_entropy(logits, gold - 1)
        neg = torch.randint(1, len(self.item_ids) + 1, gold.shape, device=gold.device)
        pos_logit = (hidden * self.item_emb(gold)).sum(-1)
        neg_logit = (hidden * self.item_emb(neg)).sum(-1)
        return F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + \
            F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[str]], batch_size: int = 256) -> torch.Tensor:
        """Scores over the catalogue ``[len(histories), num_items]`` from each history's last position."""
        self.eval()
        device = self.item_emb.weight.device
        out = []
        for start in range(0, len(histories), batch_size):
            chunk = histories[start:start + batch_size]
            seqs = torch.zeros(len(chunk), self.cfg.sasrec_max_len, dtype=torch.long)
            lengths = []
            for row, history in enumerate(chunk):
                idx = [self._index_of(i) for i in history][-self.cfg.sasrec_max_len:]
                if not idx:
                    raise ValueError(f"history {start + row} is empty; SASRec needs at least one item to score from")
                seqs[row, :len(idx)] = torch.tensor(idx)
                lengths.append(len(idx))
            width = max(lengths)
            hidden = self.encode(seqs[:, :width].to(device))  # [batch, width, dim]
            last = hidden[torch.arange(len(chunk)), torch.tensor(lengths) - 1]  # [batch, dim]
            out.append((last @ self.item_emb.weight[1:].T).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.item_ids))

    def recommend(self, histories: Sequence[Sequence[str]], k: int = 10,
                  exclude_history: bool = False) -> list[list[tuple[str, float]]]:
        """Top-``k`` (item_id, score) per history, best first; optionally never recommend history items."""
        scores = self.score(histories)
        if exclude_history:
            for row, history in enumerate(histories):
                scores[row, [self._index_of(i) - 1 for i in history]] = -math.inf
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        return [
            [(self.item_ids[int(i)], float(s)) for s, i in zip(vals, idx, strict=True) if s > -math.inf]
            for vals, idx in zip(top.values, top.indices, strict=True)
        ]

    def item_embeddings(self) -> np.ndarray:
        """``[num_items, dim]`` float32, in ``item_ids`` order (padding row dropped)."""
        return self.item_emb.weight[1:].detach().float().cpu().numpy().copy()

    def _index_of(self, item_id: str) -> int:
        try:
            return self.index[item_id]
        except KeyError:
            raise ValueError(f"item {item_id!r} is not in the SASRec catalogue ({len(self.item_ids)} items)") from None

    # ---- persistence ------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """``model.safetensors`` + ``sasrec_config.json`` (hyper-parameters and item ids), atomically."""
        from safetensors.torch import save_file

        with atomic_path(path, is_dir=True) as tmp:
            save_file({k: v.contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp / "model.safetensors"))
            atomic_write_json(tmp / "sasrec_config.json",
                              {"config": dataclasses.asdict(self.cfg), "item_ids": self.item_ids})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu") -> SASRec:
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "sasrec_config.json").is_file():
            raise FileNotFoundError(f"{path} is not a saved SASRec (no sasrec_config.json); train one first")
        meta = json.loads((path / "sasrec_config.json").read_text())
        fields = {f.name for f in dataclasses.fields(SASRecConfig)}
        model = cls(meta["item_ids"], SASRecConfig(**{k: v for k, v in meta["config"].items() if k in fields}))
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        return model.to(device).eval()


# ---- training data ----------------------------------------------------------------------------------------
def training_windows(train_sequences: Sequence[tuple[str, Sequence[str]]], index: dict[str, int],
                     max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (inputs, targets) ``[windows, max_len]``: targets are inputs shifted by one.

    A sequence longer than ``max_len + 1`` is cut into windows from its end, so every training transition
    is a target exactly once. Sequences shorter than 2 give no transition.
    """
    inputs, targets = [], []
    for user_id, items in train_sequences:
        try:
            idx = [index[i] for i in items]
        except KeyError as exc:
            raise ValueError(f"user {user_id!r}: item {exc.args[0]!r} is not in the catalogue") from None
        end = len(idx)
        while end >= 2:
            start = max(0, end - max_len - 1)
            window = idx[start:end]
            inputs.append(window[:-1] + [0] * (max_len + 1 - len(window)))
            targets.append(window[1:] + [0] * (max_len + 1 - len(window)))
            end = start + 1  # the next window's last target is this window's first input
    if not inputs:
        raise ValueError("no training transition: every training sequence has fewer than 2 items")
    return torch.tensor(inputs, dtype=torch.long), torch.tensor(targets, dtype=torch.long)


def length_bucketed_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                            bucket_batches: int = 50) -> list[torch.Tensor]:
    """Shuffled batches of similar-length windows: cuts padding (most Amazon windows are short).

    Windows are shuffled, cut into chunks of ``bucket_batches`` batches, sorted by length inside a chunk,
    batched, and the batch order shuffled again; every window appears exactly once per epoch.
    """
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for chunk in order.split(batch_size * bucket_batches):
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def full_ranking_metrics(model: SASRec, histories: Sequence[Sequence[str]], targets: Sequence[str],
                         k: int = 10) -> dict[str, float]:
    """Recall@k and NDCG@k ranking the target among ALL catalogue items (nothing excluded, ties pessimistic)."""
    if not histories:
        return {f"recall@{k}": 0.0, f"ndcg@{k}": 0.0}
    scores = model.score(histories)  # [examples, items]
    gold = torch.tensor([model._index_of(t) - 1 for t in targets])
    target = scores[torch.arange(len(gold)), gold].unsqueeze(1)  # [examples, 1]
    rank = (scores >= target).sum(1) - 1  # 0 = best; ties count against the target (no optimistic ties)
    hit = rank < k
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.float() + 2.0), torch.zeros(()))
    return {f"recall@{k}": float(hit.float().mean()), f"ndcg@{k}": float(ndcg.mean())}


def train_sasrec(split: SplitDataset, cfg: SASRecConfig, log_file: str | os.PathLike | None = None) -> SASRec:
    """Train on ``split.train_sequences()`` only; early-stop on valid NDCG@10 and restore the best weights."""
    _seed_everything(cfg.sasrec_seed)
    model = SASRec(split.dataset.item_ids(), cfg).to(cfg.sasrec_device)
    inputs, targets = training_windows(split.train_sequences(), model.index, cfg.sasrec_max_len)
    lengths = (targets > 0).sum(1)  # [windows]
    valid = split.eval_examples("valid")
    histories, gold = list(valid["history"]), list(valid["target"])
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.sasrec_lr, weight_decay=cfg.sasrec_weight_decay)
    generator = torch.Generator().manual_seed(cfg.sasrec_seed)
    best, best_state, since_best = -1.0, None, 0
    started = time.perf_counter()
    logger.info("SASRec: %d items, %d training windows, %d valid examples", len(model.item_ids), len(inputs), len(gold))
    bar = tqdm(range(1, cfg.sasrec_epochs + 1), desc="sasrec epochs")
    for epoch in bar:
        model.train()
        total, steps = 0.0, 0
        for batch in length_bucketed_batches(lengths, cfg.sasrec_batch_size, generator):
            x, y = inputs[batch], targets[batch]
            width = int((y > 0).sum(1).max())  # drop all-padding columns (right padding)
            loss = model.training_loss(x[:, :width].to(cfg.sasrec_device), y[:, :width].to(cfg.sasrec_device))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total, steps = total + loss.item(), steps + 1
        record = {"epoch": epoch, "loss": total / steps, "seconds": round(time.perf_counter() - started, 2)}
        if cfg.sasrec_patience and histories and epoch % cfg.sasrec_eval_every == 0:
            record.update({f"valid_{k}": v for k, v in full_ranking_metrics(model, histories, gold).items()})
            if record["valid_ndcg@10"] > best:
                best, since_best = record["valid_ndcg@10"], 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        logger.debug("sasrec %s", record)
        if log_file:
            with open(log_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if cfg.sasrec_patience and since_best >= cfg.sasrec_patience:
            logger.info("SASRec early stop at epoch %d (best valid NDCG@10 %.4f)", epoch, best)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.train_info = {"epochs": epoch, "best_valid_ndcg@10": best, "seconds": time.perf_counter() - started,
                        "windows": len(inputs)}
    return model.eval()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
