"""One SFT run: data + model set-up + TRL ``SFTTrainer`` + final artefacts. ``trainer/sft.py`` calls this."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig

from recdata.config import config_to_dict
from recdata.io import atomic_write_json
from sft_tasks.context import read_build_user_knowledge
from trainer.callbacks import (
    LOSS_CURVE_FILE,
    METRICS_FILE,
    JsonlMetricsCallback,
    TimeLimitCallback,
    plot_loss_curve,
)
from trainer.config import AlignRecTrainArguments, DataArguments, ModelArguments, resolve_runtime
from trainer.export import MANIFEST_FILE, build_manifest, merge_run, save_run
from trainer.item_head import ItemHeadTargets, decode_item_head_weight, item_head_manifest
from trainer.launch import is_main_process
from trainer.model_setup import model_dir, setup_model
from trainer.ranking_validation import RankingValidationCallback, ranking_subset
from trainer.trl_trainer import AlignRecSFTTrainer

logger = logging.getLogger(__name__)

RESOLVED_CONFIG_FILE = "resolved_config.json"
REQUIRED_COLUMNS = ("prompt", "completion")


def load_task_datasets(data: DataArguments) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Train rows and held-out rows (validation rows of ``eval_task``), validated against the contract."""
    train, evalset, _ = load_task_splits(data)
    return train, evalset


def load_task_splits(data: DataArguments) -> tuple[datasets.Dataset, datasets.Dataset | None, datasets.Dataset | None]:
    """``load_task_datasets`` plus the full validation split (for ranking validation; None when absent)."""
    path = Path(data.dataset_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset_dir={path} does not exist; build it with `alignrec tasks` (sft_tasks)")
    dd = datasets.load_from_disk(str(path))
    if not isinstance(dd, datasets.DatasetDict) or "train" not in dd:
        raise ValueError(f"{path} must be a saved DatasetDict with a 'train' split (and 'validation')")
    for name, split in dd.items():
        missing = [c for c in REQUIRED_COLUMNS if c not in split.column_names]
        if missing:
            raise ValueError(f"{path} split {name!r} lacks columns {missing}; expected prompt, completion, task")
    train = dd["train"]
    if data.max_train_samples:
        train = train.select(range(min(data.max_train_samples, len(train))))
    if len(train) == 0:
        raise ValueError(f"{path} split 'train' is empty")
    evalset = dd.get("validation")
    if evalset is not None and data.eval_task:
        if "task" not in evalset.column_names:
            raise ValueError(f"{path} validation has no 'task' column; set eval_task='' to evaluate on all rows")
        evalset = evalset.filter(lambda t: t == data.eval_task, input_columns="task")
        if len(evalset) == 0:
            raise ValueError(f"{path} validation has no rows of task {data.eval_task!r}; set eval_task to one present")
    if evalset is not None and data.max_eval_samples:
        evalset = evalset.select(range(min(data.max_eval_samples, len(evalset))))
    keep = list(REQUIRED_COLUMNS)
    train = train.select_columns(keep)
    return train, (evalset.select_columns(keep) if evalset is not None else None), dd.get("validation")


def _resolve_resume(sft: SFTConfig) -> str | None:
    value = sft.resume_from_checkpoint
    if value in (None, "", "false", "False"):
        return None
    if value in ("last", "true", "True"):
        last = get_last_checkpoint(sft.output_dir) if Path(sft.output_dir).is_dir() else None
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {value}: no checkpoint-* folder in {sft.output_dir}")
        return last
    if not Path(value).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {value} is not a folder; pass a checkpoint-N folder")
    return value


def _guard_output_dir(output_dir: Path, item_hash: str, resume: str | None) -> None:
    """Refuse to continue or overwrite a run trained with a different ItemTokenizer."""
    import json

    cfg_path = output_dir / RESOLVED_CONFIG_FILE
    if cfg_path.is_file():
        previous = json.loads(cfg_path.read_text(encoding="utf-8")).get("item_tokenizer_hash")
        if previous and previous != item_hash and resume:
            raise ValueError(
                f"cannot resume {output_dir}: it was trained with ItemTokenizer {previous[:12]}, the given one is "
                f"{item_hash[:12]}; pass the original item_tokenizer_dir or use a new output_dir"
            )


def selection_callbacks(data_args: DataArguments, run_args: AlignRecTrainArguments, sft: SFTConfig,
                        validation: datasets.Dataset | None, item_tokenizer, hf_tokenizer) -> list:
    """Ranking validation (valid users only) and early stopping, in the order the Trainer must call them."""
    from transformers import EarlyStoppingCallback

    callbacks: list = []
    if data_args.ranking_eval_users:
        if validation is None or sft.eval_strategy == "no":
            from recdata.errors import ConfigError

            raise ConfigError("ranking_eval_users needs a validation split and eval_strategy steps|epoch")
        subset = ranking_subset(validation, data_args.ranking_eval_users, sft.seed)
        callbacks.append(RankingValidationCallback(subset, item_tokenizer, hf_tokenizer,
                                                   num_beams=data_args.ranking_eval_beams,
                                                   exclude_history=data_args.ranking_eval_exclude_history,
                                                   item_head_weight=decode_item_head_weight(run_args)))
    if run_args.early_stopping_patience:
        if not (sft.load_best_model_at_end and sft.metric_for_best_model):
            from recdata.errors import ConfigError

            raise ConfigError("early_stopping_patience needs load_best_model_at_end: true and metric_for_best_model "
                              "(e.g. eval_ranking_ndcg@10 with ranking_eval_users > 0)")
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=run_args.early_stopping_patience))
    return callbacks


