"""Build the stage-two SFT mixture (train), the held-out seqrec set (validation) and DPO preference pairs."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from recdata import SplitDataset, atomic_write_json, config_to_dict
from recdata.dataset_writer import save_dataset_dict_splits, save_dataset_rows
from recdata.errors import InputFileError, UserError
from recdata.outputs import staged_output_dir
from sft_tasks.base import FEATURES, Task, TaskMixture, rows_to_dataset
from sft_tasks.config import TaskConfig
from sft_tasks.context import USER_KNOWLEDGE_FILE, TaskContext
from sft_tasks.formatting import DEFAULT_PROMPT_FORMAT, PROMPT_FORMATS
from sft_tasks.item_tasks import build_code2item, build_item2code
from sft_tasks.negatives import (
    PREFERENCE_FEATURES,
    NegativeSampler,
    build_binary,
    build_choice,
    build_preference,
    iter_preference_rows,
    make_sampler,
)
from sft_tasks.queries import build_query2item
from sft_tasks.sequential import (
    VALIDATION_FEATURES,
    build_fusion,
    build_seqrec,
    build_seqrec_full,
    build_validation,
    iter_validation_rows,
    seqrec_instruction,
)
from sft_tasks.stats import dataset_stats, tokenizer_with_codes
from sft_tasks.user_tokens import USER_TOKENS_KEY, user_token_count

logger = logging.getLogger(__name__)

PREFERENCE_DIR = "preference"
# Written beside the DatasetDict: what a model trained on it must be prompted with ({"prompt_format": ...});
# training copies it into the run's manifest (trainer.export), which every consumer of the run reads.
TASKS_MANIFEST_FILE = "tasks_manifest.json"


@dataclass
class TaskBuild:
    """Everything ``alignrec tasks build`` writes: the datasets plus how they were made."""

    datasets: datasets.DatasetDict
    preference: datasets.Dataset | None
    info: dict[str, Any] = field(default_factory=dict)
    # {user_id: text} the seqrec prompts carry (TaskConfig.user_knowledge_dir); the trained model keeps a copy
    user_knowledge: dict[str, str] = field(default_factory=dict)
    # the items training softmaxes leave out (cold-item protocol only, ``build_cold_items``); None: no protocol
    cold_items: list[str] | None = None


def _build_task(name: str, ctx: TaskContext, info: dict[str, Any]) -> Task:
    if name in ("binary", "choice"):
        sampler = make_sampler(ctx)
        task = (build_binary if name == "binary" else build_choice)(ctx, sampler)
        info[name] = {"negatives_by_prefix_level": dict(sorted(sampler.level_counts.items())),
                      "negative_shortfall": sampler.shortfall}
        return task
    builders = {"seqrec": build_seqrec, "seqrec_full": build_seqrec_full, "item2code": build_item2code, "code2item": build_code2item,
                "fusion": build_fusion, "query2item": build_query2item}
    return builders[name](ctx)


def _prepare(cfg: TaskConfig, split: SplitDataset, item_tokenizer: Any,
             hf_tokenizer: Any) -> tuple[TaskContext, TaskMixture, dict[str, Any], list[str] | None]:
    """The context, the mixture of the tasks with a positive weight (their examples made on demand where a task
    can: ``seqrec_full``), the build info so far and the cold items (``build_cold_items``)."""
    ctx = TaskContext(cfg, split, item_tokenizer, hf_tokenizer)
    if ctx.windows:  # the fast formatting path must equal a real chat-template render
        ctx.format.check(seqrec_instruction(ctx.codes_text(ctx.windows[0].history)))
    weights = cfg.active_weights()
    info: dict[str, Any] = {"windows": len(ctx.windows), "max_history": ctx.max_history,
                            "chat_template": ctx.format.uses_chat_template, "prompt_format": cfg.prompt_format,
                            "item_tokenizer_hash": getattr(item_tokenizer, "content_hash", None), "task_sizes": {}}
    cold = build_cold_items(split)
    if cold is not None:  # the list goes to tasks_manifest.json; stats.json gets the count
        info[COLD_ITEMS_KEY] = len(cold)
    tasks = []
    for name in weights:
        t0 = time.perf_counter()
        task = _build_task(name, ctx, info)
        info["task_sizes"][name] = len(task)
        logger.info("task %s: %d examples in %.1fs", name, len(task), time.perf_counter() - t0)
        tasks.append(task)
    mixture = TaskMixture(tasks, weights, seed=cfg.seed, total=cfg.mixture_size)
    info["mixture_counts"] = dict(mixture.counts)
    return ctx, mixture, info, cold


def _preference_info(sampler: NegativeSampler, pairs: int) -> dict[str, Any]:
    return {"pairs": pairs, "negatives_by_prefix_level": dict(sorted(sampler.level_counts.items())),
            "negative_shortfall": sampler.shortfall}


def _finish_info(info: dict[str, Any], start: float, ctx: TaskContext) -> None:
    info["build_seconds"] = round(time.perf_counter() - start, 2)
    info["user_knowledge_users"] = len(ctx.user_knowledge)
    if ctx.cfg.user_tokens:  # the trainer adds this many user tokens (tasks_manifest.json)
        info[USER_TOKENS_KEY] = user_token_count(ctx.user_knowledge)


def build_tasks(cfg: TaskConfig, split: SplitDataset, item_tokenizer: Any, hf_tokenizer: Any,
                with_preference: bool = True) -> TaskBuild:
    """Build the tasks with a positive weight, mix them, and build validation (and preference pairs), in memory.

    ``write_tasks`` writes the same rows to disk without holding them (what ``alignrec tasks build`` runs)."""
    start = time.perf_counter()
    ctx, mixture, info, cold = _prepare(cfg, split, item_tokenizer, hf_tokenizer)
    dsd = datasets.DatasetDict({"train": mixture.to_dataset(), "validation": build_validation(ctx)})
    preference = None
    if with_preference and cfg.preference_negatives:
        sampler = make_sampler(ctx)
        preference = build_preference(ctx, sampler)
        info["preference"] = _preference_info(sampler, len(preference))
    _finish_info(info, start, ctx)
    return TaskBuild(dsd, preference, info, ctx.user_knowledge, cold)


def write_tasks(cfg: TaskConfig, split: SplitDataset, item_tokenizer: Any, hf_tokenizer: Any, out_dir: str | Path,
                configs: tuple = (), inputs: tuple = (), overwrite: bool = False) -> dict[str, Any]:
    """``build_tasks`` + ``compute_stats`` + ``save_task_build`` in one pass that never holds the rows: each
    output's rows are made one at a time and streamed to its Arrow files (``recdata.dataset_writer``, the files
    ``save_to_disk`` writes), and the statistics read their sample back from disk. The windows and the
    ``seqrec_full`` examples are made on demand, so a ``seqrec_full`` build holds no row, whatever the number of
    users (the other tasks still build their prompts up front). Returns the stats written to ``stats.json``."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    ctx, mixture, info, cold = _prepare(cfg, split, item_tokenizer, hf_tokenizer)
    with staged_output_dir(out_dir, "tasks build", inputs=inputs, overwrite=overwrite) as tmp:
        counts = {"train": save_dataset_rows(mixture.iter_rows(), FEATURES, tmp / "train"),
                  "validation": save_dataset_rows(iter_validation_rows(ctx), VALIDATION_FEATURES, tmp / "validation")}
        save_dataset_dict_splits(tmp, counts)
        preference_pairs = None
        if cfg.preference_negatives:
            sampler = make_sampler(ctx)
            preference_pairs = save_dataset_rows(iter_preference_rows(ctx, sampler), PREFERENCE_FEATURES,
                                                 tmp / PREFERENCE_DIR)
            info["preference"] = _preference_info(sampler, preference_pairs)
        _finish_info(info, start, ctx)
        written = datasets.DatasetDict({  # memory-mapped; the stats read only the task column and their sample
            name: datasets.load_from_disk(str(tmp / name)) if n else rows_to_dataset([], features)
            for (name, n), features in zip(counts.items(), (FEATURES, VALIDATION_FEATURES), strict=True)})
        stats = _stats(written, preference_pairs, info, item_tokenizer, hf_tokenizer, cfg.stats_sample, cfg.seed)
        _write_build_files(tmp, info, stats, configs, ctx.user_knowledge, cold)
    logger.info("wrote %s (train %d, validation %d)", out_dir, counts["train"], counts["validation"])
    return stats


