"""The flat item head: at every item boundary also predict the next item's own token, over the item-id level.

A semantic-ID model scores an item as ``p(cluster) * p(id | cluster)``: every item competes only inside its
cluster once the cluster is chosen, and the cluster is chosen before the item's own token is seen. SASRec's
flat softmax over the whole catalogue is the other factorisation. With an item-id level (a last code token
unique to each item) the same LM head holds both: at the position that predicts the next item's first code,
the logits restricted to the item-id tokens are a flat distribution over the catalogue. This loss trains it
(cross-entropy over the item-id tokens only, so it does not compete with the code loss's full softmax), and
decoding fuses the two (``inference.item_head_scores.item_head_bias``): a hybrid of generative and dense retrieval
in one model, with no second network and no extra forward pass.

At a large catalogue the head's ``[boundaries, N]`` logits are the memory problem; ``item_head_loss`` (the config
key, ``ItemHeadOptions``) picks full, chunked or logQ-corrected sampled softmax from
``alignrec.recommenders.sampled_softmax``, the same implementation as SASRec's. ``item_head_logq_weight`` w adds
``w * log p_train(item)`` to the head's training logits (logit adjustment, Menon et al. 2021): the head then
learns less of the popularity prior, and decoding, which reads the raw logits, ranks the tail higher.
Under the cold-item protocol the objective's ``masked`` items (``trainer.cold_mask``) are left out of its softmax.
With ``lm_loss: chunked`` (``trainer.lm_loss``) the model never builds its full logits; the head's loss then comes
from the last hidden states and the LM head's rows of the item-id tokens (``item_head_loss_from_hidden``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from alignrec.recommenders.sampled_softmax import (
    DEFAULT_CHUNK,
    NegativeSampler,
    column_softmax_loss,
    linear_softmax_loss,
    popularity_proposal,
    resolve_loss,
)
from alignrec.recommenders.softmax_mask import check_mask

IGNORE_INDEX = -100


@dataclass
class ItemHeadTargets:
    """Vocabulary-wide lookups of a catalogue's codes (built once per run from the ``[N, L]`` item token ids)."""

    leaf_tokens: torch.Tensor  # [N] each item's last (own) token id
    first_level: torch.Tensor  # [vocab] bool: token starts an item's code
    leaf_item: torch.Tensor  # [vocab] int64: item index of a last-level token, -1 elsewhere
    span: int  # code length - 1: positions from an item's first code label to its last

    @classmethod
    def from_token_ids(cls, token_ids: np.ndarray, vocab_size: int) -> ItemHeadTargets:
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] < 2:
            raise ValueError(f"an item head needs codes of >= 2 tokens (cluster ... own id), got shape {ids.shape}")
        if np.unique(ids[:, -1]).size != len(ids):
            raise ValueError("an item head needs a last code token unique to every item (tokenizer.item_id_level: "
                             "true); this tokenizer's items share last tokens")
        if np.intersect1d(ids[:, 0], ids[:, -1]).size:
            raise ValueError("an item head needs first-level and last-level code tokens to be distinct")
        first = torch.zeros(vocab_size, dtype=torch.bool)
        first[torch.from_numpy(np.unique(ids[:, 0]))] = True
        leaf_item = torch.full((vocab_size,), -1, dtype=torch.int64)
        leaf_item[torch.from_numpy(ids[:, -1])] = torch.arange(len(ids))
        return cls(torch.from_numpy(ids[:, -1].copy()), first, leaf_item, ids.shape[1] - 1)

    def to(self, device: torch.device) -> ItemHeadTargets:
        return ItemHeadTargets(self.leaf_tokens.to(device), self.first_level.to(device), self.leaf_item.to(device),
                               self.span)


@dataclass
class ItemHeadOptions:
    """The head's loss settings (``AlignRecTrainArguments.item_head_*``), before the catalogue resolves them."""

    loss: str = "auto"  # auto | full | chunked | sampled (resolve_loss)
    num_negatives: int = 2048
    negative_alpha: float = 0.75
    logq_weight: float = 0.0

    @classmethod
    def from_run_args(cls, run_args) -> ItemHeadOptions:
        return cls(run_args.item_head_loss, run_args.item_head_num_negatives, run_args.item_head_negative_alpha,
                   run_args.item_head_logq_weight)


