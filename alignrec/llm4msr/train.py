"""Train the multi-scenario rows (SASRec on all data, the backbone, the backbone + LLM4MSR meta layers), evaluate.

Every row: the same split, SASRec hyper-parameters, full-catalogue ranking and within-scenario ranking, and
``exclude_history=True``; training reads ``split.train_sequences()`` only and early stopping the valid targets.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from alignrec.knowledge.encode import load_knowledge_vectors, load_user_history_items
from alignrec.llm4msr.config import ScenarioTrainConfig
from alignrec.recommenders import (
    LLM4MSRSASRec,
    SASRec,
    SASRecConfig,
    ScenarioSASRec,
    as_recommend_fn,
    train_sasrec,
)
from recdata.errors import ConfigError, UserError
from recdata.split import SplitDataset

logger = logging.getLogger(__name__)

__all__ = ["ROW_NAMES", "build_llm4msr", "recommend_fn_for", "train_scenario_model", "train_scenario_recommenders"]

ROW_NAMES = {"sasrec": "sasrec", "backbone": "backbone (per-scenario towers)",
             "llm4msr": "backbone + LLM4MSR meta layers"}


def build_llm4msr(split: SplitDataset, cfg: SASRecConfig, vectors_dir: str | Path, meta_rank: int = 4,
                  meta_hidden: int = 64) -> LLM4MSRSASRec:
    """The backbone + meta layers over ``split``, fed by ``vectors_dir``'s scenario and user vectors."""
    if not vectors_dir:
        raise ConfigError("the llm4msr model needs --vectors_dir (`alignrec knowledge encode` of `alignrec scenarios "
                          "extract`)")
    scenarios = load_knowledge_vectors(vectors_dir, "scenario")
    users = load_knowledge_vectors(vectors_dir, "user")
    history = load_user_history_items(vectors_dir, command="alignrec scenarios extract")  # refuses old leaky ones
    missing = sorted(set(split.scenario_names()) - set(scenarios[0]))
    if missing:
        raise UserError(f"{vectors_dir}: no scenario vector for {missing}; extract scenario knowledge from this split")
    known = set(users[0])
    without = [u for u, items in split.train_sequences() if items and u not in known]
    if without:
        logger.warning("%s: %d of %d users with training items have no user vector (e.g. %r); they get no user "
                       "meta layer (all their training items held out of the prompts, or extracted from another split)", vectors_dir, len(without),
                       len(split.train_sequences()), without[0])
    return LLM4MSRSASRec.for_split(split, cfg, scenario_knowledge=scenarios, user_knowledge=users,
                                   user_history_items=history, meta_rank=meta_rank, meta_hidden=meta_hidden)


def train_scenario_model(kind: str, split: SplitDataset, cfg: SASRecConfig, vectors_dir: str | Path = "",
                         meta_rank: int = 4, meta_hidden: int = 64, log_file: str | Path | None = None) -> SASRec:
    """Train one row's model: ``sasrec`` | ``backbone`` | ``llm4msr`` (same SASRec config)."""
    if kind == "sasrec":
        model = None
    elif kind == "backbone":
        model = ScenarioSASRec.for_split(split, cfg)
    else:
        model = build_llm4msr(split, cfg, vectors_dir, meta_rank, meta_hidden)
    return train_sasrec(split, cfg, log_file=log_file, model=model)


def recommend_fn_for(model: SASRec, split: SplitDataset, k: int, exclude_history: bool = True):
    """The scenario-aware ``recommend_fn`` of a trained row (user context included)."""
    return as_recommend_fn(model, k=k, exclude_history=exclude_history, context_fn=model.context_for,
                           scenario_items=split.scenario_catalogues())


def train_scenario_recommenders(cfg: ScenarioTrainConfig, split: SplitDataset, out_dir: Path) -> dict[str, Any]:
    """Train ``cfg.models``; write ``<row>/`` models, ``metrics.json`` / ``metrics.md`` (per-scenario table)."""
    from recdata.evaluation import evaluate_recommender, evaluate_within_scenario, write_report
    from recdata.popularity import popularity_recommender, train_popularity

    if not split.has_scenarios:
        raise UserError(f"{cfg.split_dir} has no scenario labels; prepare it with scenario_column or "
                        "scenario_item_field")
    ks, sasrec_cfg = cfg.k_list(), cfg.sasrec_config()
    test, catalogue, popularity = split.eval_examples("test"), split.dataset.item_ids(), train_popularity(split)
    catalogues = split.scenario_catalogues()
    reports: dict[str, Any] = {}
    info: dict[str, Any] = {}

    def evaluate(name: str, fn) -> None:
        rep = evaluate_recommender(fn, test, ks, catalogue, popularity, show_progress=False)
        rep["within_scenario"] = evaluate_within_scenario(fn, test, catalogues, ks, popularity, show_progress=False)
        reports[name] = rep

    evaluate("popularity", popularity_recommender(split, max(ks), exclude_history=True))
    for kind in cfg.model_list():
        model = train_scenario_model(kind, split, sasrec_cfg, cfg.vectors_dir, cfg.meta_rank, cfg.meta_hidden,
                                     log_file=out_dir / f"{kind}_metrics.jsonl")
        model.save_pretrained(out_dir / kind)
        info[ROW_NAMES[kind]] = model.train_info
        evaluate(ROW_NAMES[kind], recommend_fn_for(model, split, max(ks)))
    write_report(reports, out_dir, extra={"config": dataclasses.asdict(cfg), "train_info": info},
                 title="Multi-scenario rows (test, full ranking and within scenario, history excluded)")
    return {"reports": reports, "train_info": info}