def build_task_datasets(cfg: TaskConfig, split: SplitDataset, item_tokenizer: Any, hf_tokenizer: Any) -> datasets.DatasetDict:
    """``DatasetDict(train=mixture, validation=seqrec on valid targets)``; columns prompt, completion, task."""
    return build_tasks(cfg, split, item_tokenizer, hf_tokenizer, with_preference=False).datasets


def build_preference_dataset(cfg: TaskConfig, split: SplitDataset, item_tokenizer: Any, hf_tokenizer: Any) -> datasets.Dataset:
    """DPO pairs (prompt, chosen, rejected, user_id, strategy) over the training windows."""
    ctx = TaskContext(cfg, split, item_tokenizer, hf_tokenizer)
    return build_preference(ctx, make_sampler(ctx))


def compute_stats(build: TaskBuild, item_tokenizer: Any, hf_tokenizer: Any, sample: int = 0, seed: int = 0) -> dict[str, Any]:
    """Token statistics per task (train) and for validation (``sample``: see ``dataset_stats``), plus build info."""
    pairs = None if build.preference is None else len(build.preference)
    return _stats(build.datasets, pairs, build.info, item_tokenizer, hf_tokenizer, sample, seed)


def _stats(dsd: datasets.DatasetDict, preference_pairs: int | None, info: dict[str, Any], item_tokenizer: Any,
           hf_tokenizer: Any, sample: int, seed: int) -> dict[str, Any]:
    tokenizer = tokenizer_with_codes(hf_tokenizer, item_tokenizer, info.get(USER_TOKENS_KEY, 0))
    stats: dict[str, Any] = {
        "train": dataset_stats(dsd["train"], tokenizer, sample, seed),
        "validation": dataset_stats(dsd["validation"], tokenizer, sample, seed),
        "build": info,
    }
    if preference_pairs is not None:
        stats["preference"] = {"pairs": preference_pairs}
    return stats


