"""LLM4MSR multi-scenario knowledge: scenario- and user-level prompts to a frozen LLM -> encoded answers -> meta layers.

``extract`` (both prompt levels, cached, cost report) -> ``alignrec knowledge encode`` (the shared encoder, frozen
LLM mean pool or the sentence encoder) -> ``train`` (``alignrec.recommenders.ScenarioSASRec`` /
``LLM4MSRSASRec``: the SASRec encoder with per-scenario towers, without / with generated meta layers).
"""

from alignrec.llm4msr.config import ScenarioExtractConfig, ScenarioTrainConfig
from alignrec.llm4msr.extract import build_scenario_prompts, build_user_prompts, extract_scenario_knowledge
from alignrec.llm4msr.train import (
    ROW_NAMES,
    build_llm4msr,
    recommend_fn_for,
    train_scenario_model,
    train_scenario_recommenders,
)

__all__ = [
    "ROW_NAMES",
    "ScenarioExtractConfig",
    "ScenarioTrainConfig",
    "build_llm4msr",
    "build_scenario_prompts",
    "build_user_prompts",
    "extract_scenario_knowledge",
    "recommend_fn_for",
    "train_scenario_model",
    "train_scenario_recommenders",
]
