"""Configs of ``alignrec scenarios extract | train`` (every field is also a flag)."""

from __future__ import annotations

from dataclasses import dataclass, field

from alignrec.knowledge.config import CLUSTER_SOURCES
from alignrec.recommenders.sasrec_config import SASRecConfig, validate_sasrec
from recdata.config import parse_ks
from recdata.errors import ConfigError

__all__ = ["MODELS", "ScenarioExtractConfig", "ScenarioTrainConfig"]

MODELS = ("sasrec", "backbone", "llm4msr")


@dataclass
class ScenarioExtractConfig:
    """LLM4MSR knowledge with a local causal LM: one prompt per scenario, one per sampled user or user cluster."""

    split_dir: str = field(default="", metadata={"help": "Saved SplitDataset folder with scenario labels."})
    out_dir: str = field(default="", metadata={"help": "Output folder: scenario / user knowledge, prompts, cost."})
    llm_dir: str = field(default="", metadata={"help": "Local HF causal LM folder; empty = the converted SmolLM2."})
    scenario_examples: int = field(
        default=5, metadata={"help": "Most bought training items shown per scenario in the scenario-level prompts."})
    user_sample: int = field(
        default=300, metadata={"help": "Users prompted individually (a seeded random sample; >= users = all)."})
    user_clusters: int = field(
        default=64, metadata={"help": "The other users share one prompt per k-means cluster of users (a user = the "
                                      "mean of its training items' vectors); 0 = they get no user knowledge."})
    cluster_source: str = field(
        default="tfidf", metadata={"help": f"One of {CLUSTER_SOURCES}: item vectors the user clusters are built on "
                                           "(as `alignrec knowledge extract`).",
                                   "choices": list(CLUSTER_SOURCES)})
    cluster_file: str = field(default="", metadata={"help": "cluster_source=file: item vectors file."})
    cluster_ids_file: str = field(default="", metadata={"help": "Item ids of cluster_file rows (.npy files)."})
    group_examples: int = field(default=8, metadata={"help": "Items shown per user-cluster prompt (most bought)."})
    user_history_items: int = field(
        default=10, metadata={"help": "Most recent training items shown in a user prompt (training part only)."})
    user_holdout_items: int = field(
        default=1, metadata={"help": "User prompts read the training part minus its last N items, and the user meta "
                                     "layer joins only the training targets after that point (as `alignrec knowledge "
                                     "extract`): no training target is described in its own user's knowledge. 0 = "
                                     "the whole training part (training targets then leak into it)."})
    max_title_words: int = field(default=12, metadata={"help": "Titles in prompts are cut to N words."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation budget per answer (greedy)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call."})
    max_seconds: float = field(
        default=0.0, metadata={"help": "Stop generating after this many seconds (a rerun resumes from the cache); "
                                       "0 = no limit."})
    device: str = field(default="", metadata={"help": "torch device of the LLM; empty = cuda when available."})
    cache_file: str = field(
        default="", metadata={"help": "JSON-lines answer cache; empty = out_dir/answers.cache.jsonl."})
    seed: int = field(default=42, metadata={"help": "Seed of the user sample and k-means."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty folder alignrec did not create."})

    def __post_init__(self) -> None:
        if self.cluster_source not in CLUSTER_SOURCES:
            raise ConfigError(f"cluster_source must be one of {CLUSTER_SOURCES}, got {self.cluster_source!r}")
        if self.cluster_source == "file" and not self.cluster_file:
            raise ConfigError("cluster_source=file needs --cluster_file (item vectors)")
        for name in ("scenario_examples", "group_examples", "user_history_items", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("user_sample", "user_clusters", "max_title_words", "max_seconds", "user_holdout_items"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.user_sample or self.user_clusters):
            raise ConfigError("user_sample and user_clusters are both 0: no user would get user-level knowledge; "
                              "set --user_sample N and/or --user_clusters K")


@dataclass
class ScenarioTrainConfig(SASRecConfig):
    """Train the multi-scenario backbone without / with LLM4MSR meta layers (and SASRec), evaluate per scenario."""

    split_dir: str = field(default="", metadata={"help": "Saved SplitDataset folder with scenario labels."})
    vectors_dir: str = field(
        default="", metadata={"help": "`alignrec knowledge encode` output of `alignrec scenarios extract` "
                                      "(scenario_vectors / user_vectors); needed by the llm4msr model."})
    out_dir: str = field(default="", metadata={"help": "Models and the per-scenario evaluation report."})
    models: str = field(
        default="backbone,llm4msr", metadata={"help": f"Comma-separated rows to train, of {MODELS}: one SASRec on "
                                                      "all data, the backbone (per-scenario towers), the backbone "
                                                      "+ LLM4MSR meta layers."})
    meta_rank: int = field(default=4, metadata={"help": "Rank of each generated (meta) layer."})
    meta_hidden: int = field(default=64, metadata={"help": "Hidden size of each meta network."})
    ks: str = field(default="1,5,10,20", metadata={"help": "Cut-offs of the evaluation table."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty folder alignrec did not create."})

    def __post_init__(self) -> None:
        try:
            validate_sasrec(self)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        bad = sorted(set(self.model_list()) - set(MODELS))
        if bad or not self.model_list():
            raise ConfigError(f"models must name some of {MODELS}, got {self.models!r}")
        if self.meta_rank < 1 or self.meta_hidden < 1:
            raise ConfigError("meta_rank and meta_hidden must be >= 1")
        self.k_list()

    def model_list(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]

    def k_list(self) -> list[int]:
        return parse_ks(self.ks)
