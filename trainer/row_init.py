"""Which start the new code-token rows get (``new_rows_init``), with ``auto`` resolved in one place.

Kept free of torch so the pipeline can put the resolution in the train stage's key at plan time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ROW_INITS", "SCRATCH_ROW_INITS", "resolve_row_init", "section_row_init"]

ROW_INITS = ("auto", "codebook", "mean", "item_vectors", "random")
SCRATCH_ROW_INITS = ("auto", "item_vectors", "random")  # codebook / mean describe a pretrained vocabulary


def resolve_row_init(mode: str, model_init: str, has_item_vectors: bool) -> str:
    """``auto`` as measured on the LLM path's four cells (docs/results.md#llm-alignment-cells): scratch -> random
    (the model's own init); pretrained -> item_vectors when the item vectors are given (2.26x the codebook rows'
    valid NDCG@10), else mean (1.55x the codebook rows'). An explicit mode is kept."""
    if mode != "auto":
        return mode
    if model_init == "scratch":
        return "random"
    return "item_vectors" if has_item_vectors else "mean"


def section_row_init(section: Mapping[str, Any]) -> str:
    """The start a train section gets where the item vectors are always handed over (``alignrec run``, the GPU
    check's bundle)."""
    return resolve_row_init(str(section.get("new_rows_init", "auto")), str(section.get("model_init", "pretrained")),
                            has_item_vectors=True)
