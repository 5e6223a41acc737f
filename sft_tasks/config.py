"""``TaskConfig``: which alignment tasks to build, how to mix them and how to draw negatives."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sft_tasks.formatting import DEFAULT_PROMPT_FORMAT, PROMPT_FORMATS
from sft_tasks.templates import TEMPLATES

TASK_NAMES = ("seqrec", "seqrec_full", "item2code", "code2item", "fusion", "query2item", "binary", "choice")
NEGATIVE_STRATEGIES = ("random", "popular", "hard")
ITEM_TEXT_FIELDS = ("title", "brand", "categories", "description")

DEFAULT_WEIGHTS = {"seqrec": 1.0, "item2code": 1.0, "code2item": 1.0, "fusion": 0.5, "query2item": 1.0,
                   "binary": 0.5, "choice": 0.5}


@dataclass
class TaskConfig:
    """Builds the stage-two SFT mixture. Every field is also a ``alignrec tasks build`` flag."""

    # ---- inputs / outputs (used by the CLI; the library takes objects) --------------------------------
    split_dir: str = field(default="", metadata={"help": "Saved SplitDataset folder (`alignrec data prepare`)."})
    item_tokenizer_dir: str = field(default="", metadata={"help": "Saved ItemTokenizer folder (`alignrec tokenize`)."})
    hf_tokenizer_dir: str = field(  # a folder, or `codes_only` (alignrec.llm.hf_tokenizer)
        default="", metadata={"help": "HF tokenizer/model folder; its chat template formats prompts. Empty: SmolLM2 default."}
    )
    output_dir: str = field(default="", metadata={"help": "Where the DatasetDict, preference pairs and stats.json go."})
    overwrite: bool = field(default=False, metadata={
        "help": "Write into an existing non-empty folder that alignrec did not write (its other files are kept)."})

    # ---- mixture ---------------------------------------------------------------------------------------
    weights: str = field(
        default=json.dumps(DEFAULT_WEIGHTS),
        metadata={"help": f"JSON {{task: weight}} over {list(TASK_NAMES)}; missing or 0 = task not built. With "
                          "mixture_size=0 a weight multiplies the task's natural size (1 = every example once, "
                          "2 = twice, 0.5 = a random half); otherwise weights are normalised to fractions of mixture_size."},
    )
    mixture_size: int = field(
        default=0, metadata={"help": "Total number of training examples; 0 = sum of weight x task size."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for sampling, negatives, paraphrase choice and shuffling."})
    max_history: int = field(
        default=0, metadata={"help": "Items kept in a history (most recent); 0 = the split's max_history."}
    )
    scenario_prompts: bool = field(
        default=False, metadata={"help": "seqrec and validation prompts name the target's scenario ('the next item in "
                                         "kitchen') and tag each history item with its scenario; needs a split "
                                         "with scenarios. Inference must then use seqrec_scenario_prompt."}
    )
    max_templates: int = field(
        default=0, metadata={"help": "Use only the first N paraphrases of each task (1 = a single prompt); 0 = all."}
    )
    prompt_format: str = field(
        default=DEFAULT_PROMPT_FORMAT,
        metadata={"help": "How prompts are written. chat: the tokenizer's chat template with a system prompt (or a "
                          "'### Instruction' format without one). plain: the instruction text and a newline, no "
                          "template, no system text. codes: like plain, but seqrec, seqrec_full and validation prompts "
                          "are the BOS token and the history's codes alone (needed by seqrec_full on a text LLM). The "
                          "build records it and a trained run's manifest carries it, so evaluation, ranking "
                          "validation, the cache and `alignrec recommend` prompt the same way.",
                  "choices": list(PROMPT_FORMATS)},
    )

    # ---- item text -------------------------------------------------------------------------------------
    item_text_fields: str = field(
        default="title,brand,categories",
        metadata={"help": f"Comma-separated fields shown by item2code, from {list(ITEM_TEXT_FIELDS)} (title first)."},
    )
    max_description_words: int = field(
        default=48, metadata={"help": "Descriptions are cut to this many words in prompts (long ones dominate length)."}
    )
    max_title_words: int = field(
        default=16, metadata={"help": "Titles inside histories (fusion) are cut to N words; 0 = full. Amazon titles "
                                      "run to 60+ words and would make 20-item histories ~1k tokens."}
    )

    # ---- query2item ------------------------------------------------------------------------------------
    query_keywords: int = field(default=3, metadata={"help": "Key phrases (TF-IDF over descriptions) per query."})
    queries_per_item: int = field(default=2, metadata={"help": "Attribute queries kept per item (0 = all variants)."})
    query_file: str = field(
        default="",
        metadata={"help": "Optional JSON {item_id: [query, ...]} of LLM-generated queries (`alignrec tasks queries`) "
                          "added to the attribute queries."},
    )

    # ---- user knowledge (REKI) ---------------------------------------------------------------------------
    user_knowledge_dir: str = field(
        default="",
        metadata={"help": "Optional output folder of `alignrec knowledge extract`: its user-preference text (built "
                          "from each user's training part only) is put in front of the seqrec prompts."},
    )
    user_knowledge_words: int = field(
        default=48, metadata={"help": "The user-knowledge text is cut to this many words in a prompt."}
    )
    user_tokens: int = field(
        default=0,
        metadata={"help": "Put a learned token per training user (<user_0>, ...) in front of every seqrec prompt of "
                          "that user (seqrec_full included): the user's long-run taste in one embedding row. The "
                          "value bounds the vocabulary: users past it share tokens round-robin. 0 = off. Not with "
                          "user_knowledge_dir (one prefix per user)."},
    )

    # ---- negatives -------------------------------------------------------------------------------------
    negative_strategy: str = field(
        default="hard", metadata={"help": f"One of {list(NEGATIVE_STRATEGIES)}: how negatives are drawn."}
    )
    hard_prefix_levels: int = field(
        default=2, metadata={"help": "Hard negatives share the true item's first N code levels (fewer when none exist)."}
    )
    popularity_alpha: float = field(
        default=0.75, metadata={"help": "Popular negatives are drawn with probability ~ train count ** alpha."}
    )
    binary_negatives: int = field(default=1, metadata={"help": "'no' examples per 'yes' example in the binary task."})
    choice_candidates: int = field(default=5, metadata={"help": "Candidates shown in the choice task (1 positive)."})
    preference_negatives: int = field(
        default=1, metadata={"help": "Rejected items per window in the preference pairs (0 = no preference file)."}
    )

    # ---- validation / stats ----------------------------------------------------------------------------
    validation_template_index: int = field(
        default=0, metadata={"help": "Seqrec paraphrase used for the validation set (match inference)."}
    )
    preview: int = field(default=0, metadata={"help": "Print N random training examples after building."})
    stats_sample: int = field(
        default=10000, metadata={"help": "Token statistics use at most N random examples per task (counts stay "
                                         "exact; total_tokens is extrapolated); 0 = tokenize everything."}
    )

    def __post_init__(self) -> None:
        weights = self.weight_dict()
        unknown = sorted(set(weights) - set(TASK_NAMES))
        if unknown:
            raise ValueError(f"weights: unknown task(s) {unknown}; valid tasks are {list(TASK_NAMES)}")
        bad = {k: v for k, v in weights.items() if not isinstance(v, int | float) or v < 0}
        if bad:
            raise ValueError(f"weights: values must be non-negative numbers, got {bad}")
        if not any(v > 0 for v in weights.values()):
            raise ValueError("weights: at least one task needs a positive weight")
        self.weights = json.dumps(weights)  # YAML may give a mapping; keep one JSON form for the saved config
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {list(PROMPT_FORMATS)}, got {self.prompt_format!r}")
        if self.prompt_format == "codes" and self.scenario_prompts:
            raise ValueError("prompt_format codes has no text to name a scenario in; scenario_prompts needs "
                             "prompt_format chat or plain")
        if self.negative_strategy not in NEGATIVE_STRATEGIES:
            raise ValueError(f"negative_strategy must be one of {list(NEGATIVE_STRATEGIES)}, got {self.negative_strategy!r}")
        fields = self.text_fields()
        if not fields or fields[0] != "title" or any(f not in ITEM_TEXT_FIELDS for f in fields):
            raise ValueError(
                f"item_text_fields must start with 'title' and use only {list(ITEM_TEXT_FIELDS)}, got {self.item_text_fields!r}"
            )
        for name in ("mixture_size", "max_history", "max_templates", "query_keywords", "queries_per_item",
                     "binary_negatives", "preference_negatives", "preview", "max_description_words",
                     "max_title_words", "stats_sample", "user_knowledge_words", "user_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.user_tokens and self.user_knowledge_dir:
            raise ValueError("user_tokens and user_knowledge_dir both put a prefix in front of a user's prompts; "
                             "set one of them")
        if self.hard_prefix_levels < 1:
            raise ValueError(f"hard_prefix_levels must be >= 1, got {self.hard_prefix_levels}")
        if self.choice_candidates < 2:
            raise ValueError(f"choice_candidates must be >= 2 (1 positive + negatives), got {self.choice_candidates}")
        n_seqrec = len(TEMPLATES["seqrec"])
        if not 0 <= self.validation_template_index < n_seqrec:
            raise ValueError(f"validation_template_index must be in [0, {n_seqrec}), got {self.validation_template_index}")

    def weight_dict(self) -> dict[str, float]:
        try:
            weights = json.loads(self.weights) if isinstance(self.weights, str) else dict(self.weights)
        except json.JSONDecodeError as exc:
            raise ValueError(f'weights must be a JSON object like {{"seqrec": 1.0}}, got {self.weights!r}: {exc}') from exc
        if not isinstance(weights, dict):
            raise ValueError(f"weights must be a JSON object {{task: weight}}, got {self.weights!r}")
        return weights

    def active_weights(self) -> dict[str, float]:
        """Tasks with a positive weight, in the canonical TASK_NAMES order."""
        weights = self.weight_dict()
        return {name: float(weights[name]) for name in TASK_NAMES if weights.get(name, 0) > 0}

    def text_fields(self) -> list[str]:
        return [f.strip() for f in self.item_text_fields.split(",") if f.strip()]


@dataclass
class QueryGenConfig:
    """``alignrec tasks queries``: LLM-written queries for query2item, cached, written as a query_file."""

    split_dir: str = field(default="", metadata={"help": "Saved SplitDataset folder whose catalogue is described."})
    llm_dir: str = field(default="", metadata={"help": "Local HF causal LM folder; empty = the converted SmolLM2."})
    output_file: str = field(default="", metadata={"help": "JSON {item_id: [query]} to pass as TaskConfig.query_file."})
    cache_file: str = field(default="", metadata={"help": "JSON-lines answer cache; empty = output_file + '.cache.jsonl'."})
    max_items: int = field(default=0, metadata={"help": "Only the first N catalogue items (a quick look); 0 = all."})
    max_new_tokens: int = field(default=24, metadata={"help": "Generation budget per query (greedy decoding)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call."})
    item_text_fields: str = field(
        default="title,brand,categories,description", metadata={"help": "Comma-separated fields shown to the LLM."}
    )
    max_description_words: int = field(default=48, metadata={"help": "Descriptions are cut to N words."})

    def __post_init__(self) -> None:
        fields = [f.strip() for f in self.item_text_fields.split(",") if f.strip()]
        if not fields or fields[0] != "title" or any(f not in ITEM_TEXT_FIELDS for f in fields):
            raise ValueError(f"item_text_fields must start with 'title' and use only {list(ITEM_TEXT_FIELDS)}")
        for name in ("max_items", "max_new_tokens", "batch_size"):
            if getattr(self, name) < (0 if name == "max_items" else 1):
                raise ValueError(f"{name} is out of range: {getattr(self, name)}")