ITEM_TOKENIZER_HASH_KEY = "item_tokenizer_hash"  # tasks_manifest.json: the content hash of the codes the prompts hold
# tasks_manifest.json, cold-item protocol only: the items without training, which training leaves out of its softmaxes
COLD_ITEMS_KEY = "items_without_training"


def build_cold_items(split: SplitDataset) -> list[str] | None:
    """The items a model trained on this build must leave out of its training softmaxes: under the cold-item protocol
    the items without training (``recdata.cold_items``), catalogue order; None without it. The build records them
    (``read_build_cold_items``) because it is where the split meets the trainer, which never reads the split."""
    from recdata.cold_items import items_without_training, uses_cold_protocol

    return items_without_training(split) if uses_cold_protocol(split) else None


def read_build_cold_items(dataset_dir: str | Path) -> list[str] | None:
    """The cold items a tasks build recorded (``COLD_ITEMS_KEY``), or None (no cold-item protocol, or no manifest)."""
    path = Path(dataset_dir) / TASKS_MANIFEST_FILE
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get(COLD_ITEMS_KEY)
    if value is not None and not (isinstance(value, list) and all(isinstance(i, str) for i in value)):
        raise InputFileError(f"{path}: {COLD_ITEMS_KEY} must be a list of item ids; rebuild the tasks "
                             "(`alignrec tasks build`)")
    return value


def check_build_item_tokenizer(dataset_dir: str | Path, item_tokenizer_dir: str | Path, content_hash: str) -> None:
    """``UserError`` when the tasks in ``dataset_dir`` were built with another item tokenizer than the one given
    (their prompts hold other codes); builds older than the recorded hash pass."""
    path = Path(dataset_dir) / TASKS_MANIFEST_FILE
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get(ITEM_TOKENIZER_HASH_KEY)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise InputFileError(f"{path} is not a valid tasks manifest ({exc}); rebuild the tasks "
                             "(`alignrec tasks build`)") from exc
    if recorded and recorded != content_hash:
        raise UserError(f"{dataset_dir} was built with another item tokenizer (codes {recorded[:12]}) than "
                        f"{item_tokenizer_dir} (codes {content_hash[:12]}): its prompts hold other codes; rebuild the "
                        f"tasks with `alignrec tasks build --item_tokenizer_dir {item_tokenizer_dir}` or pass the "
                        "tokenizer they were built with")


