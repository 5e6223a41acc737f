"""Content in the item-id rows (``content_rows: adaptor``): each item's own token row is a free row plus a learned
adaptor of the item's vector, trained end to end.

``new_rows_init: item_vectors`` puts the item vectors into the rows at step 0 only: afterwards a tail item's row
moves on the few steps where the item appears and its text is never read again. The content SASRec
(``alignrec/recommenders/knowledge_sasrec.py``) instead adds a learned projection of the text vector to every
item's ID embedding all through training, so what the head items teach the projection reaches the tail; it
beats the ID-only SASRec. Here the same: the row of item ``i``'s own token is ``free_i + adaptor(v_i)`` on the
input side and in the output head (a tied head is the same matrix; an untied one gets its own adaptor), so the
code loss, the item head and decoding all score items with rows that read their content.

How: a ``torch.nn.utils.parametrize`` parametrization of the embedding weight (the item-id rows += adaptor of
their vectors, every other row unchanged). The model stays the HF model the Trainer trains, checkpoints and
reloads (``load_best_model_at_end``, resume); the run's final save bakes it (``bake_content_rows``), so the
exported folder is a plain HF model holding the effective rows that every consumer loads unchanged.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from recdata.errors import ConfigError, UserError
from trainer.embedding_rows import is_tied

__all__ = ["CONTENT_ROWS", "MANIFEST_KEY", "ContentRows", "attach_content_rows", "bake_content_rows",
           "build_adaptor", "content_rows_manifest", "content_rows_of", "setup_content_rows", "standardise"]

logger = logging.getLogger(__name__)

CONTENT_ROWS = ("none", "adaptor")
MANIFEST_KEY = "content_rows"  # alignrec_train.json: what trained the rows; the exported weights hold them baked
WEIGHT = "weight"


def build_adaptor(in_dim: int, width: int, hidden: int, dropout: float) -> nn.Sequential:
    """Item vector -> row offset: linear (``hidden=0``; dropout on its input) or a GELU MLP (dropout on the hidden
    layer, as the content SASRec's experts). The last layer starts at zero, so at step 0 the model is exactly the
    one without the adaptor (the free rows keep their start, e.g. ``new_rows_init: item_vectors``)."""
    if hidden:
        net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))
    else:
        net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, width))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def standardise(vectors: np.ndarray) -> np.ndarray:
    """Centred and scaled to unit entry std: the catalogue's mean vector (shared by every item, so no content) is
    removed and the adaptor's learning rate means the same for any encoder (unit-norm MiniLM, fused, LLM pools)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    std = x.std()
    if std == 0:
        raise UserError("item vectors are all identical: they carry no content for content_rows=adaptor")
    return (x / std).astype(np.float32)


class ContentRows(nn.Module):
    """Parametrization ``weight [V, d] -> weight`` with row ``token_ids[i]`` += ``adaptor(vectors[i])``.

    ``token_ids`` and ``vectors`` are (persistent) buffers, so a checkpoint carries exactly what its rows read.
    """

    def __init__(self, token_ids: torch.Tensor, vectors: torch.Tensor, width: int, hidden: int = 0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if token_ids.ndim != 1 or vectors.ndim != 2 or len(token_ids) != len(vectors):
            raise ValueError(f"need token_ids [N] and vectors [N, k], got {tuple(token_ids.shape)} and "
                             f"{tuple(vectors.shape)}")
        # own copies: an untied head's adaptor must not share storage with the input's (HF refuses to save that)
        self.register_buffer("token_ids", token_ids.long().clone())  # [N]
        self.register_buffer("vectors", vectors.float().clone())  # [N, k]
        self.adaptor = build_adaptor(vectors.shape[1], width, hidden, dropout)
        self.hooks: list = []  # state-dict hooks of a tied head (``attach_content_rows``), removed when baked

    def delta(self) -> torch.Tensor:
        """``[N, d]`` the adaptor's offset of each item-id row."""
        return self.adaptor(self.vectors.to(self.adaptor[-1].weight.dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.index_add(0, self.token_ids, self.delta().to(weight.dtype))  # out of place: [V, d]


def content_rows_of(module: nn.Module | None) -> ContentRows | None:
    """The ``ContentRows`` parametrizing ``module.weight``, or None."""
    if module is None or not parametrize.is_parametrized(module, WEIGHT):
        return None
    found = [p for p in module.parametrizations[WEIGHT] if isinstance(p, ContentRows)]
    return found[0] if found else None


def attach_content_rows(model, token_ids: torch.Tensor, vectors: torch.Tensor, hidden: int = 0,
                        dropout: float = 0.0) -> list[ContentRows]:
    """Parametrize the input embeddings and the output head (a tied head shares the input's adaptor; an untied
    one gets its own); returns the adaptors, one per distinct matrix."""
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if content_rows_of(embed) is not None:
        raise ValueError("the model's embeddings already carry content rows")
    tied = is_tied(model)  # before parametrizing: afterwards each ``.weight`` is a freshly computed tensor
    rows = [ContentRows(token_ids, vectors, embed.embedding_dim, hidden, dropout)]
    parametrize.register_parametrization(embed, WEIGHT, rows[0])
    if head is not None and tied:
        parametrize.register_parametrization(head, WEIGHT, rows[0])  # same Parameter, same adaptor
        rows[0].hooks = _serialise_tied_once(model, embed, head)
    elif head is not None:
        rows.append(ContentRows(token_ids, vectors, head.weight.shape[1], hidden, dropout))
        parametrize.register_parametrization(head, WEIGHT, rows[1])
    return rows


def _serialise_tied_once(model, embed: nn.Module, head: nn.Module) -> list:
    """A tied head's parametrization holds the input's Parameter and adaptor under a second name; HF's save refuses
    shared tensors it does not know as tied. Drop the head's copies from the state dict, restore them on load."""
    names = {id(m): name for name, m in model.named_modules()}
    keep = f"{names[id(embed)]}.parametrizations.{WEIGHT}."
    copy = f"{names[id(head)]}.parametrizations.{WEIGHT}."

    def drop_copies(module, state_dict, prefix, local_metadata) -> None:
        for key in [k for k in state_dict if k.startswith(prefix + copy)]:
            del state_dict[key]

    def restore_copies(module, state_dict, prefix, *args) -> None:
        for key in [k for k in state_dict if k.startswith(prefix + keep)]:
            state_dict[prefix + copy + key[len(prefix + keep):]] = state_dict[key]

    return [model.register_state_dict_post_hook(drop_copies), model.register_load_state_dict_pre_hook(restore_copies)]


@torch.no_grad()
def bake_content_rows(model) -> int:
    """Write the effective rows (eval mode: no adaptor dropout) into the weights and remove the parametrizations:
    the model is a plain HF model again, a tied head still the same Parameter. Returns the matrices baked."""
    modules = [m for m in dict.fromkeys([model.get_input_embeddings(), model.get_output_embeddings()])
               if content_rows_of(m) is not None]
    groups: dict[int, list[nn.Module]] = {}
    for module in modules:
        rows = content_rows_of(module)
        rows.eval()
        for handle in rows.hooks:
            handle.remove()
        rows.hooks = []
        groups.setdefault(id(module.parametrizations[WEIGHT].original), []).append(module)
    for group in groups.values():  # a tied head shares the input's Parameter: written once, by the input
        for module in group[1:]:
            parametrize.remove_parametrizations(module, WEIGHT, leave_parametrized=False)
        parametrize.remove_parametrizations(group[0], WEIGHT, leave_parametrized=True)
    return len(groups)


def setup_content_rows(model, hf_tokenizer, item_tokenizer, args, seed: int = 0) -> list[ContentRows]:
    """Apply ``args.content_rows`` (``trainer.config.ModelArguments``) after the code rows are started; the
    vectors are the tokenizer's input vectors from ``args.item_vectors_dir``, read as ``new_rows_init:
    item_vectors`` reads them. Returns the adaptors ([] for ``none``)."""
    if args.content_rows == "none":
        return []
    from transformers.integrations import is_deepspeed_zero3_enabled

    from trainer.item_vector_rows import load_item_vectors

    if is_deepspeed_zero3_enabled():
        raise ConfigError("content_rows=adaptor rewrites whole embedding matrices every step, which ZeRO-3 "
                          "partitions; use ZeRO-2 (ds_configs) or content_rows=none")
    token_ids = np.asarray(item_tokenizer.item_token_ids(hf_tokenizer))[:, -1]  # [N] each item's own token
    if np.unique(token_ids).size != len(token_ids):
        raise UserError("content_rows=adaptor needs a last code token unique to every item (tokenizer.item_id_level: "
                        "true); this item tokenizer's items share last tokens")
    embeddings = load_item_vectors(args.item_vectors_dir, item_tokenizer, "content_rows=adaptor")
    with torch.random.fork_rng(devices=[]):  # the adaptor's init leaves the global stream as without it
        torch.manual_seed(seed)
        rows = attach_content_rows(model, torch.from_numpy(token_ids.astype(np.int64)),
                                   torch.from_numpy(standardise(embeddings.vectors)), args.content_rows_hidden,
                                   args.content_rows_dropout)
    logger.info("content rows: %d item-id rows += adaptor(%d-dim item vectors from %s), hidden %d, %s head",
                len(token_ids), embeddings.dim, args.item_vectors_dir, args.content_rows_hidden,
                "tied" if len(rows) == 1 else "untied")
    return rows


def content_rows_manifest(args) -> dict:
    """The manifest entry of a run trained with content rows (baked into the saved weights: consumers need
    nothing); {} without."""
    if args.content_rows == "none":
        return {}
    return {MANIFEST_KEY: {"mode": args.content_rows, "hidden": int(args.content_rows_hidden),
                           "dropout": float(args.content_rows_dropout), "item_vectors_dir": args.item_vectors_dir,
                           "baked": True}}
