"""One SFT run: data + model set-up + TRL ``SFTTrainer`` + final artefacts. ``trainer/sft.py`` calls this."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import datasets
from transformers import TrainerCallback
from trl import SFTConfig

from recdata.config import config_to_dict
from recdata.errors import InputFileError, UserError
from recdata.io import atomic_write_json
from sft_tasks import (
    USER_TOKENS_KEY,
    check_build_item_tokenizer,
    read_build_prompt_format,
    read_build_user_knowledge,
    read_build_user_tokens,
)
from trainer.callbacks import (
    LOSS_CURVE_FILE,
    METRICS_FILE,
    JsonlMetricsCallback,
    TimeLimitCallback,
    plot_loss_curve,
)
from trainer.cold_mask import read_cold_item_mask
from trainer.cold_rows import check_cold_rows, fit_trained_cold_rows, own_tokens_unique, resolve_cold_rows
from trainer.config import AlignRecTrainArguments, DataArguments, ModelArguments, resolve_runtime
from trainer.content_rows import bake_content_rows, content_rows_manifest
from trainer.export import MANIFEST_FILE, PROMPT_FORMAT_KEY, build_manifest, merge_run, save_run
from trainer.item_head import ItemHeadOptions, ItemHeadTargets, decode_item_head_weight, item_head_manifest
from trainer.launch import is_main_process
from trainer.model_setup import model_dir, setup_model
from trainer.trl_trainer import AlignRecSFTTrainer

logger = logging.getLogger(__name__)

RESOLVED_CONFIG_FILE = "resolved_config.json"
REQUIRED_COLUMNS = ("prompt", "completion")

# ``ranking_validation(validation, users, seed, item_tokenizer, hf_tokenizer, *, num_beams, exclude_history,
# item_head_weight) -> TrainerCallback`` (with ``bind(trainer)``): the callback that adds ranking metrics to each
# evaluation. It decodes with inference's beam search, a layer above this one, so the entry that builds the
# trainer passes it in: ``inference.ranking_validation.ranking_validation_callback`` (trainer/sft.py, dpo.py).
RankingValidationFactory = Callable[..., TrainerCallback]


def load_task_datasets(data: DataArguments) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Train rows and held-out rows (validation rows of ``eval_task``), validated against the contract."""
    train, evalset, _ = load_task_splits(data)
    return train, evalset


def check_task_dir(dataset_dir: str | Path) -> Path:
    """``dataset_dir`` is a saved task ``DatasetDict`` (its ``dataset_dict.json``), else one ``InputFileError``."""
    path = Path(dataset_dir)
    if not path.is_dir():
        raise InputFileError(f"dataset_dir={path} does not exist; build it with `alignrec tasks build` or fix "
                             "--dataset_dir")
    if not (path / "dataset_dict.json").is_file():
        raise InputFileError(f"dataset_dir={path} is not a tasks build (no dataset_dict.json); pass the output_dir of "
                             "`alignrec tasks build`")
    return path


def load_train_item_tokenizer(data: DataArguments):
    """The item tokenizer, after checking the inputs' provenance: ``dataset_dir`` exists and its tasks were built
    with this tokenizer's codes (``tasks_manifest.json``). ``alignrec train`` calls it before launching too."""
    from tokenization import ItemTokenizer

    check_task_dir(data.dataset_dir)
    item_tokenizer = ItemTokenizer.from_pretrained(data.item_tokenizer_dir)
    check_build_item_tokenizer(data.dataset_dir, data.item_tokenizer_dir, item_tokenizer.content_hash)
    return item_tokenizer


def load_task_splits(data: DataArguments) -> tuple[datasets.Dataset, datasets.Dataset | None, datasets.Dataset | None]:
    """``load_task_datasets`` plus the full validation split (for ranking validation; None when absent)."""
    path = check_task_dir(data.dataset_dir)
    try:
        dd = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:  # a split folder or arrow file gone: the build was copied or cut short
        raise InputFileError(f"dataset_dir={path} is incomplete ({exc}); rebuild it with `alignrec tasks build`") from None
    if not isinstance(dd, datasets.DatasetDict) or "train" not in dd:
        raise UserError(f"{path} must be a saved DatasetDict with a 'train' split (and 'validation'); rebuild it with "
                        "`alignrec tasks build`")
    for name, split in dd.items():
        missing = [c for c in REQUIRED_COLUMNS if c not in split.column_names]
        if missing:
            raise UserError(f"{path} split {name!r} lacks columns {missing}; expected prompt, completion, task: "
                            "rebuild it with `alignrec tasks build`")
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


RESUME_OFF = ("false", "False", "no")
TRAINER_STATE_FILE = "trainer_state.json"  # the Trainer writes it last into a checkpoint


