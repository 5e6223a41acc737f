"""``EmbeddingConfig``: which item vectors feed the RQ-VAE (text, collaborative, LEARN, fused or user file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alignrec.recommenders.learn_config import LEARNConfig, validate_learn
from alignrec.recommenders.sasrec_config import SASRecConfig, validate_sasrec
from recdata.paths import alignrec_home

SOURCES = ("text", "cf", "learn", "fused", "file", "knowledge")
FUSION_PARTS = ("text", "cf", "learn", "file", "knowledge")
TEXT_ENCODERS = ("sentence", "llm")
DEFAULT_TEMPLATE = "Title: {title}\nBrand: {brand}\nCategories: {categories}\nDescription: {description}"


@dataclass
class EmbeddingConfig(LEARNConfig, SASRecConfig):
    """Where item vectors come from and how they are cached."""

    source: str = field(
        default="text", metadata={"help": f"One of {SOURCES}: item text, collaborative (SASRec trained on the "
                                          "training part), learn (LEARN item tower over the text vectors, "
                                          "trained on the training part), fused (weighted concat of parts), a "
                                          "user file, or knowledge (item-knowledge vectors of `alignrec knowledge "
                                          "encode`).",
                                "choices": list(SOURCES)}
    )
    text_encoder: str = field(
        default="sentence", metadata={"help": "'sentence': sentence encoder (all-MiniLM-L6-v2 by default); "
                                              "'llm': frozen causal LLM, mean of last hidden states.",
                                      "choices": list(TEXT_ENCODERS)}
    )
    sentence_encoder_dir: str = field(
        default="", metadata={"help": "Sentence-transformers folder; empty = the installed all-MiniLM-L6-v2."}
    )
    llm_dir: str = field(default="", metadata={"help": "HF causal LM folder; empty = the converted SmolLM2."})
    text_template: str = field(
        default=DEFAULT_TEMPLATE,
        metadata={"help": "str.format template over {item_id} {title} {brand} {categories} {description}; "
                          "a line whose fields are all empty is dropped."},
    )
    text_max_length: int = field(default=256, metadata={"help": "Token limit per item text (longer is truncated)."})
    text_batch_size: int = field(default=64, metadata={"help": "Items per encoder forward pass."})
    text_device: str = field(default="cpu", metadata={"help": "torch device of the text encoder."})
    fusion_weights: str = field(
        default="text=1.0,cf=1.0",
        metadata={"help": "source=weight list for 'fused': each part is L2-normalised per item, multiplied by its "
                          "weight and concatenated (parts: text, cf, learn, file, knowledge)."},
    )
    file_path: str = field(default="", metadata={"help": "User vectors (.npy [N, D] or .safetensors) for 'file'."})
    file_ids_path: str = field(
        default="", metadata={"help": "Item ids, one per line or a JSON list, in the row order of file_path "
                                      "(optional for .safetensors that store 'item_ids' in their metadata)."}
    )
    knowledge_dir: str = field(
        default="", metadata={"help": "Output folder of `alignrec knowledge encode` (its item_vectors.safetensors) "
                                      "for source 'knowledge' or a 'knowledge' fusion part."}
    )
    cache_dir: str = field(default="", metadata={"help": "Embedding cache root; empty = $ALIGNREC_HOME/cache/embeddings."})
    use_cache: bool = field(default=True, metadata={"help": "Reuse cached vectors with the same key; write new ones."})

    def __post_init__(self) -> None:
        validate_sasrec(self)
        validate_learn(self)
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be one of {TEXT_ENCODERS}, got {self.text_encoder!r}")
        if self.text_max_length < 1 or self.text_batch_size < 1:
            raise ValueError("text_max_length and text_batch_size must be >= 1")
        if not self.text_template.strip():
            raise ValueError("text_template is empty; give e.g. 'Title: {title}'")
        weights = self.fusion_weight_map()
        if self.source == "fused" and len(weights) < 2:
            raise ValueError(f"source='fused' needs at least two parts in fusion_weights, got {self.fusion_weights!r}")
        needs_file = self.source == "file" or (self.source == "fused" and "file" in weights)
        if needs_file and not self.file_path:
            raise ValueError("source 'file' (or a 'file' fusion part) needs --file_path pointing at .npy/.safetensors")
        needs_knowledge = self.source == "knowledge" or (self.source == "fused" and "knowledge" in weights)
        if needs_knowledge and not self.knowledge_dir:
            raise ValueError("source 'knowledge' (or a 'knowledge' fusion part) needs --knowledge_dir: the output "
                             "folder of `alignrec knowledge encode`")

    def fusion_weight_map(self) -> dict[str, float]:
        """Parse ``fusion_weights`` ('text=1.0,cf=0.5') into an ordered dict, validating names and values."""
        out: dict[str, float] = {}
        for chunk in filter(None, (c.strip() for c in self.fusion_weights.split(","))):
            name, sep, value = chunk.partition("=")
            name = name.strip()
            if not sep or name not in FUSION_PARTS:
                raise ValueError(f"fusion_weights entry {chunk!r} must look like text=1.0, cf=0.5, learn=1.0, "
                                 "file=1.0 or knowledge=1.0")
            try:
                weight = float(value)
            except ValueError as exc:
                raise ValueError(f"fusion_weights entry {chunk!r}: weight {value!r} is not a number") from exc
            if weight <= 0 or name in out:
                raise ValueError(f"fusion_weights entry {chunk!r}: weights must be > 0 and names unique")
            out[name] = weight
        return out

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else alignrec_home() / "cache" / "embeddings"

    def learn_config(self) -> LEARNConfig:
        """The LEARN towers' part alone (what ``train_learn`` needs)."""
        return LEARNConfig(**{k: getattr(self, k) for k in LEARNConfig.__dataclass_fields__})
