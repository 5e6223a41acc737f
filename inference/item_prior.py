"""A content prior in the item head: ``item_vector_prior_weight * cos(u, v_i)`` added to the head's logit of item ``i``.

Why: the model reads item text only through its code rows' start; a SASRec with a learned text adaptor reads it
at every step. This prior puts the items' content vectors into decoding itself. ``v_i`` is item ``i``'s vector from
the run's embeddings stage (``<run>/embeddings``: ``vectors.npy`` + ``item_ids.json``, the vectors the tokenizer
read) and ``u`` the mean of the L2-normalised vectors of the history handed to the recommender (a repeated item
counts each time; items without a vector are skipped; no such item or a zero mean: no prior for that row), as the
text retriever row builds its query. The bias enters the head's logits before its softmax
(``inference.item_head_scores.ItemHeadScores``), so the fused score is ``log p(codes) + w * log p_head'(item)`` with
``p_head' = softmax(head logits + prior)``: it steers every depth of the beam and needs the item head (a run trained
with ``train.item_head_weight`` > 0, decoded with an item-head weight > 0). Weight 0 loads nothing and changes
nothing.

Cost: the catalogue's unit vectors live once per recommender, on the model's device, in the head's column order
(``[items, dim]`` float32); per batch, ``u`` is ``[batch, dim]`` and the bias is computed in the head's column
blocks (``[batch, block]`` at a time) and, for the leaf edges a beam step scores, in chunks of at most
``batch * block`` floats.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recdata.errors import ConfigError, UserError
from recdata.item_vectors import IDS_FILE, VECTORS_FILE, ItemEmbeddings

__all__ = ["PRIOR_KEY", "ItemPriorRows", "ItemVectorPrior", "check_item_prior", "item_vectors_fingerprint", "load_item_prior",
           "resolve_item_vectors_dir"]

logger = logging.getLogger(__name__)

PRIOR_KEY = "item_vector_prior_weight"  # the evaluate / cache build / recommend key
EMBEDDINGS_STAGE = "embeddings"  # <run>/embeddings: the pipeline's embeddings stage folder
_UNIT_EPS = 1e-12  # a norm under this is "no direction" (as the text retriever's unit())


class ItemPriorRows:
    """The prior of one batch of rows: ``users [batch, dim]`` (weight x unit history mean; a zero row = no prior)
    against ``table [items, dim]``, the catalogue's unit vectors in the item head's column order."""

    def __init__(self, users: torch.Tensor, table: torch.Tensor, column_of_item: torch.Tensor) -> None:
        self.users, self.table, self.column_of_item = users, table, column_of_item

    def __len__(self) -> int:
        return self.users.shape[0]

    def to(self, device: torch.device | str) -> ItemPriorRows:
        return ItemPriorRows(self.users.to(device), self.table.to(device), self.column_of_item.to(device))

    def columns(self, start: int, width: int, rows: slice = slice(None)) -> torch.Tensor:
        """``[rows, width]`` float32 bias of head columns ``start:start + width`` (a new tensor)."""
        return self.users[rows] @ self.table[start:start + width].T

    def items(self, row: torch.Tensor, items: torch.Tensor, block: int) -> torch.Tensor:
        """``[edges]`` bias of item ``items[e]`` (trie rows) for row ``row[e]``, in chunks of at most
        ``batch * block`` gathered floats."""
        chunk = max(1, len(self) * block // max(1, self.table.shape[1]))
        columns = self.column_of_item[items]
        out = torch.empty(row.shape[0], device=self.users.device)
        for s in range(0, row.shape[0], chunk):
            out[s:s + chunk] = (self.users[row[s:s + chunk]] * self.table[columns[s:s + chunk]]).sum(dim=1)
        return out


class ItemVectorPrior:
    """The catalogue's unit item vectors for the prior, built once per recommender (``inference.llm_recommender``).

    ``item_ids``: the trie's items in row order; ``vectors``: ``ItemEmbeddings`` (any order; ids outside the
    catalogue are ignored; a catalogue item without a vector, or with a zero one, gets no prior and is skipped in
    histories). Refuses vectors that cover no catalogue item (the wrong folder).
    """

    def __init__(self, trie: Any, item_ids: Sequence[str], vectors: ItemEmbeddings, weight: float,
                 device: torch.device | str | None = None, source: str = "item vectors") -> None:
        from inference.item_head_scores import head_columns

        if not weight > 0:
            raise ValueError(f"{PRIOR_KEY} must be > 0 to build the prior, got {weight}")
        if len(item_ids) != trie.num_items:
            raise ValueError(f"{len(item_ids)} item ids for a trie of {trie.num_items} items")
        self.weight = float(weight)
        row = {item: n for n, item in enumerate(vectors.item_ids)}
        have = np.fromiter((item in row for item in item_ids), dtype=bool, count=len(item_ids))
        unit = np.zeros((len(item_ids), vectors.dim), dtype=np.float32)  # [N, dim] item order; zero = no vector
        if have.any():
            picked = vectors.vectors[[row[item] for item, ok in zip(item_ids, have, strict=True) if ok]]
            norms = np.linalg.norm(picked, axis=1, keepdims=True)
            unit[have] = np.where(norms > _UNIT_EPS, picked / np.maximum(norms, _UNIT_EPS), 0.0)
        usable = np.linalg.norm(unit, axis=1) > 0
        if not usable.any():
            raise UserError(f"{source}: none of the {len(item_ids)} catalogue items has a (non-zero) vector; point "
                            f"{PRIOR_KEY} at the run's embeddings folder (vectors.npy + item_ids.json)")
        if not usable.all():
            logger.warning("%s: %d of %d catalogue items have no vector: no content prior for them", source,
                           int((~usable).sum()), len(item_ids))
        _, _, items = head_columns(trie)  # [N] head column -> item
        items = items.cpu()
        self.table = torch.from_numpy(unit)[items].contiguous().to(device)  # [N, dim] in head column order
        self.column_of_item = torch.empty_like(items).scatter_(0, items, torch.arange(len(items))).to(device)
        self.has_vector = usable  # [N] item order, on the host: histories are resolved there

    def rows(self, histories: Sequence[Sequence[int]]) -> ItemPriorRows:
        """The prior of a batch: ``histories[b]``, row ``b``'s history as trie rows (oldest first)."""
        device = self.table.device
        means = torch.zeros(len(histories), self.table.shape[1], device=device)  # [batch, dim]
        for b, history in enumerate(histories):
            kept = [i for i in history if self.has_vector[i]]
            if kept:
                means[b] = self.table[self.column_of_item[torch.as_tensor(kept, device=device)]].mean(dim=0)
        return self._prior_rows(means)

    def query_rows(self, queries: np.ndarray | torch.Tensor) -> ItemPriorRows:
        """The prior of a batch from explicit query vectors ``[batch, dim]`` in the item vectors' space (e.g. a
        request's sentence vector) instead of a history mean; a zero row gets no prior."""
        queries = torch.as_tensor(np.asarray(queries, dtype=np.float32), device=self.table.device)
        if queries.ndim != 2 or queries.shape[1] != self.table.shape[1]:
            raise ValueError(f"queries must be [batch, {self.table.shape[1]}] (the item vectors' width), got "
                             f"{tuple(queries.shape)}")
        return self._prior_rows(queries)

    def _prior_rows(self, queries: torch.Tensor) -> ItemPriorRows:
        """weight x unit(query) per row (zero: no prior) against the catalogue's unit vectors."""
        norms = queries.norm(dim=1, keepdim=True)  # [batch, 1]
        users = torch.where(norms > _UNIT_EPS, queries * (self.weight / norms.clamp(min=_UNIT_EPS)), 0.0)
        return ItemPriorRows(users, self.table, self.column_of_item)