def read_build_prompt_format(dataset_dir: str | Path) -> str:
    """The ``prompt_format`` a tasks build used (``chat`` for builds older than ``tasks_manifest.json``)."""
    path = Path(dataset_dir) / TASKS_MANIFEST_FILE
    if not path.is_file():
        return DEFAULT_PROMPT_FORMAT
    value = json.loads(path.read_text(encoding="utf-8")).get("prompt_format", DEFAULT_PROMPT_FORMAT)
    if value not in PROMPT_FORMATS:
        raise InputFileError(f"{path}: prompt_format {value!r} is not one of {list(PROMPT_FORMATS)}; rebuild the "
                             "tasks with this version (`alignrec tasks build`)")
    return value


def read_build_user_tokens(dataset_dir: str | Path) -> int:
    """How many user tokens (``tasks.user_tokens``) a tasks build's prompts use: 0 for none (or an older build)."""
    path = Path(dataset_dir) / TASKS_MANIFEST_FILE
    if not path.is_file():
        return 0
    value = json.loads(path.read_text(encoding="utf-8")).get(USER_TOKENS_KEY, 0)
    if not isinstance(value, int) or value < 0:
        raise InputFileError(f"{path}: {USER_TOKENS_KEY} must be a non-negative integer, got {value!r}; rebuild the "
                             "tasks with this version (`alignrec tasks build`)")
    return value


def save_task_build(build: TaskBuild, out_dir: str | Path, stats: dict[str, Any], configs: tuple = (),
                    inputs: tuple = (), overwrite: bool = False) -> Path:
    """Atomically write the DatasetDict (``out_dir`` root), ``preference/``, ``stats.json``, the config,
    ``tasks_manifest.json`` (the prompt format) and ``user_knowledge.json`` (the prompts' user texts, when built
    with them).

    ``out_dir`` is claimed with ``recdata.outputs.staged_output_dir``: never one of ``inputs``, never a foreign
    folder unless ``overwrite``, and files the build does not write are kept.
    """
    out_dir = Path(out_dir)
    with staged_output_dir(out_dir, "tasks build", inputs=inputs, overwrite=overwrite) as tmp:
        build.datasets.save_to_disk(str(tmp))
        if build.preference is not None:
            build.preference.save_to_disk(str(tmp / PREFERENCE_DIR))
        _write_build_files(tmp, build.info, stats, configs, build.user_knowledge, build.cold_items)
    logger.info("wrote %s (train %d, validation %d)", out_dir, len(build.datasets["train"]), len(build.datasets["validation"]))
    return out_dir


def _write_build_files(tmp: Path, info: dict[str, Any], stats: dict[str, Any], configs: tuple,
                       user_knowledge: dict[str, str], cold_items: list[str] | None = None) -> None:
    """Everything a build writes beside its datasets."""
    atomic_write_json(tmp / "stats.json", stats)
    atomic_write_json(tmp / TASKS_MANIFEST_FILE, {"prompt_format": info.get("prompt_format", DEFAULT_PROMPT_FORMAT),
                                                  ITEM_TOKENIZER_HASH_KEY: info.get(ITEM_TOKENIZER_HASH_KEY),
                                                  **({USER_TOKENS_KEY: info[USER_TOKENS_KEY]}
                                                     if info.get(USER_TOKENS_KEY) else {}),
                                                  **({} if cold_items is None else {COLD_ITEMS_KEY: cold_items})})
    atomic_write_json(tmp / "resolved_config.json", config_to_dict(*configs))
    if user_knowledge:
        atomic_write_json(tmp / USER_KNOWLEDGE_FILE, user_knowledge)
