"""Final artefacts of a training run, the optional merged model, and ``load_for_inference`` with guards.

A run folder holds the adapter (or full model), the HF tokenizer with code tokens, an ``item_tokenizer/``
copy, ``resolved_config.json``, ``metrics.jsonl``, ``loss_curve.png``, ``user_knowledge.json`` when the prompts
carried user knowledge (the texts it trained on, so inference builds the same prompts) and, written last,
``alignrec_train.json`` (the manifest: what the weights expect). Loading checks the manifest against the
ItemTokenizer's content hash and the tokenizer's code-token ids, so a model is never paired with the wrong item
index.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from recdata.errors import InputFileError, UserError
from recdata.io import atomic_path, atomic_write_json
from sft_tasks import USER_KNOWLEDGE_FILE

logger = logging.getLogger(__name__)

MANIFEST_FILE = "alignrec_train.json"
PROMPT_FORMAT_KEY = "prompt_format"  # the tasks build's (sft_tasks TaskConfig.prompt_format); absent = chat
ITEM_TOKENIZER_DIR = "item_tokenizer"
MERGED_DIR = "merged"
FORMAT_VERSION = 1


def build_manifest(kind: str, base_model: str, item_tokenizer, code_ids: list[int], embedding_rows: int,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION, "kind": kind, "base_model": base_model,
        "item_tokenizer_hash": item_tokenizer.content_hash, "code_token_ids": [code_ids[0], code_ids[-1]],
        "embedding_rows": int(embedding_rows), **(extra or {}),
    }


def read_manifest(output_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(output_dir) / MANIFEST_FILE
    if not Path(output_dir).exists():
        raise InputFileError(f"{output_dir}: no such folder; pass the output_dir of `alignrec train` (a run folder "
                             "holding manifest.json), e.g. runs/NAME/train/model")
    if not path.is_file():
        raise InputFileError(
            f"{path} not found: {output_dir} is not a finished alignrec training run (the manifest is written last; "
            "an interrupted run can be continued with --resume_from_checkpoint)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): the run folder is damaged; copy it again or re-run "
                        "`alignrec train` (it resumes from its checkpoints)") from None
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise UserError(f"{path} is not an alignrec training manifest (no format_version); pass the output_dir "
                        "of `alignrec train`")
    return manifest


def check_item_tokenizer(manifest: dict[str, Any], item_tokenizer, where: str) -> None:
    """Guard: the ItemTokenizer must be the one the weights were trained with."""
    if manifest["item_tokenizer_hash"] != item_tokenizer.content_hash:
        raise UserError(
            f"ItemTokenizer mismatch for {where}: trained with hash {manifest['item_tokenizer_hash'][:12]}, got "
            f"{item_tokenizer.content_hash[:12]}; use the item_tokenizer/ copy saved in the run folder, or retrain"
        )


def check_code_ids(manifest: dict[str, Any], hf_tokenizer, item_tokenizer, where: str) -> list[int]:
    """Guard: the tokenizer must hold the code tokens at the ids the weights were trained with."""
    ids = item_tokenizer.code_token_ids(hf_tokenizer)  # raises if missing / not contiguous
    if [ids[0], ids[-1]] != list(manifest["code_token_ids"]):
        raise UserError(
            f"tokenizer mismatch for {where}: code tokens at ids {ids[0]}..{ids[-1]} but the weights expect "
            f"{manifest['code_token_ids'][0]}..{manifest['code_token_ids'][1]}; load the tokenizer saved in the run"
        )
    return ids


def save_run(trainer, hf_tokenizer, item_tokenizer, output_dir: str | os.PathLike, manifest: dict[str, Any],
             user_knowledge: dict[str, str] | None = None) -> None:
    """Weights (all ranks: ZeRO-3 gathers), then tokenizer, ItemTokenizer copy, user knowledge and manifest on
    rank 0. ``user_knowledge``: the ``{user_id: text}`` the prompts carried (the tasks' ``user_knowledge.json``)."""
    output_dir = Path(output_dir)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        hf_tokenizer.save_pretrained(output_dir)
        item_tokenizer.save_pretrained(output_dir / ITEM_TOKENIZER_DIR)
        write_user_knowledge(output_dir, manifest, user_knowledge)
        atomic_write_json(output_dir / MANIFEST_FILE, manifest)
    trainer.accelerator.wait_for_everyone()


def write_user_knowledge(folder: Path, manifest: dict[str, Any], user_knowledge: dict[str, str] | None) -> None:
    """Write the prompts' user knowledge beside the weights and name it in ``manifest`` (dropped when none)."""
    manifest.pop("user_knowledge_file", None)
    if user_knowledge:
        atomic_write_json(folder / USER_KNOWLEDGE_FILE, user_knowledge)
        manifest["user_knowledge_file"] = USER_KNOWLEDGE_FILE


def read_user_knowledge(output_dir: str | os.PathLike) -> dict[str, str] | None:
    """The ``{user_id: text}`` a run's prompts carried, or None for a run trained without user knowledge.

    Every consumer of the weights (evaluation, the cache, DPO, merging) builds its prompts with it, so a model
    trained on knowledge-prefixed prompts is never scored or served on bare ones."""
    name = read_manifest(output_dir).get("user_knowledge_file")
    if not name:
        return None
    path = Path(output_dir) / name
    if not path.is_file():
        raise InputFileError(f"{path} not found: the manifest of {output_dir} says its prompts carried user "
                             "knowledge; copy the whole run folder")
    return json.loads(path.read_text(encoding="utf-8"))


def read_prompt_format(output_dir: str | os.PathLike) -> str:
    """How a run's prompts were written (``sft_tasks`` ``prompt_format``; ``chat`` for runs older than the key).

    Every consumer of the weights builds its prompts with it (``sft_tasks.seqrec_prompt(..., prompt_format=)``),
    as ranking validation did with the build's validation rows."""
    from sft_tasks import PROMPT_FORMATS

    value = read_manifest(output_dir).get(PROMPT_FORMAT_KEY, "chat")
    if value not in PROMPT_FORMATS:
        raise UserError(f"{Path(output_dir) / MANIFEST_FILE}: {PROMPT_FORMAT_KEY} {value!r} is not one of "
                        f"{list(PROMPT_FORMATS)}; this run was written by a newer alignrec")
    return value


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_for_inference(output_dir: str | os.PathLike, device: str | torch.device | None = None,
                       item_tokenizer=None, dtype: torch.dtype | None = None):
    """(model in eval mode, HF tokenizer, ItemTokenizer) from a run folder or its ``merged/`` folder.

    ``item_tokenizer`` (optional) is checked against the one the weights were trained with.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenization import ItemTokenizer

    output_dir = Path(output_dir)
    manifest = read_manifest(output_dir)
    saved = ItemTokenizer.from_pretrained(output_dir / ITEM_TOKENIZER_DIR)
    check_item_tokenizer(manifest, saved, str(output_dir / ITEM_TOKENIZER_DIR))
    if item_tokenizer is not None:
        check_item_tokenizer(manifest, item_tokenizer, f"{output_dir} (ItemTokenizer passed by the caller)")
    hf_tokenizer = AutoTokenizer.from_pretrained(output_dir)
    check_code_ids(manifest, hf_tokenizer, saved, str(output_dir))
    device = _default_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if manifest["kind"] == "full":
        model = AutoModelForCausalLM.from_pretrained(output_dir, dtype=dtype)
    else:
        from peft import PeftModel

        base_dir = Path(manifest["base_model"])
        if not base_dir.is_dir():
            raise InputFileError(
                f"{output_dir} holds a LoRA adapter over {base_dir}, which is missing; restore that folder or "
                "train with --merge to get a self-contained model"
            )
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
        base.resize_token_embeddings(manifest["embedding_rows"], mean_resizing=False)
        model = PeftModel.from_pretrained(base, output_dir)
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != manifest["embedding_rows"]:
        raise UserError(f"{output_dir}: model has {rows} embedding rows, manifest says {manifest['embedding_rows']}")
    model.to(device).eval()
    return model, hf_tokenizer, saved


def merge_run(output_dir: str | os.PathLike, merged_dir: str | os.PathLike | None = None) -> Path:
    """Write a self-contained full model (adapter merged in fp32) for inference/serving."""
    output_dir = Path(output_dir)
    merged_dir = Path(merged_dir) if merged_dir else output_dir / MERGED_DIR
    manifest = read_manifest(output_dir)
    model, hf_tokenizer, item_tokenizer = load_for_inference(output_dir, device="cpu", dtype=torch.float32)
    if manifest["kind"] != "full":
        model = model.merge_and_unload()
    with atomic_path(merged_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        hf_tokenizer.save_pretrained(tmp)
        item_tokenizer.save_pretrained(tmp / ITEM_TOKENIZER_DIR)
        merged = {**manifest, "kind": "full", "merged_from": str(output_dir)}
        write_user_knowledge(tmp, merged, read_user_knowledge(output_dir))
        atomic_write_json(tmp / MANIFEST_FILE, merged)
    logger.info("merged model written to %s", merged_dir)
    return merged_dir
