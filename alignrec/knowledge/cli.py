"""``alignrec knowledge extract | encode | train``: REKI knowledge augmentation, offline, three steps.

    alignrec knowledge extract --split_dir S --out_dir K --mode collective --item_clusters 64 --user_clusters 64 \\
        --factors "use case,material,standard,brand"
    alignrec knowledge encode --knowledge_dir K --out_dir V --encoder sentence
    alignrec knowledge train --split_dir S --vectors_dir V --out_dir M

``extract`` writes factors.json, item_knowledge.jsonl, user_knowledge.jsonl, cost.json (LLM calls, generated
tokens, seconds) and answers.cache.jsonl (rerun = resume). ``encode`` writes item/user_vectors.safetensors +
id lists (``embeddings.source: knowledge`` reads the item file). ``train`` writes the model and its prestored
augmented vectors (model/augmented/), the evaluation table (metrics.md) with the SASRec and SASRec + knowledge rows.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from alignrec.knowledge.config import EncodeConfig, ExtractConfig, KnowledgeTrainConfig
from recdata.config import parse_config, require_fields
from recdata.io import atomic_write_json
from recdata.outputs import check_output_dir, claim_output_dir

logger = logging.getLogger(__name__)

__all__ = ["register", "run_encode", "run_extract", "run_train"]


def register(subparsers) -> None:
    parser = subparsers.add_parser("knowledge", help="LLM knowledge extraction and augmented vectors (REKI/KAR)")
    sub = parser.add_subparsers(dest="knowledge_command", metavar="SUBCOMMAND", required=True)
    for name, handler, text in (("extract", _run_extract, "ask the LLM for item facts and user preferences"),
                                ("encode", _run_encode, "encode knowledge answers into vectors"),
                                ("train", _run_train, "train SASRec + knowledge, prestore augmented vectors")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.set_defaults(handler=handler)



def run_extract(cfg: ExtractConfig, make_generator=None) -> dict[str, Any]:
    """Library-callable body of ``knowledge extract``; ``make_generator`` overrides the HF model (tests)."""
    from alignrec.knowledge.extract import extract_knowledge
    from alignrec.llm.generation import HFGenerator, model_fingerprint
    from alignrec.llm.inert_text import llm_inert_text
    from recdata.paths import default_llm_dir, require
    from recdata.split import SplitDataset

    require_fields(cfg, "split_dir", "out_dir")
    check_output_dir(cfg.out_dir, "knowledge extract", inputs=[cfg.split_dir], overwrite=cfg.overwrite)
    split = SplitDataset.load(cfg.split_dir)
    llm_dir = Path(cfg.llm_dir) if cfg.llm_dir else require(default_llm_dir(), "the default LLM")
    out = claim_output_dir(cfg.out_dir, "knowledge extract", inputs=[cfg.split_dir], overwrite=cfg.overwrite)
    if make_generator is None:
        def make_generator():
            return HFGenerator(llm_dir, cfg.max_new_tokens, cfg.batch_size, cfg.device or None)
    atomic_write_json(out / "extract_config.json", dataclasses.asdict(cfg))
    cost = extract_knowledge(cfg, split, out, model_fingerprint(llm_dir), make_generator, llm_inert_text(llm_dir))
    atomic_write_json(out / "manifest.json", {"command": "knowledge extract", "kinds": cfg.kind_list(),
                                              "mode": cfg.mode, "complete": True})
    logger.info("knowledge extract: %s", {k: v for k, v in cost.items() if k in ("item", "user", "wall_seconds")})
    return cost


def run_encode(cfg: EncodeConfig) -> dict[str, Any]:
    from alignrec.knowledge.encode import encode_knowledge

    require_fields(cfg, "knowledge_dir", "out_dir")
    out = claim_output_dir(cfg.out_dir, "knowledge encode", inputs=[cfg.knowledge_dir], overwrite=cfg.overwrite)
    summary = encode_knowledge(cfg, out)
    atomic_write_json(out / "manifest.json", {"command": "knowledge encode", **summary})
    return summary


def run_train(cfg: KnowledgeTrainConfig) -> dict[str, Any]:
    from alignrec.knowledge.train import train_knowledge_recommender
    from recdata.split import SplitDataset

    require_fields(cfg, "split_dir", "out_dir", *(("vectors_dir",) if cfg.knowledge_model else ()))
    out = claim_output_dir(cfg.out_dir, "knowledge train", inputs=[cfg.split_dir, cfg.vectors_dir],
                           overwrite=cfg.overwrite)
    result = train_knowledge_recommender(cfg, SplitDataset.load(cfg.split_dir), out)
    print((out / "metrics.md").read_text().split("\n## ")[0])
    atomic_write_json(out / "manifest.json", {"command": "knowledge train", "coverage": result["coverage"]})
    return result


def _run_extract(args, argv: list[str]) -> int:
    (cfg,) = parse_config([ExtractConfig], argv)
    run_extract(cfg)
    return 0


def _run_encode(args, argv: list[str]) -> int:
    (cfg,) = parse_config([EncodeConfig], argv)
    run_encode(cfg)
    return 0


def _run_train(args, argv: list[str]) -> int:
    (cfg,) = parse_config([KnowledgeTrainConfig], argv)
    run_train(cfg)
    return 0
