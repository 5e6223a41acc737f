"""``alignrec scenarios extract | train``: LLM4MSR knowledge and the multi-scenario backbone rows, offline.

    alignrec scenarios extract --split_dir S --out_dir K --user_sample 300 --user_clusters 64
    alignrec knowledge encode --knowledge_dir K --out_dir V --encoder sentence
    alignrec scenarios train --split_dir S --vectors_dir V --out_dir M --models sasrec,backbone,llm4msr

``extract`` writes scenario_knowledge.jsonl (one answer per scenario), user_knowledge.jsonl (every user: its own
answer or its cluster's), prompts.jsonl, cost.json (LLM calls, generated tokens, seconds per level) and
answers.cache.jsonl (rerun = resume). ``knowledge encode`` turns both into scenario_vectors / user_vectors.
``train`` writes each model folder and the evaluation (metrics.md: whole-catalogue and per-scenario tables).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from recdata.config import parse_config, require_fields
from recdata.io import atomic_write_json
from recdata.outputs import claim_output_dir

logger = logging.getLogger(__name__)

__all__ = ["register", "run_scenario_extract", "run_scenario_train"]


def register(subparsers) -> None:
    parser = subparsers.add_parser("scenarios", help="LLM4MSR: scenario / user knowledge, multi-scenario backbone")
    sub = parser.add_subparsers(dest="scenarios_command", metavar="SUBCOMMAND", required=True)
    for name, handler, text in (
            ("extract", _run_extract, "ask the LLM about every scenario and about users across scenarios"),
            ("train", _run_train, "train the backbone without / with LLM4MSR meta layers, evaluate per scenario")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.set_defaults(handler=handler)



def run_scenario_extract(cfg, make_generator=None) -> dict[str, Any]:
    """Library-callable body of ``scenarios extract``; ``make_generator`` overrides the HF model (tests)."""
    from alignrec.llm.generation import HFGenerator, model_fingerprint
    from alignrec.llm.inert_text import llm_inert_text
    from alignrec.llm4msr.extract import extract_scenario_knowledge, require_scenarios
    from recdata.paths import default_llm_dir, require
    from recdata.split import SplitDataset

    require_fields(cfg, "split_dir", "out_dir")
    out = claim_output_dir(cfg.out_dir, "scenarios extract", inputs=[cfg.split_dir], overwrite=cfg.overwrite)
    split = SplitDataset.load(cfg.split_dir)
    require_scenarios(split)  # before the LLM is looked for
    llm_dir = Path(cfg.llm_dir) if cfg.llm_dir else require(default_llm_dir(), "the default LLM")
    if make_generator is None:
        def make_generator():
            return HFGenerator(llm_dir, cfg.max_new_tokens, cfg.batch_size, cfg.device or None)
    atomic_write_json(out / "extract_config.json", dataclasses.asdict(cfg))
    cost = extract_scenario_knowledge(cfg, split, out, model_fingerprint(llm_dir), make_generator,
                                      llm_inert_text(llm_dir))
    atomic_write_json(out / "manifest.json", {"command": "scenarios extract", "complete": True})
    logger.info("scenarios extract: %s", cost["total"])
    return cost


def run_scenario_train(cfg) -> dict[str, Any]:
    from alignrec.llm4msr.train import train_scenario_recommenders
    from recdata.split import SplitDataset

    require_fields(cfg, "split_dir", "out_dir", *(("vectors_dir",) if "llm4msr" in cfg.model_list() else ()))
    out = claim_output_dir(cfg.out_dir, "scenarios train", inputs=[cfg.split_dir, cfg.vectors_dir],
                           overwrite=cfg.overwrite)
    result = train_scenario_recommenders(cfg, SplitDataset.load(cfg.split_dir), out)
    print((out / "metrics.md").read_text())
    atomic_write_json(out / "manifest.json", {"command": "scenarios train", "models": cfg.model_list()})
    return result


def _run_extract(args, argv: list[str]) -> int:
    from alignrec.llm4msr.config import ScenarioExtractConfig

    (cfg,) = parse_config([ScenarioExtractConfig], argv)
    run_scenario_extract(cfg)
    return 0


def _run_train(args, argv: list[str]) -> int:
    from alignrec.llm4msr.config import ScenarioTrainConfig

    (cfg,) = parse_config([ScenarioTrainConfig], argv)
    run_scenario_train(cfg)
    return 0
