"""From a run-config section to a stage's config, and the facts several stages share.

Every stage reads its section with the same dataclasses as its own subcommand (``SECTION_CLASSES``); the keys that
connect stages (``split_dir``, ``output_dir``, ... ``INJECTED_KEYS``) are filled by the pipeline from the run folder,
and a user value for one of them is an error (it would silently point a stage at another run's artefacts). Keys a
section holds for the pipeline itself (``PIPELINE_ONLY_KEYS``) never reach the stage's config. The stage modules
(``alignrec.pipeline.stages.*``) all import this module and never each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignrec.pipeline.runner import StageContext
from recdata.config import parse_config
from recdata.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


# Keys a section may hold that the pipeline itself consumes (not the stage's own config).
PIPELINE_ONLY_KEYS = {"embeddings": ("sasrec_baseline", "sasrec_knowledge", "learn_baseline"),
                      "train": ("launcher", "num_gpus", "deepspeed"),
                      "evaluate": ("sasrec_bce_baseline", "scenario_backbone", "llm4msr", "sasrec_tuned",
                                   "sasrec_content"),
                      "knowledge": ("encoder", "encoder_dir"), "tasks": ("use_knowledge",),
                      "preference": ("enabled", "pairs", "launcher", "num_gpus", "deepspeed")}


def check_injected(stage: str, section: dict[str, Any], injected: Any, source: str = "run config") -> None:
    """Refuse a section that sets a key the pipeline fills itself (``injected``), naming the keys."""
    clash = sorted(set(section) & set(injected))
    if clash:
        raise ConfigError(f"{source}: section {stage!r} sets {clash}, which the pipeline fills itself; remove them")


def stage_keys(stage: str, section: dict[str, Any]) -> dict[str, Any]:
    """The section without the pipeline-only keys: what the stage's own config dataclasses receive."""
    return {k: v for k, v in section.items() if k not in PIPELINE_ONLY_KEYS.get(stage, ())}


def build_section(classes: list[type], section: dict[str, Any], injected: dict[str, Any], stage: str) -> tuple[Any, ...]:
    """The stage's config dataclasses parsed from its section (pipeline-only keys dropped) + the injected keys."""
    body = stage_keys(stage, section)
    check_injected(stage, body, injected)
    return parse_config(classes, [], config={**body, **injected}, config_source=f"section {stage!r}")


# The config dataclasses each section is parsed with (those of the stage's own subcommand), imported on call so
# ``alignrec --help`` stays light.
def data_classes():
    from recdata.cli import PrepareArgs
    from recdata.prepare import DataConfig

    return [DataConfig, PrepareArgs]


def knowledge_classes():
    from alignrec.knowledge import ExtractConfig

    return [ExtractConfig]


def embedding_classes():
    from tokenization.embeddings import EmbeddingConfig

    return [EmbeddingConfig]


def tokenizer_classes():
    from tokenization.config import TokenizerConfig

    return [TokenizerConfig]


def task_classes():
    from sft_tasks.config import TaskConfig

    return [TaskConfig]


def evaluate_classes():
    from inference.cli import EvaluateConfig

    return [EvaluateConfig]


def cache_classes():
    from inference.cache.cli import CacheBuildConfig

    return [CacheBuildConfig]


TASK_INJECTED = ("split_dir", "item_tokenizer_dir", "output_dir", "hf_tokenizer_dir")


PREFERENCE_INJECTED = ("sft_run_dir", "pairs_dir", "output_dir", "ranking_dataset_dir")


def train_model_dir(run_cfg: Any) -> str:
    """The model whose tokenizer the tasks are tokenised with: the training model or its tokenizer."""
    from recdata.paths import default_llm_dir

    section = run_cfg.sections.get("train", {})
    return str(section.get("tokenizer_name_or_path") or section.get("model_name_or_path") or default_llm_dir())


def preference_enabled(sections: dict[str, dict[str, Any]]) -> bool:
    """The preference stage runs only with ``preference: {enabled: true, ...}`` in the run config."""
    value = (sections.get("preference") or {}).get("enabled", False)
    if not isinstance(value, bool):
        raise ConfigError(f"section 'preference': enabled must be true or false, got {value!r}")
    return value


def served_model_dir(ctx: StageContext) -> Path:
    """The model evaluate, cache and export read: the DPO model when the preference stage is on, else SFT's."""
    if preference_enabled(ctx.run_config.sections):
        return ctx.upstream("preference") / "model"
    return ctx.upstream("train") / "model"


def knowledge_vectors(ctx: StageContext) -> Path | None:
    path = ctx.upstream("knowledge") / "vectors"
    return path if (path / "item_vectors.safetensors").is_file() else None


def embedding_injected(ctx: StageContext, section: dict[str, Any]) -> dict[str, Any]:
    """``knowledge_dir`` = this run's knowledge vectors, unless the section names its own."""
    knowledge = knowledge_vectors(ctx)
    return {"knowledge_dir": str(knowledge)} if knowledge and "knowledge_dir" not in section else {}


def sasrec_knowledge_kinds(value: Any) -> tuple[str, ...]:
    """``embeddings.sasrec_knowledge``: true (item knowledge, the measured default) or the kinds, e.g. "item,user"."""
    if value is True:
        return ("item",)
    kinds = tuple(k.strip() for k in str(value).split(",") if k.strip())
    if not kinds or set(kinds) - {"item", "user"}:
        raise ConfigError(f"embeddings.sasrec_knowledge must be true or name item and/or user, got {value!r}")
    return kinds


def cold_mask_key(run_cfg: Any) -> dict[str, Any]:
    """What the key of a stage that trains on the split (or tells training what to mask) adds under the cold-item
    protocol (``data.cold_item_fraction`` > 0): its training softmaxes leave the items without training out (issue
    31), so a cold run made before that retrains. Empty otherwise: every other run keeps its key."""
    fraction = (run_cfg.sections.get("data") or {}).get("cold_item_fraction") or 0
    return {"cold_softmax_mask": 1} if float(fraction) > 0 else {}


def uses_knowledge(section: dict[str, Any]) -> bool:
    """An embeddings section that reads the knowledge stage (source or fusion part, or the knowledge SASRec)."""
    if section.get("sasrec_knowledge"):
        sasrec_knowledge_kinds(section["sasrec_knowledge"])  # a bad value fails before any stage runs
    return section.get("source") == "knowledge" or "knowledge" in str(section.get("fusion_weights", "")) \
        or bool(section.get("sasrec_knowledge"))


INJECTED_KEYS = {
    "data": ("output_dir",),
    "knowledge": ("split_dir", "out_dir"),
    "tasks": TASK_INJECTED,
    "train": ("dataset_dir", "item_tokenizer_dir", "output_dir", "item_vectors_dir"),
    "preference": PREFERENCE_INJECTED,
    "evaluate": ("model_dir", "split_dir", "out_dir", "item_vectors"),
    "cache": ("split_dir", "out_dir", "model_dir", "item_vectors"),
}


SECTION_CLASSES = {"data": data_classes, "knowledge": knowledge_classes, "embeddings": embedding_classes, "tokenizer": tokenizer_classes,
                   "tasks": task_classes, "evaluate": evaluate_classes, "cache": cache_classes}
