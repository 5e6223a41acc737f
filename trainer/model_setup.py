"""Model set-up: load (or build from scratch), add the ItemTokenizer's code tokens, initialise their rows,
and describe the trainable part (LoRA / QLoRA adapters + code-token rows, or every weight).

The code tokens are appended in the ItemTokenizer's fixed grid order, so their ids are contiguous and the
same for every run on the same base tokenizer; ``ItemTokenizer.code_token_ids`` re-checks that at load time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PreTrainedTokenizerBase,
)

from recdata.errors import InputFileError
from recdata.paths import default_llm_dir, require
from trainer.config import ModelArguments
from trainer.content_rows import setup_content_rows
from trainer.embedding_rows import code_row_matrices, gathered, is_tied, jitter_rows, mean_start_rows
from trainer.row_init import resolve_row_init

logger = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    model: Any  # transformers PreTrainedModel (not yet peft-wrapped)
    tokenizer: PreTrainedTokenizerBase
    code_token_ids: list[int]
    peft_config: Any  # peft.LoraConfig or None (full fine-tuning)
    row_init: str  # what actually initialised the code-token rows: codebook | mean | random
    embedding_rows: int  # input embedding rows after resizing (before any peft wrapping)
    user_token_ids: list[int] = field(default_factory=list)  # ``tasks.user_tokens``' rows, before the code rows


def model_dir(args: ModelArguments) -> Path:
    if args.model_name_or_path:
        path = Path(args.model_name_or_path)
        if not path.is_dir():
            raise InputFileError(f"model_name_or_path={path} is not a folder; pass a local Hugging Face model folder "
                                 "to --model_name_or_path")
        return path
    return require(default_llm_dir(), "the default LLM (converted SmolLM2-135M-Instruct)")


def load_tokenizer(args: ModelArguments) -> PreTrainedTokenizerBase:
    from alignrec.llm.hf_tokenizer import load_hf_tokenizer

    tok = load_hf_tokenizer(args.tokenizer_name_or_path or model_dir(args),
                            "--tokenizer_name_or_path" if args.tokenizer_name_or_path else "--model_name_or_path")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # padding is masked out of the loss, any known token works
    return tok


def quantization_config(dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )


def build_scratch_model(args: ModelArguments, vocab_size: int, tok: PreTrainedTokenizerBase, dtype: torch.dtype):
    """A small random decoder (TIGER-style generative retrieval trained from scratch): Llama, Phi or GPT-2.

    Phi is the regularised choice: HF Llama has attention dropout only; Phi also drops embeddings and residual
    branches, which a from-scratch model on a few thousand users needs (it overfits otherwise), and keeps
    rotary positions (GPT-2's learned absolute positions fail on histories longer than the training windows).
    """
    if args.scratch_architecture == "phi":
        config = PhiConfig(
            vocab_size=vocab_size, hidden_size=args.scratch_hidden, num_hidden_layers=args.scratch_layers,
            num_attention_heads=args.scratch_heads, num_key_value_heads=args.scratch_kv_heads or args.scratch_heads,
            intermediate_size=args.scratch_intermediate or 4 * args.scratch_hidden,
            max_position_embeddings=args.scratch_max_positions, resid_pdrop=args.scratch_dropout,
            embd_pdrop=args.scratch_dropout, attention_dropout=args.scratch_dropout,
            tie_word_embeddings=args.scratch_tie_embeddings,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        return PhiForCausalLM(config).to(dtype)
    if args.scratch_architecture == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size, n_embd=args.scratch_hidden, n_layer=args.scratch_layers, n_head=args.scratch_heads,
            n_inner=args.scratch_intermediate or 4 * args.scratch_hidden, n_positions=args.scratch_max_positions,
            resid_pdrop=args.scratch_dropout, embd_pdrop=args.scratch_dropout, attn_pdrop=args.scratch_dropout,
            tie_word_embeddings=args.scratch_tie_embeddings,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        return GPT2LMHeadModel(config).to(dtype)
    config = LlamaConfig(
        attention_dropout=args.scratch_dropout,
        vocab_size=vocab_size,
        hidden_size=args.scratch_hidden,
        intermediate_size=args.scratch_intermediate or 4 * args.scratch_hidden,
        num_hidden_layers=args.scratch_layers,
        num_attention_heads=args.scratch_heads,
        num_key_value_heads=args.scratch_kv_heads or args.scratch_heads,
        max_position_embeddings=args.scratch_max_positions,
        tie_word_embeddings=args.scratch_tie_embeddings,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config).to(dtype)


def load_base_model(args: ModelArguments, dtype: torch.dtype, tok: PreTrainedTokenizerBase):
    if args.model_init == "scratch":
        return build_scratch_model(args, len(tok), tok, dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if args.finetune_mode == "qlora":
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": torch.cuda.current_device() if torch.cuda.is_available() else "cpu"}
    return AutoModelForCausalLM.from_pretrained(model_dir(args), **kwargs)


def check_zero3_rows(args: ModelArguments) -> None:
    """peft's trainable-token rows under ZeRO-3 are CUDA-only (peft 0.21): fail early with the fix."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if (is_deepspeed_zero3_enabled() and not torch.cuda.is_available() and args.finetune_mode != "full"
            and args.new_rows_training == "trainable_tokens"):
        raise ValueError("DeepSpeed ZeRO-3 without CUDA cannot use new_rows_training=trainable_tokens (peft only "
                         "implements its ZeRO-3 path on CUDA); set new_rows_training=modules_to_save or use ZeRO-2")


