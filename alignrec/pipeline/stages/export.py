"""The ``export`` stage: the vocabulary other teams read (items.jsonl / parquet / tokens.json), validated.

Reads: the served model's tokenizers and the split's catalogue. Writes: ``vocab/``.
"""

from __future__ import annotations

from typing import Any

from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    served_model_dir,
)
from recdata.errors import UserError


def run_export(ctx: StageContext) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from tokenization import ItemTokenizer
    from tokenization.vocab_export import export_vocab, validate_vocab

    if ctx.config:
        raise UserError(f"run config section 'export' takes no keys yet, got {sorted(ctx.config)}")
    model_dir = served_model_dir(ctx)
    item_tokenizer = ItemTokenizer.from_pretrained(model_dir / "item_tokenizer")
    hf_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = ctx.out_dir / "vocab"
    export_vocab(item_tokenizer, out, hf_tokenizer=hf_tokenizer,
                 aligned_with={"model_dir": str(model_dir), "tokenizer": type(hf_tokenizer).__name__})
    from recdata import SplitDataset

    report = validate_vocab(out, expected_item_ids=SplitDataset.load(ctx.upstream("data") / "split").dataset.item_ids())
    return {"vocab_dir": str(out), "validation": report}


STAGE = Stage("export", run_export, ("data", "train", "preference"))
