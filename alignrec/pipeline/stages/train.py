"""The ``train`` stage: ``trainer/sft.py`` under the section's launcher (resumes from its last checkpoint).

Reads: the tasks dataset, the item tokenizer, the base model / tokenizer / DeepSpeed JSON (content in the key) and
the ``train`` section; with ``new_rows_init: item_vectors`` (or ``auto`` on a pretrained model), ``content_rows`` or fitted cold rows (the cold-item
protocol, ``cold_rows``) the embeddings stage's vectors.
Writes: ``model/`` (the run folder) and ``train_config.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignrec.pipeline.launch import launch_trainer
from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    REPO_ROOT,
    cold_mask_key,
    stage_keys,
)
from trainer.row_init import section_row_init


def _train_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The base model and tokenizer folders and the DeepSpeed JSON (content, not path, enters the key)."""
    from alignrec.llm.hf_tokenizer import CODES_ONLY
    from recdata.paths import default_llm_dir

    out: dict[str, str] = {}
    if section.get("model_init", "pretrained") != "scratch":
        out["model"] = str(section.get("model_name_or_path") or default_llm_dir())
    tokenizer = str(section.get("tokenizer_name_or_path") or "")
    if tokenizer and tokenizer != CODES_ONLY:
        out["tokenizer"] = tokenizer
    if section.get("deepspeed"):
        ds_path = Path(section["deepspeed"])
        out["deepspeed"] = str(ds_path if ds_path.is_absolute() else REPO_ROOT / ds_path)
    return out


def cold_rows_mode(section: dict[str, Any], run_cfg: Any) -> str | None:
    """Under the cold-item protocol, how the items without training leave it (``trainer.cold_rows``); else None."""
    if not cold_mask_key(run_cfg):
        return None
    from trainer.cold_rows import resolve_cold_rows

    id_level = bool((run_cfg.sections.get("tokenizer") or {}).get("item_id_level"))  # the vectors are injected
    return resolve_cold_rows(str(section.get("cold_rows", "auto")), str(section.get("model_init", "pretrained")),
                             can_fit=id_level)


def _train_key(section: dict[str, Any], run_cfg: Any) -> dict[str, Any]:
    """Fitted cold rows join the key of cold-protocol runs only, and ``new_rows_init: auto`` on a pretrained model
    its resolution (it started codebook rows before it meant item vectors): a run trained before either retrains;
    every other run keeps its key."""
    key: dict[str, Any] = {"cold_rows": "fitted"} if cold_rows_mode(section, run_cfg) == "fitted" else {}
    rows = section_row_init(section)
    if str(section.get("new_rows_init", "auto")) == "auto" and rows != "random":
        key["new_rows_init_auto"] = rows
    return key


def run_train(ctx: StageContext) -> dict[str, Any]:
    launcher = ctx.config.get("launcher", "deepspeed")
    num_gpus = int(ctx.config.get("num_gpus", 0) or 0)
    ds_config = ctx.config.get("deepspeed")
    section = stage_keys("train", ctx.config)
    injected = {
        "dataset_dir": str(ctx.upstream("tasks") / "dataset"),
        "item_tokenizer_dir": str(ctx.upstream("tokenizer") / "item_tokenizer"),
        "output_dir": str(ctx.out_dir / "model"),
    }
    if section_row_init(section) == "item_vectors" or section.get("content_rows", "none") != "none" \
            or cold_rows_mode(section, ctx.run_config) == "fitted":
        # the vectors the tokenizer read (in its key already)
        injected["item_vectors_dir"] = str(ctx.upstream("embeddings"))
    from trainer.config import parse_train_config

    cmd, seconds, _ = launch_trainer(ctx, "train", section, injected, "train_config.yaml", parse_train_config,
                                     launcher, num_gpus, ds_config)
    summary: dict[str, Any] = {"launcher": launcher, "seconds": seconds, "command": cmd}
    metrics_file = ctx.out_dir / "model" / "metrics.jsonl"
    if metrics_file.is_file():
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        losses = [r["loss"] for r in rows if "loss" in r]
        evals = [r[k] for r in rows for k in ("eval_seqrec_loss", "eval_loss") if k in r]
        summary.update({"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                        "last_eval_loss": evals[-1] if evals else None})
    return summary


STAGE = Stage("train", run_train, ("tasks", "tokenizer"), inputs=_train_inputs, extra_key=_train_key)