@torch.no_grad()
def init_code_rows(model, ids: list[int], item_tokenizer, mode: str, noise: float, seed: int = 0) -> str:
    """Fill the new rows of the input (and untied output) embeddings by ``mode`` (codebook or mean); returns it."""
    if mode not in ("codebook", "mean"):
        raise ValueError(f"init_code_rows fills codebook or mean rows, not {mode!r} (resolve auto first)")
    width = model.get_input_embeddings().embedding_dim  # (weight.shape is empty under ZeRO-3)
    first = ids[0]
    gen = torch.Generator().manual_seed(seed)
    vectors = item_tokenizer.code_token_embeddings() if mode == "codebook" else None
    if mode == "codebook":
        if vectors is None:
            raise ValueError("new_rows_init=codebook but the ItemTokenizer has no alignment projection "
                             "(trained without the alignment loss); use new_rows_init=mean or auto")
        if vectors.shape != (len(ids), width):
            raise ValueError(f"the ItemTokenizer's code embeddings have shape {tuple(vectors.shape)} but the model "
                             f"needs ({len(ids)}, {width}): it was aligned with a different LLM width; use "
                             "new_rows_init=mean or re-train the tokenizer against this LLM")
    targets = code_row_matrices(model)
    with gathered(targets):
        _fill_rows(targets, first, len(ids), vectors, noise, gen)
    return mode


def start_code_rows(model, ids: list[int], item_tokenizer, args: ModelArguments, seed: int = 0) -> str:
    """Apply ``args.new_rows_init`` to the code rows; returns the init actually used."""
    mode = resolve_row_init(args.new_rows_init, args.model_init, bool(args.item_vectors_dir))
    if mode == "random":
        return "random"  # the rows keep the model's own init (scratch) or the resize's
    if mode == "item_vectors":
        from trainer.item_vector_rows import init_item_vector_rows

        return init_item_vector_rows(model, ids, item_tokenizer, args.item_vectors_dir,
                                     pretrained=args.model_init != "scratch", noise=args.new_rows_noise, seed=seed)
    return init_code_rows(model, ids, item_tokenizer, mode, args.new_rows_noise, seed)


def _fill_rows(targets: list, first: int, n: int, vectors: torch.Tensor | None, noise: float,
               gen: torch.Generator) -> None:
    for weight in targets:
        old = weight[:first].float()  # [V_old, d]
        if vectors is None:
            rows = mean_start_rows(old, n, noise, gen)
        else:
            rows = vectors.float().clone()
            zero = rows.abs().sum(dim=1) == 0  # disambiguation-level codes carry no content
            rows[zero] = jitter_rows(old, n, noise, gen)[zero]
        weight[first:first + n] = rows.to(weight.dtype)


