"""LEARN (Jia et al., Kuaishou, AAAI 2025): twin towers over frozen LLM item content vectors.

The LLM never trains: it read each item's text once (``tokenization.embeddings``, cached) and its pooled
vectors enter here as a fixed ``content`` buffer ``[num_items, content_dim]``. Two trainable towers bridge
that open-world knowledge and the collaborative signal:

- item tower: an MLP adaptor over an item's content vector -> unit item vector;
- user tower: an adaptor over the content vectors of the history + learned positions + SASRec's causal
  blocks (``CausalBlock``) -> unit user vector at every position.

Trained with a contrastive next-item loss on ``split.train_sequences()`` only (valid targets: early stopping
alone): the full softmax over every catalogue item's tower output when the catalogue is small (exact, and the
item tower over 5k items costs less than the user tower), or InfoNCE with in-batch + shared uniformly sampled
negatives when it is not (no logQ correction of the in-batch popularity bias: the full softmax is the default). Scores are cosine(user, item). An item the towers never saw in training (a cold
item) still has a content vector, so it gets an item vector and can be retrieved: what an ID model lacks. Under the
cold-item protocol those items are left out of the training loss (``masked``, ``alignrec.recommenders.softmax_mask``),
so the towers never learn to push them down; scoring and early stopping still rank every item.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignrec.recommenders.base import DenseRecommender, EpochCheckpoint, train_with_early_stopping
from alignrec.recommenders.learn_config import LEARNConfig
from alignrec.recommenders.sasrec import (
    CausalBlock,
    length_bucketed_batches,
    seed_everything,
    training_windows,
)
from alignrec.recommenders.softmax_mask import check_mask, masked_cross_entropy
from alignrec.recommenders.valid_sample import early_stopping_examples
from recdata.cold_items import training_softmax_mask
from recdata.io import atomic_path, atomic_write_json, sha256_json
from recdata.split import SplitDataset

logger = logging.getLogger(__name__)

__all__ = ["LEARN", "train_learn"]


class LEARN(DenseRecommender):
    """Index 0 is padding; ``item_ids[i]`` is index ``i + 1``. Sequences are RIGHT-padded (causal mask)."""

    def __init__(self, item_ids: Sequence[str], content: np.ndarray | torch.Tensor, cfg: LEARNConfig) -> None:
        super().__init__(item_ids)
        content = torch.as_tensor(np.asarray(content, dtype=np.float32))
        if content.ndim != 2 or content.shape[0] != len(self.item_ids):
            raise ValueError(f"content must be [num_items={len(self.item_ids)}, dim], got {tuple(content.shape)}")
        if not torch.isfinite(content).all():
            row = int((~torch.isfinite(content)).any(1).nonzero()[0])
            raise ValueError(f"content vector of item {self.item_ids[row]!r} (row {row}) is not finite")
        self.cfg = cfg
        self.index = {item_id: i + 1 for i, item_id in enumerate(self.item_ids)}
        d, h, p = content.shape[1], cfg.learn_dim, cfg.learn_dropout
        # frozen content vectors, row 0 = padding: [num_items + 1, content_dim]; a buffer, never a parameter
        self.register_buffer("content", torch.cat([torch.zeros(1, d), content]))
        self.item_tower = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h), nn.GELU(), nn.Dropout(p), nn.Linear(h, h))
        self.user_adaptor = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h))
        self.pos_emb = nn.Embedding(cfg.learn_max_len, h)
        self.emb_drop = nn.Dropout(p)
        self.blocks = nn.ModuleList([CausalBlock(h, cfg.learn_heads, p) for _ in range(cfg.learn_layers)])
        self.ln = nn.LayerNorm(h)
        self.user_head = nn.Linear(h, h)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    # ---- towers -----------------------------------------------------------------------------------------
    def item_vectors(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Unit item-tower vectors ``[len(rows), dim]`` of 0-based catalogue ``rows`` (all items when None)."""
        x = self.content[1:] if rows is None else self.content[rows + 1]  # [items, content_dim]
        return F.normalize(self.item_tower(x), dim=-1)

    def user_states(self, seqs: torch.Tensor) -> torch.Tensor:
        """``seqs`` [batch, seq] right-padded indices -> unit user vectors [batch, seq, dim] at every position."""
        positions = torch.arange(seqs.shape[1], device=seqs.device)
        x = self.emb_drop(self.user_adaptor(self.content[seqs]) + self.pos_emb(positions))  # [batch, seq, dim]
        for block in self.blocks:
            x = block(x)
        return F.normalize(self.user_head(self.ln(x)), dim=-1)

    def training_loss(self, inputs: torch.Tensor, targets: torch.Tensor, loss: str = "softmax",
                      generator: torch.Generator | None = None, masked: torch.Tensor | None = None) -> torch.Tensor:
        """Contrastive next-item loss at every non-padding position; ``targets`` [batch, seq], 0 = ignore.

        ``softmax``: against every catalogue item. ``infonce``: against the batch's own targets plus
        ``learn_negatives`` uniform samples; candidates are de-duplicated, so a row's gold item appears once
        and no other row's identical target is counted as its negative. ``masked [items]`` bool: items that are
        never negatives (logit -inf, no gradient to their tower output).
        """
        mask = targets > 0
        users = self.user_states(inputs)[mask]  # [positions, dim]
        gold = targets[mask] - 1  # [positions] 0-based catalogue rows
        tau = self.cfg.learn_temperature
        if loss == "softmax":
            logits = users @ self.item_vectors().T / tau  # [positions, items]
            return F.cross_entropy(logits, gold) if masked is None else masked_cross_entropy(logits, gold, masked)
        sampled = torch.randint(0, len(self.item_ids), (self.cfg.learn_negatives,), generator=generator)
        candidates, inverse = torch.unique(torch.cat([gold.cpu(), sampled]), return_inverse=True)
        logits = users @ self.item_vectors(candidates.to(gold.device)).T / tau  # [positions, candidates]
        rows = inverse[:len(gold)].to(gold.device)
        if masked is None:
            return F.cross_entropy(logits, rows)
        return masked_cross_entropy(logits, rows, masked.to(gold.device)[candidates.to(gold.device)])

    # ---- DenseRecommender -------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[str]], batch_size: int = 256, **context) -> torch.Tensor:
        """cosine(user, item) ``[len(histories), num_items]`` from each history's last ``learn_max_len`` items."""
        self.eval()
        device = self.content.device
        table = self.item_vectors()  # [items, dim]
        out = []
        for start in range(0, len(histories), batch_size):
            chunk = histories[start:start + batch_size]
            seqs = torch.zeros(len(chunk), self.cfg.learn_max_len, dtype=torch.long)
            lengths = []
            for row, history in enumerate(chunk):
                idx = [p + 1 for p in self.catalogue_positions(history)][-self.cfg.learn_max_len:]
                if not idx:
                    raise ValueError(f"history {start + row} is empty; LEARN needs at least one item to score from")
                seqs[row, :len(idx)] = torch.tensor(idx)
                lengths.append(len(idx))
            states = self.user_states(seqs[:, :max(lengths)].to(device))  # [batch, width, dim]
            last = states[torch.arange(len(chunk)), torch.tensor(lengths) - 1]  # [batch, dim]
            out.append((last @ table.T).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.item_ids))

    @torch.no_grad()
    def item_embeddings(self) -> np.ndarray:
        """Unit item-tower vectors ``[num_items, dim]`` float32 in ``item_ids`` order (dropout off)."""
        return self.encode_content(self.content[1:])

    @torch.no_grad()
    def encode_content(self, content: np.ndarray | torch.Tensor) -> np.ndarray:
        """Item vectors ``[N, dim]`` for any items' content vectors ``[N, content_dim]``: new items, no retraining."""
        was_training = self.training
        self.eval()
        x = torch.as_tensor(np.asarray(content, dtype=np.float32)).to(self.content.device)
        if x.ndim != 2 or x.shape[1] != self.content.shape[1]:
            raise ValueError(f"content must be [N, {self.content.shape[1]}], got {tuple(x.shape)}")
        out = F.normalize(self.item_tower(x), dim=-1).float().cpu().numpy().copy()
        self.train(was_training)
        return out

    # ---- persistence ------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """``model.safetensors`` (towers + content buffer) + ``learn_config.json``, atomically."""
        from safetensors.torch import save_file

        with atomic_path(path, is_dir=True) as tmp:
            save_file({k: v.contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp / "model.safetensors"))
            atomic_write_json(tmp / "learn_config.json", {"config": dataclasses.asdict(self.cfg),
                                                          "item_ids": self.item_ids, "train_info": self.train_info})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu") -> LEARN:
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "learn_config.json").is_file():
            raise FileNotFoundError(f"{path} is not a saved LEARN model (no learn_config.json); train one with "
                                    "`alignrec learn`")
        meta = json.loads((path / "learn_config.json").read_text())
        state = load_file(str(path / "model.safetensors"))
        fields = {f.name for f in dataclasses.fields(LEARNConfig)}
        cfg = LEARNConfig(**{k: v for k, v in meta["config"].items() if k in fields})
        model = cls(meta["item_ids"], state["content"][1:], cfg)
        model.load_state_dict(state)
        model.train_info = meta.get("train_info", {})
        return model.to(device).eval()


