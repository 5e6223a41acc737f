""""SASRec + knowledge" (REKI / KAR): LLM knowledge vectors, through the hybrid-expert adaptor, lift SASRec.

Built on the one SASRec's extension points, not a fork:

- ``item_inputs`` / ``output_table``: every item's embedding is its SASRec embedding + its augmented
  (adaptor-mapped) item-knowledge vector, at the input and in the scored table alike (SASRec ties them);
- ``final_states``: the user state is the last hidden state + the user's augmented preference vector;
- ``context_for``: maps ``user_ids`` to rows of the user-knowledge table (0 = no knowledge);
- ``sequence_labels``: marks the training targets the user vector may help predict. A user's knowledge read
  the first ``user_history_items[u]`` items of its training part, so only later targets get the vector: with
  it at every position the model learns to read its targets off the knowledge, which evaluation (targets all
  after the training part) never rewards. Evaluation and serving always add it.

Items / users without knowledge (individual mode on a sample) get a zero augmentation, never the adaptor's
bias. The adaptor trains jointly with SASRec; ``prestore()`` then runs it once over every item and user and
freezes the results, so serving reads the prestored vectors (``save_augmented`` / ``load_augmented``:
safetensors + id lists) and never runs the adaptor or the LLM.

Cost: the adaptor over the whole catalogue is the expensive part (tens of thousands of items x several expert
MLPs). A training step's input side runs it on the batch's distinct items only (the output table needs every
item); ``scoring_session`` (entered by ``full_ranking_metrics`` and ``score``) computes the eval-mode item table
once for all the chunks it scores, and drops it on exit so training goes on with a live adaptor.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from alignrec.recommenders.knowledge_adaptor import HybridExpertAdaptor
from alignrec.recommenders.sasrec import SASRec
from alignrec.recommenders.sasrec_config import SASRecConfig
from recdata.io import atomic_path, atomic_write_json
from recdata.split import SplitDataset

__all__ = ["KnowledgeSASRec", "knowledge_target_labels", "load_augmented"]


def knowledge_target_labels(split: SplitDataset, user_history_items: Mapping[str, int]) -> list[list[int]]:
    """Per training interaction (``split.train_sequences()`` order): 1 where a user's knowledge may help predict it.

    A user's knowledge read the first ``user_history_items[u]`` items of its training part, so only the targets
    from there on get it (a user missing from the mapping: none). Shared by every model that reads user
    knowledge (``KnowledgeSASRec``, ``LLM4MSRSASRec``), so the holdout rule is written once.
    """
    labels = []
    for user_id, items in split.train_sequences():
        cutoff = user_history_items.get(str(user_id), len(items))
        labels.append([int(i >= cutoff) for i in range(len(items))])
    return labels


def _table(ids: Sequence[str], vectors: np.ndarray, wanted: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[len(wanted) + 1, dim]`` knowledge rows in ``wanted`` order (row 0 = padding) and a has-knowledge mask."""
    row = {str(i): r for r, i in enumerate(ids)}
    table = torch.zeros(len(wanted) + 1, vectors.shape[1])
    has = torch.zeros(len(wanted) + 1, dtype=torch.bool)
    for position, item_id in enumerate(wanted, start=1):
        if item_id in row:
            table[position] = torch.from_numpy(np.asarray(vectors[row[item_id]], dtype=np.float32))
            has[position] = True
    return table, has