def run_sft(model_args: ModelArguments, data_args: DataArguments, run_args: AlignRecTrainArguments,
            sft: SFTConfig, extra_callbacks: list | None = None) -> Path:
    """Train and write the run folder; returns it. ``extra_callbacks``: more TrainerCallbacks (benchmarks)."""
    from tokenization import ItemTokenizer

    dtype = resolve_runtime(run_args, sft)
    if sft.completion_only_loss is None:
        sft.completion_only_loss = True  # the prompt is context, only the answer is supervised
    output_dir = Path(sft.output_dir)
    item_tokenizer = ItemTokenizer.from_pretrained(data_args.item_tokenizer_dir)
    resume = _resolve_resume(sft)
    _guard_output_dir(output_dir, item_tokenizer.content_hash, resume)
    train, evalset, validation = load_task_splits(data_args)
    if evalset is None or sft.eval_strategy == "no":
        logger.warning("no held-out loss: %s", "no validation split" if evalset is None else "eval_strategy=no")
        evalset = None
    bundle = setup_model(model_args, item_tokenizer, dtype, seed=sft.seed)
    base = "scratch" if model_args.model_init == "scratch" else str(model_dir(model_args).resolve())
    resolved = {
        **config_to_dict(model_args, data_args, run_args, sft),
        "item_tokenizer_hash": item_tokenizer.content_hash, "base_model": base, "dtype": str(dtype),
        "code_token_ids": [bundle.code_token_ids[0], bundle.code_token_ids[-1]], "rows_init": bundle.row_init,
    }
    if is_main_process():
        from recdata.outputs import claim_output_dir

        claim_output_dir(output_dir, "train", overwrite=run_args.overwrite, inputs=[
            data_args.dataset_dir, data_args.item_tokenizer_dir, model_args.model_name_or_path])
        atomic_write_json(output_dir / RESOLVED_CONFIG_FILE, resolved)
    ranking = selection_callbacks(data_args, run_args, sft, validation, item_tokenizer, bundle.tokenizer)
    item_head = None
    if run_args.item_head_weight:
        item_head = ItemHeadTargets.from_token_ids(item_tokenizer.item_token_ids(bundle.tokenizer), len(bundle.tokenizer))
    trainer = AlignRecSFTTrainer(
        model=bundle.model, args=sft, train_dataset=train,
        eval_dataset={data_args.eval_task or "validation": evalset} if evalset is not None else None,
        processing_class=bundle.tokenizer, peft_config=bundle.peft_config,
        code_rows_learning_rate=run_args.code_rows_learning_rate,
        item_head=item_head, item_head_weight=run_args.item_head_weight,
        callbacks=[JsonlMetricsCallback(output_dir / METRICS_FILE), *ranking, *(extra_callbacks or []),
                   *([TimeLimitCallback(run_args.max_train_seconds)] if run_args.max_train_seconds else [])],
    )
    for callback in ranking:
        if isinstance(callback, RankingValidationCallback):
            callback.bind(trainer)
    trainer.train(resume_from_checkpoint=resume)
    kind = "full" if bundle.peft_config is None else "adapter"
    manifest = build_manifest(kind, base, item_tokenizer, bundle.code_token_ids, bundle.embedding_rows,
                              {"finetune_mode": model_args.finetune_mode, "model_init": model_args.model_init,
                               **item_head_manifest(run_args)})
    save_run(trainer, bundle.tokenizer, item_tokenizer, output_dir, manifest,
             user_knowledge=read_build_user_knowledge(data_args.dataset_dir))
    if trainer.is_world_process_zero():
        if run_args.loss_curve:
            plot_loss_curve(output_dir / METRICS_FILE, output_dir / LOSS_CURVE_FILE)
        if run_args.merge:
            merge_run(output_dir)
    logger.info("run written to %s (%s)", output_dir, MANIFEST_FILE)
    return output_dir