@dataclass
class ItemHeadObjective:
    """The resolved head loss: ``kind`` (full | chunked | sampled), its sampler, the logit adjustment and the mask."""

    kind: str = "full"
    sampler: NegativeSampler | None = None
    log_prior: torch.Tensor | None = None  # [N] logq_weight * log p_train(item), added to training logits
    chunk: int = DEFAULT_CHUNK
    record: dict | None = None  # what the run manifest records (item_head_manifest)
    masked: torch.Tensor | None = None  # [N] bool: items left out of the softmax (cold-item protocol)

    @classmethod
    def build(cls, options: ItemHeadOptions, num_items: int, counts: Callable[[], torch.Tensor],
              seed: int, masked: torch.Tensor | None = None) -> ItemHeadObjective:
        """Resolve ``options`` for ``num_items``; ``counts()`` (the training item targets, ``item_target_counts``)
        is called only when the proposal or the logit adjustment needs popularity."""
        kind = resolve_loss(options.loss, num_items)
        sampled = kind == "sampled"
        popular = None
        if options.logq_weight or (sampled and options.negative_alpha):
            popular = torch.as_tensor(counts(), dtype=torch.float64)
            if popular.shape != (num_items,):
                raise ValueError(f"item target counts have shape {tuple(popular.shape)}, expected ({num_items},)")
        sampler = None
        if sampled:
            counts_or_none = popular if popular is not None else torch.zeros(num_items)
            sampler = NegativeSampler(popularity_proposal(counts_or_none, options.negative_alpha),
                                      options.num_negatives, seed)
        log_prior = None
        if options.logq_weight:  # add-one smoothing: an item never seen as a target keeps a finite prior
            log_prior = (options.logq_weight * ((popular + 1) / (popular.sum() + num_items)).log()).float()
        record = {"loss": kind, "logq_weight": options.logq_weight,
                  **({"num_negatives": options.num_negatives, "negative_alpha": options.negative_alpha}
                     if sampled else {})}
        return cls(kind, sampler, log_prior, DEFAULT_CHUNK, record, check_mask(masked, num_items))

    def to(self, device: torch.device) -> ItemHeadObjective:
        prior = self.log_prior.to(device) if self.log_prior is not None else None
        masked = self.masked.to(device) if self.masked is not None else None
        return ItemHeadObjective(self.kind, self.sampler, prior, self.chunk, self.record, masked)


def head_positions(labels: torch.Tensor, targets: ItemHeadTargets) -> tuple[torch.Tensor, ...] | None:
    """``(rows, cols, item)`` ``[M]`` of the supervised item boundaries in ``labels [B, T]``, or None.

    ``labels[t]`` is the token at ``t``; the logits at ``t - 1`` predict it; ``-100`` = not supervised. A position
    qualifies when the token it predicts is a first-level code and the label ``span`` tokens later is that item's
    own token; ``item`` is that item's index.
    """
    next_labels = labels[:, 1:]  # [B, T-1]: what the logits at each position predict
    width = next_labels.shape[1] - targets.span
    if width <= 0:
        return None
    starts = next_labels[:, :width]
    ends = next_labels[:, targets.span:]
    is_start = (starts >= 0) & targets.first_level[starts.clamp(min=0)]
    item = targets.leaf_item[ends.clamp(min=0)]
    keep = is_start & (ends >= 0) & (item >= 0)
    if not bool(keep.any()):
        return None
    rows, cols = keep.nonzero(as_tuple=True)
    return rows, cols, item[rows, cols]


def _head_plan(labels: torch.Tensor, targets: ItemHeadTargets, objective: ItemHeadObjective | None, exact: bool):
    """The supervised item boundaries ``(rows, cols, item)``, the objective and the softmax kind to use (evaluation
    replaces a sampled loss by the exact chunked one), or None where no boundary is supervised."""
    found = head_positions(labels, targets)
    if found is None:
        return None
    objective = objective or ItemHeadObjective()
    return (*found, objective, "chunked" if exact and objective.kind == "sampled" else objective.kind)


def item_head_loss(logits: torch.Tensor, labels: torch.Tensor, targets: ItemHeadTargets,
                   objective: ItemHeadObjective | None = None, exact: bool = False) -> torch.Tensor | None:
    """Mean cross-entropy of the flat item head over a batch, or None where no item boundary is supervised.

    ``logits [B, T, V]`` and ``labels [B, T]`` as a causal LM sees them; the boundaries are ``head_positions``,
    the head's logits those of the item-id tokens at the same position. ``objective``: the resolved loss (None =
    full softmax, no adjustment). ``exact`` (evaluation) replaces a sampled loss by the chunked exact one, so
    held-out numbers are the true head CE at bounded memory.
    """
    plan = _head_plan(labels, targets, objective, exact)
    if plan is None:
        return None
    rows, cols, item, objective, kind = plan
    flat = logits.reshape(-1, logits.shape[-1])  # [B*T, V]: a view of the model's logits
    return column_softmax_loss(kind, flat, rows * logits.shape[1] + cols, targets.leaf_tokens, item,
                               bias=objective.log_prior, sampler=objective.sampler, chunk=objective.chunk,
                               masked=objective.masked)


