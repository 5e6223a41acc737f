"""The DPO starting point: a finished SFT run loaded for further training, and its exact frozen reference.

- Adapter runs (LoRA / QLoRA): the base model resized to the run's embedding rows, plus the SFT adapter loaded
  *trainable* (LoRA weights and the peft trainable-token code rows, or the ``modules_to_save`` copies). trl's
  ``DPOTrainer`` then adds a frozen ``ref`` adapter and copies the SFT weights into it, but only parameters whose
  name contains ``.default.``: peft stores the trainable-token rows as ``...trainable_tokens_delta.default`` (a
  ``ParameterDict`` entry, no trailing dot), so that copy would leave the reference's code rows at their
  pre-SFT values. ``copy_adapter_weights`` copies every parameter of the adapter (and is checked by the tests).
- Full runs (full fine-tuning, from-scratch models, ``merged/`` folders): the policy and a second, frozen copy
  loaded from the same folder as the reference (trl would otherwise reload ``config._name_or_path`` itself).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recdata.errors import InputFileError, UserError
from trainer.export import ITEM_TOKENIZER_DIR, check_code_ids, check_item_tokenizer, read_manifest

logger = logging.getLogger(__name__)

__all__ = ["REF_ADAPTER", "SftStart", "copy_adapter_weights", "load_sft_run"]

REF_ADAPTER = "ref"  # the name trl's DPOTrainer gives the frozen copy of a pretrained adapter


@dataclass
class SftStart:
    model: Any  # the policy: PeftModel with the SFT adapter trainable, or a full causal LM
    ref_model: Any  # full runs: frozen copy of the SFT model; adapter runs: None (the 'ref' adapter inside model)
    tokenizer: Any  # the run's HF tokenizer (code tokens included)
    item_tokenizer: Any
    manifest: dict[str, Any]  # the SFT run's alignrec_train.json
    code_token_ids: list[int]


def _freeze(model) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def _load_base(manifest: dict[str, Any], sft_dir: Path, dtype: torch.dtype, tokenizer):
    from trainer.config import ModelArguments
    from trainer.model_setup import load_base_model

    base_dir = Path(manifest["base_model"])
    if not base_dir.is_dir():
        raise InputFileError(f"{sft_dir} holds a LoRA adapter over {base_dir}, which is missing; restore that folder "
                             "or start DPO from the run's merged/ folder (SFT with --merge true)")
    mode = manifest.get("finetune_mode", "lora")
    args = ModelArguments(model_name_or_path=str(base_dir), finetune_mode=mode)
    base = load_base_model(args, dtype, tokenizer)
    base.resize_token_embeddings(manifest["embedding_rows"], mean_resizing=False)
    return base


def load_sft_run(sft_dir: str | os.PathLike, dtype: torch.dtype) -> SftStart:
    """Load a finished SFT run (guards as ``load_for_inference``) as the DPO policy and reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenization import ItemTokenizer

    sft_dir = Path(sft_dir)
    try:
        manifest = read_manifest(sft_dir)
    except FileNotFoundError as exc:
        raise InputFileError(f"sft_run_dir: {exc}") from exc
    item_tokenizer = ItemTokenizer.from_pretrained(sft_dir / ITEM_TOKENIZER_DIR)
    check_item_tokenizer(manifest, item_tokenizer, str(sft_dir / ITEM_TOKENIZER_DIR))
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # as in SFT: padding is masked out of every log-prob
    ids = check_code_ids(manifest, tokenizer, item_tokenizer, str(sft_dir))
    if manifest["kind"] == "full":
        model = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=dtype)
        ref = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=dtype)
        _freeze(ref)
    elif manifest["kind"] == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(_load_base(manifest, sft_dir, dtype, tokenizer), sft_dir, is_trainable=True)
        ref = None
    else:
        raise UserError(f"{sft_dir}: unknown run kind {manifest['kind']!r} in its manifest; expected full or adapter")
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != manifest["embedding_rows"]:
        raise UserError(f"{sft_dir}: model has {rows} embedding rows, its manifest says {manifest['embedding_rows']}")
    model.config.pad_token_id = tokenizer.pad_token_id
    logger.info("DPO starts from %s (%s, %s); code tokens %d..%d", sft_dir, manifest["kind"],
                manifest.get("finetune_mode", "full"), ids[0], ids[-1])
    return SftStart(model, ref, tokenizer, item_tokenizer, manifest, ids)


@torch.no_grad()
def copy_adapter_weights(model, source: str = "default", target: str = REF_ADAPTER) -> int:
    """Copy every parameter of adapter ``source`` into adapter ``target`` (LoRA, trainable tokens, saved modules).

    A parameter belongs to an adapter when one dotted component of its name is the adapter name
    (``lora_A.default.weight``, ``trainable_tokens_delta.default``, ``modules_to_save.default.weight``).
    Returns the number of tensors copied; raises when ``target`` lacks one of them.
    """
    params = dict(model.named_parameters())
    copied = 0
    for name, param in params.items():
        parts = name.split(".")
        if source not in parts:
            continue
        other = ".".join(target if part == source else part for part in parts)
        if other not in params:
            raise RuntimeError(f"adapter {target!r} has no parameter {other} (copy of {name}); peft layout changed?")
        params[other].copy_(param)
        copied += 1
    if not copied:
        raise RuntimeError(f"adapter {source!r} has no parameters to copy; is this a peft model with that adapter?")
    return copied