def latest_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` of ``output_dir``: one holding ``trainer_state.json``, which the Trainer
    writes last, so a folder a kill cut short mid-save is skipped. None when there is none."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    steps = []
    for path in out.glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / TRAINER_STATE_FILE).is_file():
            steps.append((int(suffix), path))
    return str(max(steps)[1]) if steps else None


def resolve_resume(sft: SFTConfig) -> str | None:
    """The checkpoint training resumes from. ``resume_from_checkpoint`` unset (the default): the newest complete
    checkpoint this run wrote (its output folder holds our ``resolved_config.json``), so rerunning a killed or
    interrupted run continues it; ``false``: start at step 0; ``last`` / ``true``: the newest checkpoint, raising
    when there is none; a folder: that checkpoint."""
    value = sft.resume_from_checkpoint
    if value in RESUME_OFF:
        return None
    if value in (None, ""):
        if not (Path(sft.output_dir) / RESOLVED_CONFIG_FILE).is_file():
            return None
        last = latest_checkpoint(sft.output_dir)
        if last is not None:
            logger.info("resuming from %s (this run's newest checkpoint; --resume_from_checkpoint false starts "
                        "over)", last)
        return last
    if value in ("last", "true", "True"):
        last = latest_checkpoint(sft.output_dir)
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {value}: no complete checkpoint-* folder in "
                                    f"{sft.output_dir}")
        return last
    if not Path(value).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {value} is not a folder; pass a checkpoint-N folder")
    return value


def guard_output_dir(output_dir: Path, item_hash: str, resume: str | None) -> None:
    """Refuse to continue or overwrite a run trained with a different ItemTokenizer."""
    import json

    cfg_path = output_dir / RESOLVED_CONFIG_FILE
    if cfg_path.is_file():
        previous = json.loads(cfg_path.read_text(encoding="utf-8")).get("item_tokenizer_hash")
        if previous and previous != item_hash and resume:
            raise ValueError(
                f"cannot resume {output_dir}: it was trained with ItemTokenizer {previous[:12]}, the given one is "
                f"{item_hash[:12]}; pass the original item_tokenizer_dir, a new output_dir, or "
                "--resume_from_checkpoint false to start over"
            )


def selection_callbacks(data_args: DataArguments, run_args: AlignRecTrainArguments, sft: SFTConfig,
                        validation: datasets.Dataset | None, item_tokenizer, hf_tokenizer,
                        ranking_validation: RankingValidationFactory | None = None) -> list:
    """Ranking validation (valid users only) and early stopping, in the order the Trainer must call them.

    ``ranking_validation`` builds the ranking callback (see ``RankingValidationFactory``); needed when
    ``ranking_eval_users`` is set.
    """
    from transformers import EarlyStoppingCallback

    callbacks: list = []
    if data_args.ranking_eval_users:
        if validation is None or sft.eval_strategy == "no":
            from recdata.errors import ConfigError

            raise ConfigError("ranking_eval_users needs a validation split and eval_strategy steps|epoch")
        if ranking_validation is None:
            from recdata.errors import ConfigError

            raise ConfigError("ranking_eval_users needs the ranking-validation callback: run trainer/sft.py or "
                              "trainer/dpo.py, or pass ranking_validation=inference.ranking_validation."
                              "ranking_validation_callback")
        callbacks.append(ranking_validation(validation, data_args.ranking_eval_users, sft.seed, item_tokenizer,
                                            hf_tokenizer, num_beams=data_args.ranking_eval_beams,
                                            exclude_history=data_args.ranking_eval_exclude_history,
                                            item_head_weight=decode_item_head_weight(run_args)))
    if run_args.early_stopping_patience:
        if not (sft.load_best_model_at_end and sft.metric_for_best_model):
            from recdata.errors import ConfigError

            raise ConfigError("early_stopping_patience needs load_best_model_at_end: true and metric_for_best_model "
                              "(e.g. eval_ranking_ndcg@10 with ranking_eval_users > 0)")
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=run_args.early_stopping_patience))
    return callbacks


def bind_callbacks(callbacks: list, trainer) -> None:
    """Give each callback that logs through the trainer (``bind(trainer)``: ranking validation) its trainer."""
    for callback in callbacks:
        if hasattr(callback, "bind"):
            callback.bind(trainer)


def run_sft(model_args: ModelArguments, data_args: DataArguments, run_args: AlignRecTrainArguments,
            sft: SFTConfig, extra_callbacks: list | None = None,
            ranking_validation: RankingValidationFactory | None = None) -> Path:
    """Train and write the run folder; returns it. ``extra_callbacks``: more TrainerCallbacks (benchmarks);
    ``ranking_validation``: the ranking callback factory (``selection_callbacks``), needed by ranking_eval_users."""
    dtype = resolve_runtime(run_args, sft)
    if run_args.packed_rows and not (sft.packing and sft.packing_strategy in ("bfd", "bfd_split")):
        from recdata.errors import ConfigError

        raise ConfigError("packed_rows keeps TRL's packed rows apart: set packing: true (packing_strategy bfd or "
                          f"bfd_split, got packing={sft.packing}, packing_strategy={sft.packing_strategy!r})")
    if model_args.content_rows != "none" and run_args.code_rows_learning_rate:
        from recdata.errors import ConfigError

        raise ConfigError("content_rows=adaptor computes the embedding rows, which code_rows_learning_rate cannot put "
                          "in their own optimizer group; set code_rows_learning_rate: 0 or content_rows: none")
    if sft.completion_only_loss is None:
        sft.completion_only_loss = True  # the prompt is context, only the answer is supervised
    output_dir = Path(sft.output_dir)
    item_tokenizer = load_train_item_tokenizer(data_args)
    resume = resolve_resume(sft)
    guard_output_dir(output_dir, item_tokenizer.content_hash, resume)
    train, evalset, validation = load_task_splits(data_args)
    if evalset is None or sft.eval_strategy == "no":
        logger.warning("no held-out loss: %s", "no validation split" if evalset is None else "eval_strategy=no")
        evalset = None
    bundle = setup_model(model_args, item_tokenizer, dtype, seed=sft.seed,
                         user_tokens=read_build_user_tokens(data_args.dataset_dir))
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
    ranking = selection_callbacks(data_args, run_args, sft, validation, item_tokenizer, bundle.tokenizer,
                                  ranking_validation)
    item_head = None
    if run_args.item_head_weight:
        item_head = ItemHeadTargets.from_token_ids(item_tokenizer.item_token_ids(bundle.tokenizer), len(bundle.tokenizer))
    cold_mask = read_cold_item_mask(data_args.dataset_dir, item_tokenizer, bundle.tokenizer,
                                    bundle.model.get_output_embeddings().weight.shape[0])  # cold-item protocol only
    cold_rows = None if cold_mask is None else resolve_cold_rows(
        model_args.cold_rows, model_args.model_init,
        bool(model_args.item_vectors_dir) and own_tokens_unique(item_tokenizer, bundle.tokenizer))
    check_cold_rows(cold_rows, model_args.item_vectors_dir)
    trainer = AlignRecSFTTrainer(
        model=bundle.model, args=sft, train_dataset=train,
        eval_dataset={data_args.eval_task or "validation": evalset} if evalset is not None else None,
        processing_class=bundle.tokenizer, peft_config=bundle.peft_config,
        code_rows_learning_rate=run_args.code_rows_learning_rate,
        item_head=item_head, item_head_weight=run_args.item_head_weight, packed_rows=run_args.packed_rows,
        item_head_options=ItemHeadOptions.from_run_args(run_args), lm_loss=run_args.lm_loss, cold_mask=cold_mask,
        callbacks=[JsonlMetricsCallback(output_dir / METRICS_FILE), *ranking, *(extra_callbacks or []),
                   *([TimeLimitCallback(run_args.max_train_seconds)] if run_args.max_train_seconds else [])],
    )
    bind_callbacks(ranking, trainer)
    trainer.train(resume_from_checkpoint=resume)
    if model_args.content_rows != "none":  # the exported folder is a plain HF model holding the effective rows
        baked = bake_content_rows(trainer.model)
        assert baked, "content_rows set but the trained model carries no content-rows parametrization"
    cold_record = {} if cold_rows is None else fit_trained_cold_rows(  # after baking: the rows the model decodes with
        trainer.model, item_tokenizer, bundle.tokenizer, cold_rows, model_args.item_vectors_dir, data_args.dataset_dir)
    kind = "full" if bundle.peft_config is None else "adapter"
    manifest = build_manifest(kind, base, item_tokenizer, bundle.code_token_ids, bundle.embedding_rows,
                              {"finetune_mode": model_args.finetune_mode, "model_init": model_args.model_init,
                               **item_head_manifest(run_args, trainer.item_head_objective),
                               **trainer.lm_loss_record,
                               **(cold_mask.manifest() if cold_mask is not None else {}), **cold_record,
                               **content_rows_manifest(model_args),
                               **({USER_TOKENS_KEY: len(bundle.user_token_ids)} if bundle.user_token_ids else {}),
                               PROMPT_FORMAT_KEY: read_build_prompt_format(data_args.dataset_dir)})
    save_run(trainer, bundle.tokenizer, item_tokenizer, output_dir, manifest,
             user_knowledge=read_build_user_knowledge(data_args.dataset_dir))
    if trainer.is_world_process_zero():
        if run_args.loss_curve:
            plot_loss_curve(output_dir / METRICS_FILE, output_dir / LOSS_CURVE_FILE)
        if run_args.merge:
            merge_run(output_dir)
    logger.info("run written to %s (%s)", output_dir, MANIFEST_FILE)
    return output_dir
