"""The optional ``knowledge`` stage: REKI knowledge extraction + encoding (an empty section skips it).

Reads: the ``data`` stage's split and the ``knowledge`` section (``ExtractConfig`` + ``encoder`` / ``encoder_dir``).
Writes: ``extract/`` (knowledge texts, cost) and ``vectors/`` (encoded knowledge); the answer cache lives beside
the run (``knowledge_answers.cache.jsonl``) so a changed config re-asks only new prompts.
"""

from __future__ import annotations

from typing import Any

from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    build_section,
    knowledge_classes,
)


def run_knowledge(ctx: StageContext) -> dict[str, Any]:
    if not ctx.config:
        return {"enabled": False}
    from alignrec.knowledge import EncodeConfig
    from alignrec.knowledge.cli import run_encode, run_extract

    injected = {"split_dir": str(ctx.upstream("data") / "split"), "out_dir": str(ctx.out_dir / "extract")}
    if "cache_file" not in ctx.config:  # outside the stage folder: a changed config re-asks only new prompts
        injected["cache_file"] = str(ctx.run_dir / "knowledge_answers.cache.jsonl")
    (cfg,) = build_section(knowledge_classes(), ctx.config, injected, "knowledge")
    cost = run_extract(cfg)
    encoded = run_encode(EncodeConfig(knowledge_dir=cfg.out_dir, out_dir=str(ctx.out_dir / "vectors"),
                                      encoder=ctx.config.get("encoder", "sentence"),
                                      encoder_dir=ctx.config.get("encoder_dir", "")))
    return {"enabled": True, "mode": cfg.mode, "cost": cost, "encoded": encoded}


STAGE = Stage("knowledge", run_knowledge, ("data",))