def train_learn(split: SplitDataset, cfg: LEARNConfig, content: np.ndarray, log_file: str | os.PathLike | None = None,
                checkpoint_path: str | os.PathLike | None = None) -> LEARN:
    """Train the towers on ``split.train_sequences()`` only; early-stop on valid NDCG@10 (best weights kept).

    ``content``: ``[num_items, content_dim]`` frozen item vectors in ``split.dataset.item_ids()`` order.
    ``checkpoint_path``: a file saved after every epoch; an interrupted run given the same path resumes and
    ends with the same weights as an uninterrupted one.
    """
    seed_everything(cfg.learn_seed)
    model = LEARN(split.dataset.item_ids(), content, cfg).to(cfg.learn_device)
    inputs, targets = training_windows(split.train_sequences(), model.index, cfg.learn_max_len)
    lengths = (targets > 0).sum(1)  # [windows]
    valid, valid_record = early_stopping_examples(split.eval_examples("valid"), len(model.item_ids),
                                                  cfg.learn_valid_users, cfg.learn_seed, "LEARN")
    loss_kind = cfg.resolved_loss(len(model.item_ids))
    masked = check_mask(training_softmax_mask(split, model.item_ids), len(model.item_ids))  # cold protocol only
    masked = None if masked is None else masked.to(cfg.learn_device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.learn_lr, weight_decay=cfg.learn_weight_decay)
    logger.info("LEARN: %d items (content dim %d), %d training windows, %d valid examples, %s loss%s",
                len(model.item_ids), model.content.shape[1], len(inputs), len(valid), loss_kind,
                "" if masked is None else f", {int(masked.sum())} items without training left out of it")

    def run_epoch(epoch: int) -> float:
        generator = torch.Generator().manual_seed(cfg.learn_seed * 100_003 + epoch)  # resumable: no carried state
        total, steps = 0.0, 0
        for batch in length_bucketed_batches(lengths, cfg.learn_batch_size, generator):
            y = targets[batch]
            width = int((y > 0).sum(1).max())  # drop all-padding columns (right padding)
            loss = model.training_loss(inputs[batch][:, :width].to(cfg.learn_device), y[:, :width].to(cfg.learn_device),
                                       loss=loss_kind, generator=generator, masked=masked)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total, steps = total + loss.item(), steps + 1
        return total / steps

    # what a checkpoint must share to be resumed: all but the device and the epoch budget (raising it is fine)
    same = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("learn_device", "learn_epochs")}
    identity = sha256_json({"config": same,
                            "items": model.item_ids, "train": split.train_sequences(),
                            "valid": list(valid["target"]), "content": hashlib.sha256(model.content.cpu().numpy()).hexdigest(),
                            **({} if masked is None else {"masked": int(masked.sum())})})
    checkpoint = EpochCheckpoint(checkpoint_path, optim, identity) if checkpoint_path else None
    train_with_early_stopping(model, run_epoch, list(valid["history"]), list(valid["target"]),
                              epochs=cfg.learn_epochs, patience=cfg.learn_patience, eval_every=cfg.learn_eval_every,
                              log_file=log_file, desc="learn epochs", checkpoint=checkpoint)
    model.train_info.update({"windows": len(inputs), "loss": loss_kind, **valid_record,
                             **({} if masked is None else {"masked_items": int(masked.sum())})})
    return model