def item_head_loss_from_hidden(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               labels: torch.Tensor, targets: ItemHeadTargets,
                               objective: ItemHeadObjective | None = None, exact: bool = False) -> torch.Tensor | None:
    """``item_head_loss`` from the last hidden states ``hidden [B, T, H]`` and the LM head (``weight [V, H]``,
    ``bias [V]`` or None) instead of the full logits (``lm_loss: chunked``, ``trainer.lm_loss``): the same loss, with
    the head's logits built only at the boundaries and only for the item-id tokens (``linear_softmax_loss`` with
    ``columns`` = the items' own tokens)."""
    plan = _head_plan(labels, targets, objective, exact)
    if plan is None:
        return None
    rows, cols, item, objective, kind = plan
    leaf = targets.leaf_tokens
    item_bias = None if bias is None else bias[leaf].float()  # [N] the head's bias on the item-id tokens
    if objective.log_prior is not None:
        item_bias = objective.log_prior if item_bias is None else item_bias + objective.log_prior
    return linear_softmax_loss(kind, hidden[rows, cols], weight, item, sampler=objective.sampler,
                               chunk=objective.chunk, bias=item_bias, columns=leaf, masked=objective.masked)


def item_target_counts(dataset, targets: ItemHeadTargets, batch_size: int = 1024) -> torch.Tensor:
    """``[N]`` int64: how often each item is a head target in a prepared training set (a ``labels`` column), by
    ``head_positions``: the training popularity exactly as the head sees it."""
    if not hasattr(dataset, "__len__") or "labels" not in (dataset.column_names or []):
        raise ValueError("item_head_logq_weight and a popularity proposal (item_head_negative_alpha > 0 with the "
                         "sampled loss) count item targets in the training set, which needs a map-style dataset "
                         "with labels; set both to 0 for a streaming dataset")
    counts = torch.zeros(len(targets.leaf_tokens), dtype=torch.int64)
    for batch in dataset.select_columns(["labels"]).iter(batch_size=batch_size):
        rows = batch["labels"]
        labels = torch.full((len(rows), max(len(r) for r in rows)), IGNORE_INDEX, dtype=torch.int64)
        for i, row in enumerate(rows):
            labels[i, :len(row)] = torch.as_tensor(row, dtype=torch.int64)
        found = head_positions(labels, targets)
        if found is not None:
            counts += torch.bincount(found[2], minlength=len(counts))
    return counts


MANIFEST_KEY = "item_head"  # alignrec_train.json: {"loss_weight": w, "decode_weight": lambda}; absent = no head


def decode_item_head_weight(run_args) -> float:
    """The fusion weight decoding uses for a run trained with ``run_args`` (0 without an item head)."""
    return float(run_args.item_head_decode_weight) if run_args.item_head_weight else 0.0


def item_head_manifest(run_args, objective: ItemHeadObjective | None = None) -> dict:
    """The manifest entry naming a run's item head, so every consumer decodes it as ranking validation did;
    with the trainer's resolved ``objective``, also the loss it trained with (``loss``: kind, negatives, w)."""
    if not run_args.item_head_weight:
        return {}
    entry = {"loss_weight": float(run_args.item_head_weight), "decode_weight": decode_item_head_weight(run_args)}
    if objective is not None and objective.record:
        entry["loss"] = dict(objective.record)
    return {MANIFEST_KEY: entry}


def read_item_head_weight(run_dir) -> float:
    """The decoding fusion weight of a finished run (0.0 for a run without an item head)."""
    from trainer.export import read_manifest

    return float(read_manifest(run_dir).get(MANIFEST_KEY, {}).get("decode_weight", 0.0))


def has_item_head(run_dir) -> bool:
    """Whether a finished run was trained with the flat item head (its manifest names one, whatever its weight)."""
    from trainer.export import read_manifest

    return MANIFEST_KEY in read_manifest(run_dir)