def _leaf_name(model, module) -> str:
    """Short module name peft matches on (``embed_tokens``, ``lm_head``, ``wte`` ...)."""
    return next(name.rsplit(".", 1)[-1] for name, m in model.named_modules() if m is module)


def build_peft_config(args: ModelArguments, code_ids: list[int], model):
    """LoRA on ``args.lora_target_modules`` + the new rows ``code_ids`` (the code rows, and the user-token rows
    when there are any) as trainable tokens or whole saved embedding modules; None for full fine-tuning."""
    if args.finetune_mode == "full":
        return None
    from peft import LoraConfig

    names = [_leaf_name(model, model.get_input_embeddings())]
    if not is_tied(model) and model.get_output_embeddings() is not None:
        names.append(_leaf_name(model, model.get_output_embeddings()))
    kwargs: dict[str, Any] = {}
    if args.new_rows_training == "trainable_tokens":
        # Only the code rows are stored and optimised; a tied output head follows the embedding automatically.
        kwargs["trainable_token_indices"] = {name: list(code_ids) for name in names}
    else:
        kwargs["modules_to_save"] = names
    return LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=list(args.lora_target_modules), task_type="CAUSAL_LM", **kwargs,
    )


def add_code_tokens(model, tok: PreTrainedTokenizerBase, item_tokenizer) -> list[int]:
    """Add the grid to the tokenizer (idempotent) and grow the embeddings to match."""
    ids = item_tokenizer.add_to_tokenizer(tok)
    if model.get_input_embeddings().num_embeddings < len(tok):
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    return ids


def setup_model(args: ModelArguments, item_tokenizer, dtype: torch.dtype, seed: int = 0,
                user_tokens: int = 0) -> ModelBundle:
    """Load or build the model, add the user tokens (``user_tokens``: the tasks build's count) and the code tokens,
    initialise their rows (and the code rows' content adaptor, ``content_rows``), build the peft config."""
    from sft_tasks import add_user_tokens

    check_zero3_rows(args)
    tok = load_tokenizer(args)
    if args.model_init != "scratch" and item_tokenizer.code_tokens()[0] in tok.get_vocab():
        raise ValueError(
            f"the tokenizer at {args.tokenizer_name_or_path or model_dir(args)} already holds code tokens: it is an "
            "already-extended (trained) model; start from the base model folder, or use load_for_inference"
        )
    user_ids = add_user_tokens(tok, user_tokens) if user_tokens else []  # before the codes, which stay last
    if args.model_init == "scratch":
        item_tokenizer.add_to_tokenizer(tok)  # size the random model to the final vocabulary directly
    torch.manual_seed(seed)
    model = load_base_model(args, dtype, tok)
    ids = add_code_tokens(model, tok, item_tokenizer)
    if user_ids and args.model_init != "scratch":  # a scratch model's rows are all random alike
        start_user_rows(model, user_ids[0], len(user_ids), args.new_rows_noise, seed)
    row_init = start_code_rows(model, ids, item_tokenizer, args, seed)
    setup_content_rows(model, tok, item_tokenizer, args, seed)  # after the start: the free rows keep it
    model.config.pad_token_id = tok.pad_token_id
    logger.info("code tokens at ids %d..%d (%d), rows init: %s%s", ids[0], ids[-1], len(ids), row_init,
                f"; {len(user_ids)} user tokens at ids {user_ids[0]}..{user_ids[-1]}" if user_ids else "")
    rows = model.get_input_embeddings().num_embeddings
    return ModelBundle(model, tok, ids, build_peft_config(args, [*user_ids, *ids], model), row_init, rows, user_ids)


@torch.no_grad()
def start_user_rows(model, first: int, n: int, noise: float, seed: int = 0) -> None:
    """A pretrained model's user-token rows start at the mean of its own rows (+ jitter), as ``mean`` code rows do."""
    targets = code_row_matrices(model)
    with gathered(targets):
        _fill_rows(targets, first, n, None, noise, torch.Generator().manual_seed(seed + 1))
