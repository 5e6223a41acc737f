"""Trained rows for items without training (``cold_rows: fitted``, the cold-item protocol).

Under the protocol a cold item's own token (the item-id level) is masked out of every training softmax
(``trainer.cold_mask``), so its input and output rows end training where they started: the content start
(``new_rows_init: item_vectors``) at the scale and centre of the rows before training, or the model's random
init. The warm rows moved during training (their scale, their centre, the popularity the output rows absorbed),
so the untouched cold rows are no longer on the trained rows' footing: measured on ML-100K, the LLM ranks them
over warm items for every user. ``fitted`` replaces each cold item's rows, after training, by a ridge map from
the item vectors (the tokenizer's input vectors) to the trained rows, fitted on the warm items
(``recdata.ridge_fill``): the row a warm item with this content ended with. A new item that arrives after
training is the same problem, and this is its answer too.

Rows are read and written through what wraps the embedding modules (peft trainable tokens, modules_to_save
copies), so the saved model, adapter or full, carries the fitted rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from recdata.errors import UserError
from recdata.ridge_fill import ridge_fill

logger = logging.getLogger(__name__)

__all__ = ["COLD_ROWS", "MANIFEST_KEY", "check_cold_rows", "fill_cold_rows", "fit_trained_cold_rows",
           "own_tokens_unique", "read_rows", "resolve_cold_rows", "write_rows"]

COLD_ROWS = ("auto", "start", "fitted")
MANIFEST_KEY = "cold_rows"  # alignrec_train.json, under the protocol: {"mode", and when fitted fill_cold_rows' record}


def resolve_cold_rows(mode: str, model_init: str, can_fit: bool) -> str:
    """``auto``: ``fitted`` for a pretrained LLM that can fit them (``can_fit``: item vectors given and a last code
    token unique to every item), else ``start``. Chosen on ML-100K valid, 943 users: the LLM's Recall@10 0.063 ->
    0.106 with the cold slice level; the scratch model's 0.203 -> 0.168 for 3 of 112 cold targets
    (docs/results.md#cold-rows)."""
    if mode not in COLD_ROWS:
        raise ValueError(f"cold_rows must be one of {COLD_ROWS}, got {mode!r}")
    if mode != "auto":
        return mode
    return "fitted" if model_init != "scratch" and can_fit else "start"


def own_tokens_unique(item_tokenizer, hf_tokenizer) -> bool:
    """Whether every item has a last code token of its own (``tokenizer.item_id_level``): the rows ``fitted`` sets."""
    own = np.asarray(item_tokenizer.item_token_ids(hf_tokenizer))[:, -1]
    return bool(np.unique(own).size == own.size)


def _wrappers():
    from peft.utils.other import ModulesToSaveWrapper, TrainableTokensWrapper

    return ModulesToSaveWrapper, TrainableTokensWrapper


def read_rows(module: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The rows ``ids`` of an embedding or output-head module as its forward uses them (float32 copy)."""
    modules_to_save, trainable_tokens = _wrappers()
    if isinstance(module, trainable_tokens):
        layer = module.token_adapter
        if layer.disable_adapters or layer.merged or not layer.active_adapters:
            weight = layer.base_layer.weight
        else:
            weight = layer.get_merged_weights(layer.active_adapters)
    elif isinstance(module, modules_to_save):
        active = module.active_adapters
        weight = (module.modules_to_save[active[0]] if active and not module.disable_adapters
                  else module.original_module).weight
    else:
        weight = module.weight
    return weight.detach()[ids.to(weight.device)].float().cpu().clone()


@torch.no_grad()
def write_rows(module: torch.nn.Module, ids: torch.Tensor, rows: torch.Tensor) -> None:
    """Set the rows ``ids`` of ``module`` everywhere its forward may read them: the base weight, and each
    trainable-token delta / modules_to_save copy that holds them."""
    from torch.nn.utils import parametrize

    modules_to_save, trainable_tokens = _wrappers()
    if isinstance(module, trainable_tokens):
        layer = module.token_adapter
        targets = [layer.base_layer.weight]
        for name, delta in layer.trainable_tokens_delta.items():
            position = {int(t): p for p, t in enumerate(layer.token_indices[name])}
            held = [i for i, t in enumerate(ids.tolist()) if t in position]
            if held:
                delta.data[[position[int(ids[i])] for i in held]] = rows[held].to(delta.device, delta.dtype)
    elif isinstance(module, modules_to_save):
        targets = [module.original_module.weight, *(m.weight for m in module.modules_to_save.values())]
    elif parametrize.is_parametrized(module):
        raise ValueError("cold rows are written after content rows are baked; this module is still parametrized")
    else:
        targets = [module.weight]
    for weight in targets:
        weight.data[ids.to(weight.device)] = rows.to(weight.device, weight.dtype)


def fill_cold_rows(model, item_tokenizer, hf_tokenizer, item_ids: Sequence[str], vectors: np.ndarray,
                   cold_items: Sequence[str]) -> dict:
    """Replace the own-token rows (input embeddings and output head) of ``cold_items`` by a ridge map from their
    vectors fitted on the warm items' trained rows; ``vectors [n, k]`` in ``item_ids`` order (every tokenizer
    item). Returns the manifest record: ``{"items": n, "input": {alpha, warm_r2}, "output": {...}}``."""
    own = np.asarray(item_tokenizer.item_token_ids(hf_tokenizer))[:, -1]  # [N] each item's last code token
    if not own_tokens_unique(item_tokenizer, hf_tokenizer):
        raise UserError("cold_rows=fitted needs a last code token unique to every item (tokenizer.item_id_level: "
                        "true); without it a cold item's codes are shared with warm items and have no rows of "
                        "their own: set train.cold_rows: start")
    row = {str(item): i for i, item in enumerate(item_ids)}
    missing = [i for i in item_tokenizer.item_ids if i not in row]
    if missing:
        raise UserError(f"the item vectors lack {len(missing)} tokenizer item(s), e.g. {missing[:5]}; use the "
                        "vectors the tokenizer was built from (the run's embeddings stage)")
    x = np.asarray(vectors, dtype=np.float64)[[row[i] for i in item_tokenizer.item_ids]]
    cold = np.isin(np.asarray(item_tokenizer.item_ids, dtype=object), np.asarray(list(cold_items), dtype=object))
    record: dict = {"items": int(cold.sum())}
    if not cold.any():
        return record
    ids = torch.as_tensor(own.astype(np.int64))
    cold_ids = ids[torch.as_tensor(cold)]
    modules = {"input": model.get_input_embeddings(), "output": model.get_output_embeddings()}
    rows = {name: read_rows(module, ids) for name, module in modules.items() if module is not None}
    for name, current in rows.items():  # every matrix read before any is written (a tied head shares rows)
        filled, fit = ridge_fill(x, current.numpy(), cold)
        record[name] = {"alpha": fit["alpha"], "warm_r2": fit["warm_r2"]}
        write_rows(modules[name], cold_ids, torch.from_numpy(filled[cold]))
        logger.info("cold rows (%s): %d item(s) from a ridge map of the item vectors fitted on %d warm items "
                    "(alpha %g, warm R^2 %.3f)", name, record["items"], int((~cold).sum()), fit["alpha"],
                    fit["warm_r2"])
    return record


def check_cold_rows(mode: str | None, item_vectors_dir: str) -> None:
    """Refuse, before training, a ``fitted`` run that could not fit its rows at the end."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    from recdata.errors import ConfigError

    if mode != "fitted":
        return
    if not item_vectors_dir:
        raise ConfigError("cold_rows=fitted maps the item vectors to rows: set item_vectors_dir (the run's "
                          "embeddings stage), or cold_rows: start")
    if is_deepspeed_zero3_enabled():
        raise ConfigError("cold_rows=fitted writes rows of whole embedding matrices, which ZeRO-3 partitions; use "
                          "ZeRO-2 (ds_configs) or cold_rows: start")


def fit_trained_cold_rows(model, item_tokenizer, hf_tokenizer, mode: str, item_vectors_dir: str,
                          dataset_dir: str) -> dict:
    """After training, under the protocol: the manifest entry ``{"cold_rows": {"mode": ..., **record}}``, the rows
    filled when ``mode`` is ``fitted`` (the cold items are the ones the tasks build recorded)."""
    from sft_tasks import read_build_cold_items
    from trainer.item_vector_rows import load_item_vectors

    if mode != "fitted":
        return {MANIFEST_KEY: {"mode": mode}}
    embeddings = load_item_vectors(item_vectors_dir, item_tokenizer, "cold_rows=fitted")
    record = fill_cold_rows(model, item_tokenizer, hf_tokenizer, embeddings.item_ids, embeddings.vectors,
                            read_build_cold_items(dataset_dir) or [])
    return {MANIFEST_KEY: {"mode": mode, **record}}
