"""Training configs: our model/data/run dataclasses next to TRL's ``SFTConfig`` (reused, not re-declared).

``parse_train_config(argv)`` parses all four with ``recdata.config.parse_config`` (YAML via ``--config``, flags
win, unknown keys raise). ``resolve_runtime(...)`` then fills the "auto" choices (precision, CPU settings).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from trl import SFTConfig

from alignrec.recommenders.sampled_softmax import LOSSES
from recdata.config import parse_config
from trainer.cold_rows import COLD_ROWS
from trainer.content_rows import CONTENT_ROWS
from trainer.lm_loss import LM_LOSSES
from trainer.row_init import ROW_INITS, SCRATCH_ROW_INITS

logger = logging.getLogger(__name__)

MODEL_INITS = ("pretrained", "scratch")
SCRATCH_ARCHITECTURES = ("llama", "phi", "gpt2")
FINETUNE_MODES = ("lora", "qlora", "full")
ROW_TRAINING = ("trainable_tokens", "modules_to_save")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelArguments:
    """Which LLM to start from and how to adapt it."""

    model_name_or_path: str = field(
        default="",
        metadata={"help": "Local HF causal-LM folder. Empty: the converted SmolLM2-135M-Instruct "
                  "(recdata.paths.default_llm_dir()). With model_init=scratch only its config is ignored."},
    )
    model_init: str = field(
        default="pretrained",
        metadata={"help": "pretrained: load weights from model_name_or_path. scratch: a small random Llama "
                  "(TIGER-style, the CPU path) built from the scratch_* fields; use finetune_mode=full.",
                  "choices": list(MODEL_INITS)},
    )
    tokenizer_name_or_path: str = field(
        default="",
        metadata={"help": "Folder of the HF tokenizer, or `codes_only` (text erased, only item code tokens; for "
                          "scratch models). Empty: model_name_or_path (or the default LLM folder)."},
    )
    # Scratch model: each field changes capacity / speed / regularisation of the from-scratch model.
    scratch_architecture: str = field(
        default="llama",
        metadata={"help": "scratch: llama (RoPE, RMSNorm, SwiGLU; attention dropout only), phi (RoPE, parallel "
                  "attention + GELU MLP; dropout on embeddings, residuals and attention: the regularised one) or "
                  "gpt2 (learned absolute positions, which do not extrapolate to histories longer than trained; "
                  "dropout like phi).",
                  "choices": list(SCRATCH_ARCHITECTURES)},
    )
    scratch_dropout: float = field(
        default=0.0, metadata={"help": "scratch: dropout probability. phi / gpt2: embedding, residual and "
                                       "attention dropout; llama: attention dropout (it has no other)."}
    )
    scratch_layers: int = field(default=4, metadata={"help": "scratch: number of decoder layers (depth)."})
    scratch_hidden: int = field(default=256, metadata={"help": "scratch: hidden size (width of every layer)."})
    scratch_heads: int = field(default=4, metadata={"help": "scratch: attention heads; must divide scratch_hidden."})
    scratch_kv_heads: int = field(default=0, metadata={"help": "scratch: key/value heads (GQA); 0 = scratch_heads."})
    scratch_intermediate: int = field(default=0, metadata={"help": "scratch: MLP width; 0 = 4 * scratch_hidden."})
    scratch_max_positions: int = field(default=1024, metadata={"help": "scratch: longest sequence (RoPE table)."})
    scratch_tie_embeddings: bool = field(default=True, metadata={"help": "scratch: tie input and output embeddings."})
    finetune_mode: str = field(
        default="lora",
        metadata={"help": "lora | qlora (bitsandbytes 4-bit nf4 base, also on CPU) | full (every weight).",
                  "choices": list(FINETUNE_MODES)},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha (update scaled by alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        metadata={"help": "Module names that get LoRA adapters (default: all attention + MLP projections)."},
    )
    new_rows_init: str = field(
        default="auto",
        metadata={"help": "How the code-token rows start. codebook: the ItemTokenizer's codebook vectors through "
                  "its alignment projection (error if it has none). mean: mean of existing rows + small noise. "
                  "item_vectors: each code's row is the mean of its items' vectors (item_vectors_dir), "
                  "PCA-projected to the model width at the scale of the rows they join, so rarely seen items start "
                  "near their content neighbours. random: the model's own init (scratch). auto: scratch -> random; "
                  "pretrained -> item_vectors when item_vectors_dir is set (the pipeline sets it), else mean: the "
                  "order measured on the LLM path (docs/results.md#llm-alignment-cells; codebook rows last).",
                  "choices": list(ROW_INITS)},
    )
    item_vectors_dir: str = field(
        default="",
        metadata={"help": "new_rows_init=item_vectors: folder with vectors.npy + item_ids.json (the embeddings "
                  "stage or `alignrec embed`; the pipeline fills it with the run's embeddings stage)."},
    )
    new_rows_noise: float = field(
        default=0.1, metadata={"help": "mean init: noise std as a fraction of the existing rows' std."}
    )
    content_rows: str = field(
        default="none",
        metadata={"help": "adaptor: each item-id token's row (input embedding and output head) is its free row + a "
                  "learned adaptor of the item's vector (item_vectors_dir, the tokenizer's input vectors), trained "
                  "end to end, so a rarely seen item's row reads its content all through training, as the content "
                  "SASRec's item input does (trainer/content_rows.py); baked into the saved weights. Needs "
                  "tokenizer.item_id_level and finetune_mode=full. none: free rows only.",
                  "choices": list(CONTENT_ROWS)},
    )
    content_rows_hidden: int = field(
        default=0, metadata={"help": "content_rows=adaptor: hidden width of its GELU MLP; 0 = one linear map."}
    )
    content_rows_dropout: float = field(
        default=0.0, metadata={"help": "content_rows=adaptor: dropout on the MLP's hidden layer (linear: on its "
                                       "input vectors)."}
    )
    cold_rows: str = field(
        default="auto",
        metadata={"help": "Under the cold-item protocol (the tasks build lists items without training), how their "
                  "own-token rows leave training. start: as they started (masked out of every softmax, never "
                  "moved). fitted: a ridge map of their item vectors (item_vectors_dir) fitted on the warm items' "
                  "trained rows, so they sit where a warm item with that content ended (trainer/cold_rows.py). "
                  "auto: fitted for a pretrained LLM given item_vectors_dir and an item-id level "
                  "(tokenizer.item_id_level), else start (chosen on ML-100K valid, docs/results.md#cold-rows). "
                  "Ignored outside the protocol.",
                  "choices": list(COLD_ROWS)},
    )
    new_rows_training: str = field(
        default="trainable_tokens",
        metadata={"help": "How LoRA trains the code-token rows. trainable_tokens: peft trainable_token_indices, "
                  "stores and optimises only those rows (cheap). modules_to_save: full trainable copies of "
                  "embed_tokens (and lm_head): every row adapts, but 2-3x the embedding memory plus Adam states.",
                  "choices": list(ROW_TRAINING)},
    )

    def __post_init__(self) -> None:
        _check_choice("model_init", self.model_init, MODEL_INITS)
        _check_choice("finetune_mode", self.finetune_mode, FINETUNE_MODES)
        _check_choice("new_rows_init", self.new_rows_init, ROW_INITS)
        _check_choice("new_rows_training", self.new_rows_training, ROW_TRAINING)
        if self.model_init == "scratch" and self.finetune_mode != "full":
            raise ValueError(
                f"model_init=scratch trains a random model, so adapters make no sense: set finetune_mode=full "
                f"(got {self.finetune_mode!r})"
            )
        _check_choice("scratch_architecture", self.scratch_architecture, SCRATCH_ARCHITECTURES)
        if self.model_init == "scratch" and self.new_rows_init not in SCRATCH_ROW_INITS:
            raise ValueError(f"new_rows_init={self.new_rows_init} describes a pretrained vocabulary; a scratch "
                             f"model takes one of {', '.join(SCRATCH_ROW_INITS)}")
        if not 0.0 <= self.scratch_dropout < 1.0:
            raise ValueError(f"scratch_dropout must be in [0, 1), got {self.scratch_dropout}")
        if self.scratch_hidden % self.scratch_heads:
            raise ValueError(f"scratch_heads={self.scratch_heads} must divide scratch_hidden={self.scratch_hidden}")
        if self.lora_r < 1 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"need lora_r >= 1 and 0 <= lora_dropout < 1, got {self.lora_r}, {self.lora_dropout}")
        if self.new_rows_noise < 0:
            raise ValueError(f"new_rows_noise must be >= 0, got {self.new_rows_noise}")
        _check_choice("content_rows", self.content_rows, CONTENT_ROWS)
        _check_choice("cold_rows", self.cold_rows, COLD_ROWS)
        if self.content_rows != "none" and self.finetune_mode != "full":
            raise ValueError(f"content_rows={self.content_rows} needs finetune_mode=full (got {self.finetune_mode}): "
                             "with LoRA peft wraps and freezes the embedding (trainable-token rows or a "
                             "modules_to_save copy), so the adaptor would neither train nor be saved")
        if self.content_rows_hidden < 0 or not 0.0 <= self.content_rows_dropout < 1.0:
            raise ValueError(f"need content_rows_hidden >= 0 and 0 <= content_rows_dropout < 1, got "
                             f"{self.content_rows_hidden}, {self.content_rows_dropout}")


@dataclass
class DataArguments:
    """What to train on: the sft_tasks DatasetDict and the ItemTokenizer whose codes it uses."""

    dataset_dir: str = field(
        default="", metadata={"help": "Saved datasets.DatasetDict (train, validation; prompt, completion, task)."}
    )
    item_tokenizer_dir: str = field(default="", metadata={"help": "ItemTokenizer folder (save_pretrained)."})
    eval_task: str = field(
        default="seqrec", metadata={"help": "Validation rows of this task give the held-out loss ('' = all rows)."}
    )
    max_eval_samples: int = field(default=512, metadata={"help": "Cap on held-out rows (0 = no cap)."})
    max_train_samples: int = field(default=0, metadata={"help": "Cap on training rows, for smoke runs (0 = all)."})
    ranking_eval_users: int = field(
        default=0, metadata={"help": "Ranking validation: at every evaluation, constrained beam search for this "
                                     "many valid users (a fixed seeded subset; valid targets only, never test) "
                                     "logs eval_ranking_recall@10 / eval_ranking_ndcg@10. 0 = off."}
    )
    ranking_eval_beams: int = field(default=20, metadata={"help": "Ranking validation: beam width (>= 10)."})
    ranking_eval_exclude_history: bool = field(
        default=True, metadata={"help": "Ranking validation: never recommend history items (as evaluation does)."}
    )

    def __post_init__(self) -> None:
        if not self.dataset_dir or not self.item_tokenizer_dir:
            raise ValueError("dataset_dir and item_tokenizer_dir are required (flags or YAML keys)")
        if self.max_eval_samples < 0 or self.max_train_samples < 0 or self.ranking_eval_users < 0:
            raise ValueError("max_eval_samples, max_train_samples and ranking_eval_users must be >= 0")
        if self.ranking_eval_beams < 10:
            raise ValueError(f"ranking_eval_beams must be >= 10 (the metrics are @10), got {self.ranking_eval_beams}")


@dataclass
class AlignRecTrainArguments:
    """Our run-level choices that SFTConfig has no field for."""

    precision: str = field(
        default="auto",
        metadata={"help": "auto: bf16 on a GPU that supports it, fp32 on CPU (also disables gradient "
                  "checkpointing there). Overrides SFTConfig bf16/fp16.", "choices": list(PRECISIONS)},
    )
    merge: bool = field(default=False, metadata={"help": "After training, also write OUTPUT/merged: a full model."})
    overwrite: bool = field(default=False, metadata={
        "help": "Train into an existing non-empty output_dir that alignrec did not write (its other files are kept)."})
    loss_curve: bool = field(default=True, metadata={"help": "Write OUTPUT/loss_curve.png at the end."})
    tensorboard: bool = field(default=True, metadata={"help": "Also log to TensorBoard (adds it to report_to)."})
    early_stopping_patience: int = field(
        default=0, metadata={"help": "Stop after this many evaluations without a better metric_for_best_model "
                                     "(HF EarlyStoppingCallback; needs load_best_model_at_end). 0 = off."}
    )
    code_rows_learning_rate: float = field(
        default=0.0,
        metadata={"help": "Learning rate of the code-token rows (peft trainable-token rows or modules_to_save "
                  "embedding copies; in full fine-tuning the embedding matrices); 0 = learning_rate. The new "
                  "rows start far from where the tasks need them while LoRA wants small steps, so a short run "
                  "gives them their own, higher rate (same schedule)."},
    )
    item_head_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the flat item-head loss (needs tokenizer.item_id_level): at every item boundary "
                  "also predict the next item's own token by a softmax over the item-id tokens (SASRec's flat "
                  "output in the same LM head, trainer/item_head.py); 0 = off."},
    )
    item_head_decode_weight: float = field(
        default=1.0,
        metadata={"help": "With an item head: decoding ranks by log p(codes) + this x log p_head(item) (ranking "
                  "validation, and every consumer of the run through its manifest)."},
    )
    lm_loss: str = field(
        default="auto",
        metadata={"help": "The causal-LM (code) loss. full: the model's own logits, [batch, seq, vocab] floats (TRL's "
                  "fused head where nothing else needs the output rows). chunked: the same loss, exactly, from the "
                  "last hidden states and the output head's rows, in tiles of 4096 positions x 8192 tokens, "
                  "recomputed in the backward (trainer/lm_loss.py): no full logits at any vocabulary, training and "
                  "evaluation; the item head then reads the hidden states too. auto = chunked from 100,000 "
                  "vocabulary tokens (tokenizer.item_id_level at a large catalogue), else full (recorded in the run "
                  "manifest).", "choices": list(LM_LOSSES)},
    )
    # The item head's softmax over N items (alignrec/recommenders/sampled_softmax.py, shared with SASRec).
    item_head_loss: str = field(
        default="auto",
        metadata={"help": "With an item head: auto = full below 100,000 items, sampled from there (recorded in the "
                  "run manifest). full: softmax over every item-id token. chunked: the same loss, exactly, 8192 "
                  "items at a time (memory bounded). sampled: the target + item_head_num_negatives shared negatives "
                  "with the logQ correction. Evaluation always reports the exact head loss (chunked for sampled).",
                  "choices": list(LOSSES)},
    )
    item_head_num_negatives: int = field(
        default=2048, metadata={"help": "item_head_loss=sampled: negatives drawn per micro-batch, shared by every "
                                        "item boundary of it."}
    )
    item_head_negative_alpha: float = field(
        default=0.75, metadata={"help": "item_head_loss=sampled: negatives drawn proportional to (training target "
                                        "count + 1)^alpha (0 = uniform); the logQ correction keeps any alpha "
                                        "consistent, alpha only changes the variance."}
    )
    item_head_logq_weight: float = field(
        default=0.0, metadata={"help": "With an item head: train on head logits + this x log p_train(item) (logit "
                                       "adjustment, Menon et al.; p_train: the head's targets in the training set, "
                                       "add-one smoothed). Decoding reads the raw logits, so > 0 moves popularity "
                                       "out of the head and ranks the tail higher; 0 = off."}
    )

    packed_rows: bool = field(
        default=False,
        metadata={"help": "With packing: true (TRL bfd packing, padding-free): keep each packed row of max_length "
                  "tokens its own batch row (position ids restart per example, so each row gets its own "
                  "block-diagonal mask) instead of TRL's one flattened sequence per batch. Same loss; where no "
                  "varlen attention kernel exists (CPU sdpa / eager) attention then costs batch x max_length^2 "
                  "instead of (batch x max_length)^2. false = TRL's layout (right with FlashAttention)."},
    )

    max_train_seconds: float = field(
        default=0.0,
        metadata={"help": "Stop training after this many seconds of training (checked after every step, agreed by "
                  "all ranks), then save as at a normal end; 0 = no limit. A guard for fixed-budget runs."},
    )

    def __post_init__(self) -> None:
        _check_choice("precision", self.precision, PRECISIONS)
        if self.early_stopping_patience < 0:
            raise ValueError(f"early_stopping_patience must be >= 0, got {self.early_stopping_patience}")
        if self.max_train_seconds < 0:
            raise ValueError(f"max_train_seconds must be >= 0 (0 = no limit), got {self.max_train_seconds}")
        if self.item_head_weight < 0 or self.item_head_decode_weight < 0:
            raise ValueError("item_head_weight and item_head_decode_weight must be >= 0")
        _check_choice("item_head_loss", self.item_head_loss, LOSSES)
        _check_choice("lm_loss", self.lm_loss, LM_LOSSES)
        if self.item_head_num_negatives < 1:
            raise ValueError(f"item_head_num_negatives must be >= 1, got {self.item_head_num_negatives}")
        finite = float("inf")
        if not (0.0 <= self.item_head_negative_alpha < finite and 0.0 <= self.item_head_logq_weight < finite):
            raise ValueError(f"item_head_negative_alpha and item_head_logq_weight must be finite values >= 0, got "
                             f"{self.item_head_negative_alpha}, {self.item_head_logq_weight}")
        if self.code_rows_learning_rate < 0:
            raise ValueError(f"code_rows_learning_rate must be >= 0 (0 = learning_rate), got {self.code_rows_learning_rate}")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


def parse_train_config(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, AlignRecTrainArguments, SFTConfig]:
    """Parse flags / ``--config`` YAML. Without CUDA, SFTConfig's bf16 default (True) would be rejected at parse
    time, so CPU defaults go in underneath the YAML and the flags."""
    import warnings

    cpu_defaults = {} if torch.cuda.is_available() else {"bf16": False, "use_cpu": True}
    with warnings.catch_warnings():  # transformers' own rename notice, printed before any error line of ours
        warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
        return parse_config([ModelArguments, DataArguments, AlignRecTrainArguments, SFTConfig], argv,
                            config=cpu_defaults, config_source="--config / flags")


def resolve_precision(precision: str) -> torch.dtype:
    """The weights dtype: auto is bf16 on a bf16-capable GPU, else fp32 (CPU has no fast bf16)."""
    if precision == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def resolve_runtime(run: AlignRecTrainArguments, sft: SFTConfig) -> torch.dtype:
    """Make SFTConfig agree with the chosen precision and device; returns the weights dtype."""
    dtype = resolve_precision(run.precision)
    sft.bf16 = dtype == torch.bfloat16
    sft.fp16 = dtype == torch.float16
    if not torch.cuda.is_available():
        if sft.activation_checkpointing and run.precision == "auto":
            logger.info("CPU run: activation checkpointing off (precision=auto); set precision explicitly to keep it")
            sft.activation_checkpointing = sft.gradient_checkpointing = False
        sft.use_cpu = True
    if run.tensorboard and "tensorboard" not in sft.report_to:
        sft.report_to = [*sft.report_to, "tensorboard"]
    return dtype