def resolve_item_vectors_dir(model_dir: str | os.PathLike, item_vectors: str | os.PathLike | None) -> Path:
    """The folder of the prior's vectors: ``item_vectors`` when given, else the run's embeddings folder when the
    pipeline's layout gives it (``<run>/<stage>/model`` or its ``merged/`` -> ``<run>/embeddings``); else
    ``ConfigError`` (one line) asking for ``--item_vectors``."""
    if item_vectors:
        folder = Path(item_vectors)
        missing = [name for name in (VECTORS_FILE, IDS_FILE) if not (folder / name).is_file()]
        if missing:
            raise ConfigError(f"--item_vectors {folder}: no {' / '.join(missing)} there; pass a folder holding "
                              f"{VECTORS_FILE} + {IDS_FILE} (e.g. a run's {EMBEDDINGS_STAGE}/)")
        return folder
    model = Path(model_dir).resolve()
    run = model.parents[2] if model.name == "merged" and len(model.parents) > 2 else model.parent.parent
    beside = run / EMBEDDINGS_STAGE
    if (beside / VECTORS_FILE).is_file() and (beside / IDS_FILE).is_file():
        return beside
    raise ConfigError(f"{PRIOR_KEY} needs item vectors: pass --item_vectors DIR ({VECTORS_FILE} + {IDS_FILE}, e.g. "
                      f"a run's {EMBEDDINGS_STAGE}/); none beside {model_dir} ({beside})")


