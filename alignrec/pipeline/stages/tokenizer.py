"""The ``tokenizer`` stage: RQ-VAE + collision-free ``ItemTokenizer`` over the embeddings stage's vectors.

Reads: the split, the item vectors, the ``tokenizer`` section (``TokenizerConfig``) and the LLM whose input
embeddings are the alignment targets (when ``align_weight`` > 0). Writes: ``item_tokenizer/`` (with ``report.json``).
"""

from __future__ import annotations

import json
from typing import Any

from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    build_section,
    embedding_classes,
    embedding_injected,
    tokenizer_classes,
)


def _tokenizer_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The LLM whose input embeddings are the alignment targets (when align_weight > 0)."""
    from recdata.paths import default_llm_dir

    if float(section.get("align_weight", 0.5) or 0) <= 0:
        return {}
    return {"alignment_llm": str(run_cfg.sections.get("embeddings", {}).get("llm_dir") or default_llm_dir())}


def run_tokenizer(ctx: StageContext) -> dict[str, Any]:
    from recdata import SplitDataset
    from tokenization.embeddings import load_embeddings_dir
    from tokenization.pipeline import build_item_tokenizer

    (cfg,) = build_section(tokenizer_classes(), ctx.config, {}, "tokenizer")
    emb_section = ctx.run_config.sections.get("embeddings", {})
    (emb_cfg,) = build_section(embedding_classes(), emb_section, embedding_injected(ctx, emb_section), "embeddings")
    split = SplitDataset.load(ctx.upstream("data") / "split")
    embeddings = load_embeddings_dir(ctx.upstream("embeddings"))
    build_item_tokenizer(cfg, split, ctx.out_dir / "item_tokenizer", emb_cfg, embeddings=embeddings)
    report = json.loads((ctx.out_dir / "item_tokenizer" / "report.json").read_text())
    levels = report.get("levels") or []
    return {"num_items": report.get("num_items"), "codebook_sizes": report.get("codebook_sizes"),
            "usage_percent": [round(lv["usage_pct"], 1) for lv in levels],
            "perplexity": [round(lv["perplexity"], 1) for lv in levels],
            "collisions_before": report.get("collisions_before"), "collisions_after": report.get("collisions_after"),
            "items_moved": report.get("items_moved"), "disambiguation_level": report.get("disambiguation_level"),
            "recon_mse": report.get("recon_mse"), "recon_relative": report.get("recon_relative")}


STAGE = Stage("tokenizer", run_tokenizer, ("data", "embeddings"), inputs=_tokenizer_inputs)