class KnowledgeSASRec(SASRec):
    """SASRec whose item and user representations add adaptor-mapped LLM knowledge vectors.

    ``item_knowledge`` / ``user_knowledge``: ``(ids, vectors [n, K])`` from ``alignrec knowledge encode``
    (item and user vectors must share the text encoder, hence ``K``; ``([], zeros [0, K])`` leaves a kind out). Ids
    outside the catalogue are ignored. ``user_history_items``: ``{user: n}``, how many leading training items
    each user's knowledge read (``alignrec knowledge encode`` stores it); a user missing there never gets its
    vector during training.
    """

    def __init__(self, item_ids: Sequence[str], cfg: SASRecConfig,
                 item_knowledge: tuple[Sequence[str], np.ndarray],
                 user_knowledge: tuple[Sequence[str], np.ndarray], *,
                 user_history_items: Mapping[str, int],
                 experts_shared: int = 2, experts_per_kind: int = 2, adaptor_hidden: int = 128,
                 adaptor_dropout: float = 0.1) -> None:
        super().__init__(item_ids, cfg)
        self.user_history_items = {str(u): int(n) for u, n in user_history_items.items()}
        item_vectors, user_vectors = np.asarray(item_knowledge[1]), np.asarray(user_knowledge[1])
        if item_vectors.ndim != 2 or user_vectors.ndim != 2 or item_vectors.shape[1] != user_vectors.shape[1]:
            raise ValueError(f"item and user knowledge must be [n, K] with the same K, got {item_vectors.shape} and "
                             f"{user_vectors.shape}; encode both with the same text encoder")
        self.user_ids = [str(u) for u in user_knowledge[0]]
        self.user_row = {u: r for r, u in enumerate(self.user_ids, start=1)}
        item_table, item_has = _table(item_knowledge[0], item_vectors, self.item_ids)
        user_table, user_has = _table(self.user_ids, user_vectors, self.user_ids)
        self.register_buffer("item_knowledge", item_table)  # [items + 1, K]
        self.register_buffer("item_has", item_has)  # [items + 1]
        self.register_buffer("user_knowledge", user_table)  # [users + 1, K]
        self.register_buffer("user_has", user_has)  # [users + 1]
        self.adaptor_args = {"experts_shared": experts_shared, "experts_per_kind": experts_per_kind,
                             "adaptor_hidden": adaptor_hidden, "adaptor_dropout": adaptor_dropout}
        # Output scaled like SASRec's item embeddings (std dim^-0.5), so knowledge starts as a perturbation.
        self.adaptor = HybridExpertAdaptor(item_vectors.shape[1], cfg.sasrec_dim, ("item", "user"), experts_shared,
                                           experts_per_kind, adaptor_hidden, adaptor_dropout,
                                           out_scale=cfg.sasrec_dim ** -0.5)
        self.prestored: dict[str, torch.Tensor] | None = None
        self.session_items: torch.Tensor | None = None  # [items + 1, dim] eval-mode table inside scoring_session

    # ---- augmented vectors ---------------------------------------------------------------------------------
    def augmented(self, kind: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``[rows + 1, dim]`` augmented vectors of every item / user (row 0 and rows without knowledge = 0), or
        of the table ``rows`` only (a batch's users: the adaptor runs on those, not on every user)."""
        if self.prestored is not None:
            return self.prestored[kind] if rows is None else self.prestored[kind][rows]
        knowledge, has = (self.item_knowledge, self.item_has) if kind == "item" else (self.user_knowledge, self.user_has)
        if rows is not None:
            knowledge, has = knowledge[rows], has[rows]
        out, _ = self.adaptor(knowledge, kind)  # [rows, dim]
        return out * has.unsqueeze(-1).to(out.dtype)

    @torch.no_grad()
    def prestore(self) -> KnowledgeSASRec:
        """Run the adaptor once over every item and user and serve those vectors from now on."""
        self.eval()
        self.prestored = None
        self.prestored = {kind: self.augmented(kind).detach().clone() for kind in ("item", "user")}
        return self

    def _items(self) -> torch.Tensor:
        if self.session_items is not None and not self.training:
            return self.session_items
        return self.item_emb.weight + self.augmented("item")  # [items + 1, dim]

    @contextmanager
    def scoring_session(self) -> Iterator[None]:
        """Compute the eval-mode item table once and serve it to every ``score`` inside (validation scores the
        catalogue chunk after chunk with fixed weights); on exit the adaptor is live again, since training goes on.

        Only eval mode reads the table, so a ``train()`` inside still trains the adaptor. Prestored vectors are
        already fixed: nothing to do. Nested sessions reuse the outer table.
        """
        if self.prestored is not None or self.session_items is not None:
            yield
            return
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                self.session_items = self._items().detach()
        finally:
            self.train(was_training)
        try:
            yield
        finally:
            self.session_items = None

    def score(self, histories: Sequence[Sequence[str]], batch_size: int = 256, **context) -> torch.Tensor:
        """SASRec's ``score`` inside a ``scoring_session``: the item table is computed once, not per batch."""
        with self.scoring_session():
            return super().score(histories, batch_size=batch_size, **context)

    # ---- extension points ----------------------------------------------------------------------------------
    def item_inputs(self, seqs: torch.Tensor, **context) -> torch.Tensor:
        """ID embedding + augmented knowledge of each position's item, ``[batch, seq, dim]``.

        The adaptor runs on the distinct items of ``seqs`` only (row 0 = padding gets zero knowledge via
        ``item_has``), not on the catalogue: in eval mode the same values as gathering from the full table (within
        float rounding). In training each distinct item draws one adaptor-dropout mask, as a full-table pass would;
        the input and output sides draw independent masks, as before.
        """
        if self.session_items is not None and not self.training:
            items = self.session_items[seqs]
        else:
            rows, inverse = torch.unique(seqs, return_inverse=True)
            items = self.item_emb.weight[seqs] + self.augmented("item", rows)[inverse]
        return items * math.sqrt(self.cfg.sasrec_dim)  # [batch, seq, dim]

    def output_table(self) -> torch.Tensor:
        return self._items()[1:]

    def final_states(self, hidden: torch.Tensor, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None,
                     user_index: torch.Tensor | None = None, target_labels: torch.Tensor | None = None,
                     **context) -> torch.Tensor:
        """hidden + the user's augmented vector; in training only where ``target_labels`` (from
        ``sequence_labels``) allow it."""
        if user_index is None:
            return hidden
        users = user_index.to(hidden.device)
        if rows is not None:
            users = users[rows.to(hidden.device)]
        user = self.augmented("user", users)  # [rows, dim]
        if target_labels is not None and cols is not None:
            allowed = target_labels.to(hidden.device)[rows.to(hidden.device), cols.to(hidden.device)] > 0
            user = user * allowed.unsqueeze(-1).to(user.dtype)
        return hidden + user

    def sequence_labels(self, split: SplitDataset) -> list[list[int]]:
        """1 for the training targets after what the user's knowledge read, else 0."""
        return knowledge_target_labels(split, self.user_history_items)

    def context_for(self, user_ids: Sequence[str]) -> dict:
        """``user_index``: the user-knowledge row of each user (0 = unknown user: no augmentation)."""
        return {"user_index": torch.tensor([self.user_row.get(str(u), 0) for u in user_ids], dtype=torch.long)}

    # ---- persistence ---------------------------------------------------------------------------------------
    def save_augmented(self, path: str | os.PathLike) -> None:
        """Prestored vectors: ``item_vectors.safetensors`` / ``user_vectors.safetensors`` + id lists, atomically."""
        from safetensors.torch import save_file

        if self.prestored is None:
            self.prestore()
        with atomic_path(path, is_dir=True) as tmp:
            for kind, ids in (("item", self.item_ids), ("user", self.user_ids)):
                rows = self.prestored[kind][1:].contiguous().cpu()  # [n, dim] in ids order
                save_file({"vectors": rows}, str(tmp / f"{kind}_vectors.safetensors"),
                          metadata={f"{kind}_ids": json.dumps(ids), "kind": f"augmented-{kind}"})
                (tmp / f"{kind}_ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
            atomic_write_json(tmp / "augmented.json", {"dim": self.cfg.sasrec_dim, "items": len(self.item_ids),
                                                       "users": len(self.user_ids)})

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """SASRec's files (weights incl. knowledge tables and adaptor) + ``knowledge.json`` + ``augmented/``."""
        if self.prestored is None:
            self.prestore()
        super().save_pretrained(path)
        atomic_write_json(Path(path) / "knowledge.json", {"user_ids": self.user_ids,
                                                          "knowledge_dim": int(self.item_knowledge.shape[1]),
                                                          **self.adaptor_args})
        self.save_augmented(Path(path) / "augmented")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu") -> KnowledgeSASRec:
        """Load a saved model; it serves from the prestored ``augmented/`` vectors (the adaptor is not run)."""
        import dataclasses

        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "knowledge.json").is_file():
            raise FileNotFoundError(f"{path} is not a saved SASRec + knowledge (no knowledge.json); train one first")
        meta = json.loads((path / "sasrec_config.json").read_text())
        extra = json.loads((path / "knowledge.json").read_text())
        fields = {f.name for f in dataclasses.fields(SASRecConfig)}
        cfg = SASRecConfig(**{k: v for k, v in meta["config"].items() if k in fields})
        dim, users = extra.pop("knowledge_dim"), extra.pop("user_ids")
        empty = np.zeros((0, dim), np.float32)
        model = cls(meta["item_ids"], cfg, ([], empty), (users, np.zeros((len(users), dim), np.float32)),
                    user_history_items={}, **extra)  # serving: the prestored vectors are added to every state
        model.load_state_dict(load_file(str(path / "model.safetensors")))  # restores the knowledge tables too
        return model.use_augmented(path / "augmented").to(device).eval()

    def use_augmented(self, path: str | os.PathLike) -> KnowledgeSASRec:
        """Serve from prestored vectors on disk (ids must match this model's catalogue and users)."""
        tables = {}
        for kind, ids in (("item", self.item_ids), ("user", self.user_ids)):
            stored_ids, vectors = load_augmented(path, kind)
            if stored_ids != ids:
                raise ValueError(f"{path}: {kind} ids differ from this model's {kind}s; prestore from this model")
            tables[kind] = torch.cat([torch.zeros(1, vectors.shape[1]), torch.from_numpy(vectors)])
        self.prestored = tables
        return self

    def _apply(self, fn, *args, **kwargs):  # keep prestored tables on the module's device
        out = super()._apply(fn, *args, **kwargs)
        if self.prestored is not None:
            self.prestored = {k: fn(v) for k, v in self.prestored.items()}
        return out


def load_augmented(path: str | os.PathLike, kind: str) -> tuple[list[str], np.ndarray]:
    """``(ids, vectors [n, dim])`` of prestored ``kind`` ('item' | 'user') vectors in ``path``."""
    from safetensors import safe_open

    file = Path(path) / f"{kind}_vectors.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; write it with `alignrec knowledge train`")
    with safe_open(str(file), framework="np") as f:
        vectors = f.get_tensor("vectors")
    ids = (Path(path) / f"{kind}_ids.txt").read_text(encoding="utf-8").splitlines()
    if len(ids) != vectors.shape[0]:
        raise ValueError(f"{file}: {vectors.shape[0]} vectors but {len(ids)} ids in {kind}_ids.txt")
    return ids, vectors
