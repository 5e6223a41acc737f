"""Packed batches that keep each packed row a batch row (``packed_rows``), for attention kernels without varlen.

TRL's packing (``packing: true``, strategy ``bfd``) fills rows of ``max_length`` tokens with whole examples and
then, padding-free, flattens the whole batch into ONE sequence with ``position_ids`` restarting at 0 on every
example. transformers turns those restarts into a block-diagonal causal mask (``masking_utils``: packed sequences
are detected when there is no 2D attention mask), so no example sees another: exact on every attention backend
(``tests/trainer/test_packing.py`` checks the loss against per-example losses). But without a varlen kernel (CPU
sdpa / eager) that mask is dense: attention costs ``(batch x max_length)^2`` per layer instead of
``batch x max_length^2``. ``PackedRowsCollator`` gives the same examples as ``[batch, max_length]`` rows, each
with its own restarting ``position_ids`` (and so its own block-diagonal mask), and no attention mask.
"""

from __future__ import annotations

from typing import Any

import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

__all__ = ["PackedRowsCollator"]

IGNORE_INDEX = -100


class PackedRowsCollator(DataCollatorForLanguageModeling):
    """``input_ids``, ``labels`` and ``position_ids`` ``[batch, longest row]`` from TRL-packed rows.

    ``position_ids`` restart at 0 at every example (``seq_lengths``), right padding gets position 0 (each pad token
    is its own one-token sequence) and label -100; a label at an example's first token is -100 as in TRL's
    padding-free batches (nothing before it in the row belongs to its example).
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = [len(e["input_ids"]) for e in examples]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(examples), width), dtype=torch.long)
        seq_lengths = [e.get("seq_lengths") or [n] for e, n in zip(examples, lengths, strict=True)]
        positions = self.get_position_ids_from_packed_seq_lengths(seq_lengths)
        for row, (example, n) in enumerate(zip(examples, lengths, strict=True)):
            input_ids[row, :n] = torch.as_tensor(example["input_ids"])
            labels[row, :n] = torch.as_tensor(example.get("labels", example["input_ids"]))
            position_ids[row, :n] = positions[row]
        labels[position_ids == 0] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
