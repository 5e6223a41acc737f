"""Configs of ``alignrec knowledge extract | encode | train`` (every field is also a flag)."""

from __future__ import annotations

from dataclasses import dataclass, field

from alignrec.recommenders.sasrec_config import SASRecConfig, validate_sasrec
from recdata.config import parse_ks
from recdata.errors import ConfigError

MODES = ("individual", "collective")
CLUSTER_SOURCES = ("tfidf", "sentence", "file")
ENCODERS = ("sentence", "llm")

__all__ = ["CLUSTER_SOURCES", "ENCODERS", "EncodeConfig", "ExtractConfig", "KnowledgeTrainConfig", "MODES"]


@dataclass
class ExtractConfig:
    """REKI knowledge extraction with a local causal LM: factors, item facts, user preferences."""

    split_dir: str = field(default="", metadata={"help": "Saved SplitDataset folder (`alignrec data prepare`)."})
    out_dir: str = field(default="", metadata={"help": "Output folder: factors, item/user knowledge, cost report."})
    llm_dir: str = field(default="", metadata={"help": "Local HF causal LM folder; empty = the converted SmolLM2."})
    mode: str = field(
        default="collective", metadata={"help": f"One of {MODES}: one prompt per item / user, or one per cluster of "
                                                "similar items / users whose answer every member shares."}
    )
    item_clusters: int = field(default=64, metadata={"help": "collective: k-means clusters of items (<= items)."})
    user_clusters: int = field(default=64, metadata={"help": "collective: k-means clusters of users (<= users)."})
    cluster_source: str = field(
        default="tfidf", metadata={"help": f"One of {CLUSTER_SOURCES}: item vectors the clusters are built on "
                                           "(TF-IDF of item text, the sentence encoder, or cluster_file); a user is "
                                           "the mean of its training items' vectors."}
    )
    cluster_file: str = field(
        default="", metadata={"help": "cluster_source=file: item vectors (.safetensors with item_ids metadata, "
                                      "e.g. an embeddings stage output, or .npy + cluster_ids_file)."}
    )
    cluster_ids_file: str = field(default="", metadata={"help": "Item ids of cluster_file rows (.npy files)."})
    group_examples: int = field(
        default=6, metadata={"help": "collective: items shown per cluster prompt (closest to the centroid / most "
                                     "bought in the user cluster)."}
    )
    domain: str = field(default="scientific and industrial supplies",
                        metadata={"help": "Domain named in the factor prompt."})
    factors: str = field(
        default="", metadata={"help": "Comma-separated factors (e.g. 'use case,material,standard,brand'); empty = "
                                      "ask the LLM (a small model's own factors may be noise)."}
    )
    num_factors: int = field(default=4, metadata={"help": "Factors asked from the LLM (and kept)."})
    kinds: str = field(default="item,user", metadata={"help": "Knowledge kinds to extract: item, user or both."})
    user_history_items: int = field(
        default=10, metadata={"help": "Most recent training items shown in a user prompt (training part only)."}
    )
    user_holdout_items: int = field(
        default=1, metadata={"help": "User knowledge reads the training part minus its last N items, and models use "
                                     "it only to predict items after that point (SASRec + knowledge, SFT prompts): "
                                     "no training target is described in its own user's knowledge. 0 = the whole "
                                     "training part (training targets then leak into it)."}
    )
    max_title_words: int = field(default=16, metadata={"help": "Titles in prompts are cut to N words."})
    max_items: int = field(default=0, metadata={"help": "individual: a random sample of N items (0 = all)."})
    max_users: int = field(default=0, metadata={"help": "individual: a random sample of N users (0 = all)."})
    max_new_tokens: int = field(default=48, metadata={"help": "Generation budget per answer (greedy)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call."})
    max_seconds: float = field(
        default=0.0, metadata={"help": "Stop generating after this many seconds (a rerun resumes from the cache); "
                                       "0 = no limit."}
    )
    device: str = field(default="", metadata={"help": "torch device of the LLM; empty = cuda when available."})
    cache_file: str = field(
        default="", metadata={"help": "JSON-lines answer cache; empty = out_dir/answers.cache.jsonl. Share one "
                                      "between runs so no prompt is asked twice."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of samples and k-means."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty folder alignrec did not create."})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.cluster_source not in CLUSTER_SOURCES:
            raise ConfigError(f"cluster_source must be one of {CLUSTER_SOURCES}, got {self.cluster_source!r}")
        if self.cluster_source == "file" and not self.cluster_file:
            raise ConfigError("cluster_source=file needs --cluster_file (item vectors)")
        bad = sorted(set(self.kind_list()) - {"item", "user"})
        if bad or not self.kind_list():
            raise ConfigError(f"kinds must name item and/or user, got {self.kinds!r}")
        for name in ("item_clusters", "user_clusters", "group_examples", "num_factors", "user_history_items",
                     "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_items", "max_users", "max_title_words", "max_seconds", "user_holdout_items"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.mode == "collective" and (self.max_items or self.max_users):
            raise ConfigError("max_items / max_users sample individual mode; collective mode covers everything")

    def kind_list(self) -> list[str]:
        return [k.strip() for k in self.kinds.split(",") if k.strip()]

    def factor_list(self) -> list[str]:
        return [f.strip() for f in self.factors.split(",") if f.strip()]


@dataclass
class EncodeConfig:
    """Knowledge text -> vectors with a frozen text encoder (``tokenization.embeddings``)."""

    knowledge_dir: str = field(default="", metadata={"help": "Output of `alignrec knowledge extract`."})
    out_dir: str = field(default="", metadata={"help": "Where item_vectors / user_vectors .safetensors go."})
    encoder: str = field(
        default="sentence", metadata={"help": f"One of {ENCODERS}: sentence encoder (all-MiniLM-L6-v2 by default) "
                                              "or the frozen LLM's mean-pooled last hidden states."}
    )
    encoder_dir: str = field(default="", metadata={"help": "Encoder folder; empty = the default of `encoder`."})
    max_length: int = field(default=256, metadata={"help": "Token limit per answer."})
    batch_size: int = field(default=32, metadata={"help": "Texts per encoder forward pass."})
    device: str = field(default="cpu", metadata={"help": "torch device of the encoder."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty folder alignrec did not create."})

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.max_length < 1 or self.batch_size < 1:
            raise ConfigError("max_length and batch_size must be >= 1")


@dataclass
class KnowledgeTrainConfig(SASRecConfig):
    """Train "SASRec + knowledge" jointly with the hybrid-expert adaptor, prestore, evaluate beside SASRec."""

    split_dir: str = field(default="", metadata={"help": "Saved SplitDataset folder."})
    vectors_dir: str = field(default="", metadata={"help": "Output of `alignrec knowledge encode`."})
    out_dir: str = field(default="", metadata={"help": "Model, prestored augmented vectors, evaluation report."})
    experts_shared: int = field(default=2, metadata={"help": "Adaptor experts shared by item and user knowledge."})
    experts_per_kind: int = field(default=2, metadata={"help": "Adaptor experts of each kind alone."})
    adaptor_hidden: int = field(default=64, metadata={"help": "Hidden size of each expert MLP."})
    adaptor_dropout: float = field(default=0.1, metadata={"help": "Dropout inside the experts."})
    knowledge_kinds: str = field(
        default="item", metadata={"help": "Knowledge the model reads: item (added to item embeddings), user "
                                          "(joined at the final state) or item,user. Default item: SmolLM2's user "
                                          "knowledge lowered NDCG@10 on scientific and office (README)."}
    )
    baseline: bool = field(default=True, metadata={"help": "Also train plain SASRec (same config) as the row beside."})
    knowledge_model: bool = field(
        default=True, metadata={"help": "Train SASRec + knowledge (false with baseline=true: the SASRec row alone, "
                                        "e.g. to split a CPU budget into two jobs)."}
    )
    ks: str = field(default="1,5,10,20", metadata={"help": "Cut-offs of the evaluation table."})
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty folder alignrec did not create."})

    def __post_init__(self) -> None:
        try:
            validate_sasrec(self)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.experts_shared < 0 or self.experts_per_kind < 0 or self.experts_shared + self.experts_per_kind < 1:
            raise ConfigError("experts_shared + experts_per_kind must be >= 1 (both >= 0)")
        if self.adaptor_hidden < 1 or not 0 <= self.adaptor_dropout < 1:
            raise ConfigError("adaptor_hidden must be >= 1 and adaptor_dropout in [0, 1)")
        if not (self.baseline or self.knowledge_model):
            raise ConfigError("baseline and knowledge_model are both false: nothing to train")
        kinds = self.knowledge_kind_list()
        if not kinds or set(kinds) - {"item", "user"}:
            raise ConfigError(f"knowledge_kinds must name item and/or user, got {self.knowledge_kinds!r}")
        self.k_list()

    def knowledge_kind_list(self) -> list[str]:
        return [k.strip() for k in self.knowledge_kinds.split(",") if k.strip()]

    def k_list(self) -> list[int]:
        return parse_ks(self.ks)
