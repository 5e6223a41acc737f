"""The optional ``preference`` stage: DPO pairs built from the split, the ItemTokenizer and the tasks config (with
the section's ``pairs`` overrides), then ``trainer/dpo.py`` on top of the train stage's SFT run.

Its section holds DPO's own keys (``beta``, ``learning_rate``, ``max_steps`` ... of ``trainer/dpo.py``), plus the
pipeline-only ``enabled`` (default false), ``pairs`` (TaskConfig keys: ``preference_negatives``,
``negative_strategy``, ``hard_prefix_levels`` ...) and ``launcher`` / ``num_gpus`` / ``deepspeed`` (default: the
train section's). A beta or negatives change re-runs this stage and the later ones, never SFT.

Reads: the split, the item tokenizer, the tasks stage's dataset (ranking validation), the train stage's SFT run
and the DeepSpeed JSON (content in the key). Writes: ``pairs/``, ``model/`` (the DPO run) and ``dpo_config.yaml``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from alignrec.pipeline.launch import launch_trainer
from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    REPO_ROOT,
    TASK_INJECTED,
    build_section,
    check_injected,
    preference_enabled,
    stage_keys,
    task_classes,
    train_model_dir,
)
from recdata.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["STAGE", "run_preference_stage", "validate_preference_section"]


def _pair_config(ctx: StageContext):
    """The tasks section (negative strategy, seed, history ...) with the preference section's ``pairs`` overrides."""
    pairs = ctx.config.get("pairs") or {}
    if not isinstance(pairs, dict):
        raise ConfigError(f"section 'preference': pairs must be a mapping of TaskConfig keys, got {pairs!r}")
    injected = {
        "split_dir": str(ctx.upstream("data") / "split"),
        "item_tokenizer_dir": str(ctx.upstream("tokenizer") / "item_tokenizer"),
        "output_dir": str(ctx.out_dir / "pairs"), "hf_tokenizer_dir": train_model_dir(ctx.run_config),
    }
    section = {**stage_keys("tasks", ctx.run_config.sections.get("tasks", {})), **pairs}
    (cfg,) = build_section(task_classes(), section, injected, "tasks")
    return cfg


def _dpo_summary(metrics_file: Path) -> dict[str, Any]:
    if not metrics_file.is_file():
        return {}
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]

    def series(key: str) -> list[float]:
        return [r[key] for r in rows if key in r]

    out: dict[str, Any] = {}
    for key, name in (("loss", "loss"), ("rewards/accuracies", "reward_accuracy"), ("rewards/margins", "margin"),
                      ("eval_rewards/accuracies", "eval_reward_accuracy"), ("eval_rewards/margins", "eval_margin")):
        values = series(key)
        if values:
            out[f"first_{name}"], out[f"last_{name}"] = values[0], values[-1]
    return out


def run_preference_stage(ctx: StageContext) -> dict[str, Any]:
    """Build the pairs, then launch trainer/dpo.py like the train stage launches trainer/sft.py."""
    import yaml

    from alignrec.llm.hf_tokenizer import load_hf_tokenizer
    from recdata import SplitDataset
    from sft_tasks.preference import build_preference_pairs, save_preference_pairs
    from tokenization import ItemTokenizer
    from trainer.cli import DPO_ENTRY
    from trainer.dpo_config import parse_dpo_config

    train_section = ctx.run_config.sections.get("train", {})
    launcher = ctx.config.get("launcher", train_section.get("launcher", "deepspeed"))
    num_gpus = int(ctx.config.get("num_gpus", train_section.get("num_gpus", 0)) or 0)
    ds_config = ctx.config.get("deepspeed", train_section.get("deepspeed"))
    cfg = _pair_config(ctx)
    pairs, info = build_preference_pairs(cfg, SplitDataset.load(cfg.split_dir),
                                         ItemTokenizer.from_pretrained(cfg.item_tokenizer_dir),
                                         load_hf_tokenizer(cfg.hf_tokenizer_dir))
    save_preference_pairs(pairs, info, ctx.out_dir / "pairs")
    section = stage_keys("preference", ctx.config)
    injected = {"sft_run_dir": str(ctx.upstream("train") / "model"), "pairs_dir": str(ctx.out_dir / "pairs"),
                "output_dir": str(ctx.out_dir / "model"), "ranking_dataset_dir": str(ctx.upstream("tasks") / "dataset")}
    cmd, seconds, config_file = launch_trainer(ctx, "preference", section, injected, "dpo_config.yaml",
                                               parse_dpo_config, launcher, num_gpus, ds_config, entry=DPO_ENTRY)
    beta = yaml.safe_load(config_file.read_text()).get("beta", 0.1)
    return {"launcher": launcher, "seconds": seconds, "command": cmd, "beta": beta,
            "pairs": {k: info[k] for k in ("strategy", "negatives_per_prompt", "train_pairs", "validation_pairs")},
            **_dpo_summary(ctx.out_dir / "model" / "metrics.jsonl")}


def validate_preference_section(section: dict[str, Any], body: dict[str, Any], source: str) -> None:
    """Keys of DPO (PreferenceArguments, AlignRecTrainArguments, DPOConfig) and of ``pairs`` (TaskConfig)."""
    from trl import DPOConfig

    from sft_tasks.config import TaskConfig
    from trainer.config import AlignRecTrainArguments
    from trainer.dpo_config import PreferenceArguments

    preference_enabled({"preference": section})
    known = {f.name for cls in (PreferenceArguments, AlignRecTrainArguments, DPOConfig) for f in fields(cls)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in section 'preference'; see `python trainer/dpo.py --help`")
    pairs = section.get("pairs") or {}
    if not isinstance(pairs, dict):
        raise ConfigError(f"{source}: section 'preference': pairs must be a mapping of TaskConfig keys")
    check_injected("preference.pairs", pairs, TASK_INJECTED, source)
    unknown = sorted(set(pairs) - {f.name for f in fields(TaskConfig)})
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in section 'preference.pairs' (TaskConfig keys)")


def _preference_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The DeepSpeed JSON DPO runs with (its own or the train section's): its content enters the key.

    The base model and tokenizer reach DPO through the SFT run (the train stage's key covers their content).
    """
    ds_config = section.get("deepspeed", run_cfg.sections.get("train", {}).get("deepspeed"))
    if not ds_config:
        return {}
    ds_path = Path(ds_config)
    return {"deepspeed": str(ds_path if ds_path.is_absolute() else REPO_ROOT / ds_path)}


STAGE = Stage("preference", run_preference_stage, ("data", "tokenizer", "tasks", "train"),
              inputs=_preference_inputs, enabled=lambda section, run_cfg: preference_enabled(run_cfg.sections))