def item_vectors_fingerprint(folder: str | os.PathLike) -> str:
    """sha256 (16 hex) over the prior's two files, so a cache built with other vectors is another cache."""
    import hashlib

    from recdata.io import sha256_file

    digest = hashlib.sha256()
    for name in (VECTORS_FILE, IDS_FILE):
        digest.update(f"{name}:{sha256_file(Path(folder) / name)}\n".encode())
    return digest.hexdigest()[:16]


def check_item_prior(model_dir: str | os.PathLike, weight: float, item_vectors: str | os.PathLike | None = None,
                     item_head_weight: float | None = None) -> Path | None:
    """The vectors folder ``item_vector_prior_weight`` will read, checked before anything loads; None at weight 0.

    ``item_head_weight``: the item-head weight decoding will use (an override; None = the run's own). Raises
    ``ConfigError`` (one line) for a negative weight, a run without an item head, a head weighed 0 (the prior
    would change nothing) and no vectors folder (``resolve_item_vectors_dir``).
    """
    if weight < 0:
        raise ConfigError(f"{PRIOR_KEY} must be >= 0, got {weight:g}")
    if not weight:
        return None
    from trainer import has_item_head, read_item_head_weight

    if not has_item_head(model_dir):
        raise ConfigError(f"{PRIOR_KEY} {weight:g}: {model_dir} was trained without an item head "
                          "(train.item_head_weight 0), so there is no head to put the prior in; drop the key")
    head = read_item_head_weight(model_dir) if item_head_weight is None else item_head_weight
    if not head:
        raise ConfigError(f"{PRIOR_KEY} {weight:g} acts through the item head, which decodes with weight 0 here; "
                          "set item_head_decode_weight > 0 or drop the key")
    return resolve_item_vectors_dir(model_dir, item_vectors)


def load_item_prior(model_dir: str | os.PathLike, weight: float, item_vectors: str | os.PathLike | None = None,
                    item_head_weight: float | None = None) -> dict[str, Any]:
    """What ``TrainedRun.recommender`` takes for ``item_vector_prior_weight`` (``check_item_prior`` first): ``{}``
    at weight 0 (nothing read), else ``{"item_vector_prior_weight": w, "item_vectors": ItemEmbeddings}``."""
    folder = check_item_prior(model_dir, weight, item_vectors, item_head_weight)
    if folder is None:
        return {}
    from recdata.item_vectors import load_embeddings_dir

    logger.info("content prior %s=%g from %s", PRIOR_KEY, weight, folder)
    return {PRIOR_KEY: float(weight), "item_vectors": load_embeddings_dir(folder)}
