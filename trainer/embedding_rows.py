"""The embedding rows of the LLM that hold code tokens, and the helpers every way of starting them uses.

Shared by ``trainer.model_setup`` (codebook / mean starts) and ``trainer.item_vector_rows`` (item-vector starts),
so neither imports the other.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["code_row_matrices", "gathered", "is_tied", "jitter_rows", "mean_start_rows"]


def is_tied(model) -> bool:
    """True when the output head is the input embedding matrix itself."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight  # HF ties by sharing the Parameter


def gathered(params: list) -> contextlib.AbstractContextManager:
    """Full (unpartitioned) parameters under DeepSpeed ZeRO-3, rank 0's edits broadcast on exit."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    return contextlib.nullcontext()


def code_row_matrices(model) -> list:
    """The weights that hold code rows: the input embeddings and an untied output head (a tied one follows)."""
    targets = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and not is_tied(model):
        targets.append(out.weight)
    return targets


def jitter_rows(old: torch.Tensor, n: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """``[n, d]`` noise at ``noise`` x the existing rows' per-dimension std."""
    return torch.randn(n, old.shape[1], generator=gen) * old.std(dim=0) * noise


def mean_start_rows(old: torch.Tensor, n: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """``new_rows_init=mean``: the existing rows' mean row + jitter (also the fallback of an unused code)."""
    return old.mean(dim=0, keepdim=True) + jitter_rows(old, n, noise, gen)
