"""SASRec (Kang & McAuley 2018) in plain torch: the CF item encoder, the CF baseline, the base to extend.

Causal self-attention over the last ``max_len`` items, learned positions, pre-LayerNorm blocks, item
embeddings shared between input and output. Trained on ``split.train_sequences()`` only; the valid
targets are used for early stopping alone. Index 0 is padding; item ``item_ids[i]`` is index ``i + 1``. Under the
cold-item protocol the items without training are left out of the training loss (``softmax_mask``,
``alignrec.recommenders.softmax_mask``); scoring and early stopping still rank the whole catalogue.

Extension points (override in a subclass, do not fork): ``item_inputs`` (what enters the blocks per item,
e.g. + a knowledge vector), ``output_table`` (the item matrix scored against, e.g. knowledge-augmented),
``final_states`` (the user state from the last hidden state, e.g. joined with user knowledge or passed
through a scenario tower). ``context`` keyword arguments reach ``final_states`` and ``item_inputs``.
Per-row context comes from ``context_for(user_ids)`` (training windows) and ``eval_context(examples)`` (valid
rows); per-position context from ``sequence_labels(split)`` (an integer label per training interaction, e.g. its
scenario: each supervised position gets its target's label as ``target_labels``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignrec.recommenders.base import DenseRecommender, train_with_early_stopping
from alignrec.recommenders.sampled_softmax import (
    NegativeSampler,
    linear_softmax_loss,
    popularity_proposal,
    resolve_loss,
)
from alignrec.recommenders.sasrec_config import SASRecConfig
from alignrec.recommenders.softmax_mask import check_mask
from alignrec.recommenders.valid_sample import early_stopping_examples
from recdata.cold_items import training_softmax_mask
from recdata.io import atomic_path, atomic_write_json
from recdata.split import SplitDataset

logger = logging.getLogger(__name__)


class CausalBlock(nn.Module):
    """Pre-LN causal self-attention + position-wise feed-forward (also LEARN's user tower)."""

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


_Block = CausalBlock  # the former private name, kept for branches that import it


class SASRec(DenseRecommender):
    """Sequences are RIGHT-padded: with a causal mask no real position ever attends to padding."""

    def __init__(self, item_ids: Sequence[str], cfg: SASRecConfig) -> None:
        super().__init__(item_ids)
        self.index = {item_id: i + 1 for i, item_id in enumerate(self.item_ids)}
        self.cfg = cfg
        self.item_emb = nn.Embedding(len(self.item_ids) + 1, cfg.sasrec_dim, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.sasrec_max_len, cfg.sasrec_dim)
        self.emb_drop = nn.Dropout(cfg.sasrec_dropout)
        self.blocks = nn.ModuleList(
            [CausalBlock(cfg.sasrec_dim, cfg.sasrec_heads, cfg.sasrec_dropout) for _ in range(cfg.sasrec_layers)]
        )
        self.ln = nn.LayerNorm(cfg.sasrec_dim)
        nn.init.normal_(self.item_emb.weight, std=cfg.sasrec_dim ** -0.5)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.negative_sampler: NegativeSampler | None = None  # the sampled loss's negatives (set by train_sasrec)
        self.softmax_mask: torch.Tensor | None = None  # [N] bool, items the loss leaves out (set by train_sasrec)

    # ---- model ------------------------------------------------------------------------------------------
    def item_inputs(self, seqs: torch.Tensor, **context) -> torch.Tensor:
        """Extension point: per-position item input ``[batch, seq, dim]`` for right-padded indices ``seqs``."""
        return self.item_emb(seqs) * math.sqrt(self.cfg.sasrec_dim)

    def output_table(self) -> torch.Tensor:
        """Extension point: the ``[num_items, dim]`` matrix that user states are scored against."""
        return self.item_emb.weight[1:]

    def final_states(self, hidden: torch.Tensor, **context) -> torch.Tensor:
        """Extension point: user states ``[rows, dim]`` from hidden states ``[rows, dim]``."""
        return hidden

    def context_for(self, user_ids: Sequence[str]) -> dict:
        """Extension point: per-row ``context`` for these users (training windows, valid rows, evaluation).

        Values are tensors or lists with one entry per row; plain SASRec needs none.
        """
        return {}

    def eval_context(self, examples) -> dict:
        """Extension point: ``context`` for evaluation rows (a ``split.eval_examples`` dataset), e.g. the target
        scenario; default ``context_for`` of their users."""
        return self.context_for(list(examples["user_id"]))

    def sequence_labels(self, split: SplitDataset) -> list[list[int]] | None:
        """Extension point: an integer label >= 0 per training interaction (aligned with
        ``split.train_sequences()``); training passes each supervised position its target's label as
        ``target_labels`` ``[batch, seq]`` (-1 = padding). None (plain SASRec): no labels."""
        return None

    def encode(self, seqs: torch.Tensor, **context) -> torch.Tensor:
        """``seqs`` [batch, seq] right-padded item indices -> hidden states [batch, seq, dim]."""
        positions = torch.arange(seqs.shape[1], device=seqs.device)
        x = self.item_inputs(seqs, **context) + self.pos_emb(positions)
        x = self.emb_drop(x)
        for block in self.blocks:
            x = block(x)
        return self.ln(x)

    def training_loss(self, inputs: torch.Tensor, targets: torch.Tensor, **context) -> torch.Tensor:
        """Next-item loss (``loss_kind``) at every non-padding position; ``targets`` [batch, seq], 0 = ignore.

        ``context`` values are per-row tensors/lists; ``final_states`` receives them repeated per position
        through ``rows`` / ``cols`` (the batch row and the sequence position of each supervised position).
        """
        mask = targets > 0
        where = mask.nonzero()  # [positions, 2] (batch row, sequence position) of each supervised position
        hidden = self.final_states(self.encode(inputs, **context)[mask], rows=where[:, 0], cols=where[:, 1],
                                   **context)  # [positions, dim]
        gold = targets[mask]
        table = self.output_table()
        kind = self.loss_kind()
        if kind != "bce":
            if kind == "sampled" and self.negative_sampler is None:
                raise ValueError("sasrec_loss resolved to 'sampled' but the model has no negative_sampler: train "
                                 "with train_sasrec, or set model.negative_sampler = NegativeSampler(...)")
            masked = None if self.softmax_mask is None else self.softmax_mask.to(gold.device)
            return linear_softmax_loss(kind, hidden, table, gold - 1, sampler=self.negative_sampler, masked=masked)
        if self.softmax_mask is None:
            neg = torch.randint(0, len(self.item_ids), gold.shape, device=gold.device)
        else:  # the one negative per position is drawn among the items the mask keeps
            allowed = (~self.softmax_mask).nonzero().squeeze(1).to(gold.device)  # [kept]
            neg = allowed[torch.randint(0, len(allowed), gold.shape, device=gold.device)]
        pos_logit = (hidden * table[gold - 1]).sum(-1)
        neg_logit = (hidden * table[neg]).sum(-1)
        return F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + \
            F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))

    def loss_kind(self) -> str:
        """The training loss used for this catalogue: ``bce``, or ``sasrec_loss`` resolved (``auto`` by size, ``ce``
        = ``full``) by ``alignrec.recommenders.sampled_softmax.resolve_loss``."""
        if self.cfg.sasrec_loss in ("bce", "ce"):
            return {"bce": "bce", "ce": "full"}[self.cfg.sasrec_loss]
        return resolve_loss(self.cfg.sasrec_loss, len(self.item_ids))

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[str]], batch_size: int = 256, **context) -> torch.Tensor:
        """Scores over the catalogue ``[len(histories), num_items]`` from each history's last position."""
        self.eval()
        device = self.item_emb.weight.device
        table = self.output_table()
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
            chunk_context = {k: v[start:start + batch_size] for k, v in context.items()}
            hidden = self.encode(seqs[:, :width].to(device), **chunk_context)  # [batch, width, dim]
            last = hidden[torch.arange(len(chunk)), torch.tensor(lengths) - 1]  # [batch, dim]
            last = self.final_states(last, rows=torch.arange(len(chunk)), **chunk_context)
            out.append((last @ table.T).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.item_ids))

    def item_embeddings(self) -> np.ndarray:
        """``[num_items, dim]`` float32, in ``item_ids`` order (padding row dropped)."""
        return self.output_table().detach().float().cpu().numpy().copy()

    def _index_of(self, item_id: str) -> int:
        return self.catalogue_positions([item_id])[0] + 1

    # ---- persistence ------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """``model.safetensors`` + ``sasrec_config.json`` (hyper-parameters, the loss ``auto`` resolved to, item ids),
        atomically."""
        from safetensors.torch import save_file

        with atomic_path(path, is_dir=True) as tmp:
            save_file({k: v.contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp / "model.safetensors"))
            atomic_write_json(tmp / "sasrec_config.json", {"config": dataclasses.asdict(self.cfg),
                                                           "loss": self.loss_kind(), "item_ids": self.item_ids})

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
                     max_len: int, with_users: bool = False, labels: Sequence[Sequence[int]] | None = None):
    """Right-padded (inputs, targets) ``[windows, max_len]``: targets are inputs shifted by one.

    A sequence longer than ``max_len + 1`` is cut into windows from its end, so every training transition
    is a target exactly once. Sequences shorter than 2 give no transition. ``with_users`` adds a third
    element: the user id of each window (for per-user ``context``). ``labels`` (one integer per item of each
    sequence) adds a last element: ``target_labels`` ``[windows, max_len]``, the label of each target (-1 = pad).
    """
    inputs, targets, users, target_labels = [], [], [], []
    if labels is not None and len(labels) != len(train_sequences):
        raise ValueError(f"labels has {len(labels)} sequences, train_sequences {len(train_sequences)}")
    for row, (user_id, items) in enumerate(train_sequences):
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
            users.append(user_id)
            if labels is not None:
                target_labels.append(list(labels[row][start + 1:end]) + [-1] * (max_len + 1 - len(window)))
            end = start + 1  # the next window's last target is this window's first input
    if not inputs:
        raise ValueError("no training transition: every training sequence has fewer than 2 items")
    windows = (torch.tensor(inputs, dtype=torch.long), torch.tensor(targets, dtype=torch.long),
               *((users,) if with_users else ()))
    return (*windows, torch.tensor(target_labels, dtype=torch.long)) if labels is not None else windows


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


def train_sasrec(split: SplitDataset, cfg: SASRecConfig, log_file: str | os.PathLike | None = None,
                 model: SASRec | None = None) -> SASRec:
    """Train on ``split.train_sequences()`` only; early-stop on valid NDCG@10 and restore the best weights.

    ``model``: an (extended) SASRec built by the caller; default a plain one over the split's catalogue.
    """
    seed_everything(cfg.sasrec_seed)
    model = (model or SASRec(split.dataset.item_ids(), cfg)).to(cfg.sasrec_device)
    labels = model.sequence_labels(split)  # per-interaction labels (None for plain SASRec)
    inputs, targets, users, *target_labels = training_windows(split.train_sequences(), model.index,
                                                              cfg.sasrec_max_len, with_users=True, labels=labels)
    loss_info = _prepare_loss(model, split)
    context = model.context_for(users)  # per-window side inputs ({} for plain SASRec)
    if target_labels:
        context["target_labels"] = target_labels[0]  # [windows, max_len] label of each target (-1 = padding)
    lengths = (targets > 0).sum(1)  # [windows]
    valid, valid_record = early_stopping_examples(split.eval_examples("valid"), len(model.item_ids),
                                                  cfg.sasrec_valid_users, cfg.sasrec_seed, "SASRec")
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.sasrec_lr, weight_decay=cfg.sasrec_weight_decay)
    generator = torch.Generator().manual_seed(cfg.sasrec_seed)
    logger.info("SASRec: %d items, %d training windows, %d valid examples, %s loss", len(model.item_ids), len(inputs),
                len(valid), loss_info["loss"])

    def run_epoch(epoch: int) -> float:
        total, steps = 0.0, 0
        for batch in length_bucketed_batches(lengths, cfg.sasrec_batch_size, generator):
            x, y = inputs[batch], targets[batch]
            width = int((y > 0).sum(1).max())  # drop all-padding columns (right padding)
            batch_context = {k: _take(v, batch, cfg.sasrec_device) for k, v in context.items()}
            if "target_labels" in batch_context:
                batch_context["target_labels"] = batch_context["target_labels"][:, :width]
            loss = model.training_loss(x[:, :width].to(cfg.sasrec_device), y[:, :width].to(cfg.sasrec_device),
                                       **batch_context)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total, steps = total + loss.item(), steps + 1
        return total / steps

    train_with_early_stopping(model, run_epoch, list(valid["history"]), list(valid["target"]),
                              epochs=cfg.sasrec_epochs, patience=cfg.sasrec_patience,
                              eval_every=cfg.sasrec_eval_every, log_file=log_file, desc="sasrec epochs",
                              valid_context=model.eval_context(valid))
    model.train_info.update({"windows": len(inputs), **loss_info, **valid_record})
    return model


def _prepare_loss(model: SASRec, split: SplitDataset) -> dict:
    """Resolve ``model``'s loss for its catalogue; for ``sampled``, give it a seeded ``NegativeSampler`` whose
    proposal comes from ``split.train_popularity()`` (training interactions only); under the cold-item protocol, its
    ``softmax_mask`` (``recdata.cold_items.training_softmax_mask``). Returns the record for ``train_info``: the loss
    used, when sampled its negatives and alpha, and the count of masked items when there is a mask."""
    cfg, kind = model.cfg, model.loss_kind()
    mask = check_mask(training_softmax_mask(split, model.item_ids), len(model.item_ids))
    model.softmax_mask = None if mask is None else mask.to(model.item_emb.weight.device)
    masked = {} if mask is None else {"masked_items": int(mask.sum())}
    if kind != "sampled":
        model.negative_sampler = None
        return {"loss": kind, **masked}
    counts = split.train_popularity() if cfg.sasrec_negative_alpha else {}
    proposal = popularity_proposal([counts.get(item, 0) for item in model.item_ids], cfg.sasrec_negative_alpha)
    model.negative_sampler = NegativeSampler(proposal, cfg.sasrec_num_negatives, cfg.sasrec_seed)
    return {"loss": kind, "num_negatives": cfg.sasrec_num_negatives, "negative_alpha": cfg.sasrec_negative_alpha,
            **masked}


def _take(value, rows: torch.Tensor, device: str):
    """Rows of a per-window context value (tensor -> device, list -> list)."""
    if isinstance(value, torch.Tensor):
        return value[rows].to(device)
    return [value[int(i)] for i in rows]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (every dense recommender's training starts with it)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
