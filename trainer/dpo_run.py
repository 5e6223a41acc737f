"""One DPO run on top of a finished SFT run: pairs + policy/reference + ``AlignRecDPOTrainer`` + the run folder.

The output folder has the SFT run's layout (adapter or full model, tokenizer, ``item_tokenizer/``, metrics.jsonl,
loss_curve.png, TensorBoard ``runs/``, ``checkpoint-N/``, manifest last), so ``load_for_inference``, evaluation,
the cache and export read it unchanged. ``trainer/dpo.py`` calls ``run_dpo``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
from trl import DPOConfig

from recdata.config import config_to_dict
from recdata.errors import InputFileError, UserError
from recdata.io import atomic_write_json
from recdata.outputs import claim_output_dir
from trainer.callbacks import LOSS_CURVE_FILE, METRICS_FILE, JsonlMetricsCallback, plot_loss_curve
from trainer.config import AlignRecTrainArguments, resolve_runtime
from trainer.dpo_config import PreferenceArguments
from trainer.dpo_model import REF_ADAPTER, SftStart, load_sft_run
from trainer.dpo_trainer import AlignRecDPOTrainer
from trainer.export import MANIFEST_FILE, merge_run, read_user_knowledge, save_run
from trainer.launch import is_main_process
from trainer.train import (
    RESOLVED_CONFIG_FILE,
    RankingValidationFactory,
    bind_callbacks,
    guard_output_dir,
    resolve_resume,
    selection_callbacks,
)

logger = logging.getLogger(__name__)

__all__ = ["PAIR_COLUMNS", "build_dpo_trainer", "load_pairs", "run_dpo"]

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def load_pairs(args: PreferenceArguments) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Training pairs and held-out pairs (the ``validation`` split, when there is one), columns checked."""
    path = Path(args.pairs_dir)
    if not path.is_dir():
        raise InputFileError(f"pairs_dir={path} does not exist; build pairs with the pipeline's preference stage "
                             "(sft_tasks.preference) or `alignrec tasks build` (its preference/ folder)")
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise UserError(f"{path} is a DatasetDict without a 'train' split; it has {list(loaded)}")
        train, held_out = loaded["train"], loaded.get("validation")
    else:
        train, held_out = loaded, None
    for name, split in (("train", train), ("validation", held_out)):
        if split is None:
            continue
        missing = [c for c in PAIR_COLUMNS if c not in split.column_names]
        if missing:
            raise UserError(f"{path} split {name!r} lacks columns {missing}; pairs need prompt, chosen, rejected")
    if args.max_train_pairs:
        train = train.select(range(min(args.max_train_pairs, len(train))))
    if len(train) == 0:
        raise UserError(f"{path} has no training pairs")
    if held_out is not None and args.max_eval_pairs:
        held_out = held_out.select(range(min(args.max_eval_pairs, len(held_out))))
    keep = list(PAIR_COLUMNS)
    return train.select_columns(keep), (held_out.select_columns(keep) if held_out is not None and len(held_out) else None)


def _ranking_validation(pref: PreferenceArguments) -> datasets.Dataset | None:
    if not pref.ranking_eval_users:
        return None
    path = Path(pref.ranking_dataset_dir)
    if not path.is_dir():
        raise InputFileError(f"ranking_dataset_dir={path} does not exist; pass the tasks stage's DatasetDict")
    loaded = datasets.load_from_disk(str(path))
    if not isinstance(loaded, datasets.DatasetDict) or "validation" not in loaded:
        raise UserError(f"{path} has no 'validation' split for ranking validation; rebuild it with `alignrec tasks`")
    return loaded["validation"]


def build_dpo_trainer(pref: PreferenceArguments, run_args: AlignRecTrainArguments, dpo: DPOConfig,
                      callbacks: list | None = None, ranking_validation: RankingValidationFactory | None = None,
                      ) -> tuple[AlignRecDPOTrainer, SftStart]:
    """Everything up to ``trainer.train()``: the tests inspect the reference at step 0 through this.

    Best-checkpoint selection is SFT's: ``ranking_eval_users`` adds the callback of the ``ranking_validation``
    factory (``inference.ranking_validation.ranking_validation_callback``, passed by trainer/dpo.py), with
    ``metric_for_best_model: eval_ranking_ndcg@10``, ``load_best_model_at_end``, ``early_stopping_patience``.
    """
    dtype = resolve_runtime(run_args, dpo)
    if dpo.use_cpu and run_args.precision == "auto" and dpo.gradient_checkpointing:
        # DPOConfig turns gradient_checkpointing on by default (not activation_checkpointing, which is what
        # resolve_runtime looks at): off on CPU as for SFT, where recomputation only costs time
        dpo.gradient_checkpointing = dpo.activation_checkpointing = False
    start = load_sft_run(pref.sft_run_dir, dtype)
    train, held_out = load_pairs(pref)
    if held_out is None or dpo.eval_strategy == "no":
        logger.warning("no held-out DPO metrics: %s", "no validation pairs" if held_out is None else "eval_strategy=no")
        held_out = None
    # pref carries DataArguments' three ranking_eval_* fields, which is all selection_callbacks reads from it
    ranking = selection_callbacks(pref, run_args, dpo, _ranking_validation(pref), start.item_tokenizer,
                                  start.tokenizer, ranking_validation)
    trainer = AlignRecDPOTrainer(
        model=start.model, ref_model=start.ref_model, args=dpo, train_dataset=train, eval_dataset=held_out,
        processing_class=start.tokenizer, callbacks=[*(callbacks or []), *ranking],
    )
    bind_callbacks(ranking, trainer)
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise UserError(f"every prompt of {pref.pairs_dir} is at least max_length={dpo.max_length} tokens long, so "
                        "no pair is left to train on; raise --max_length")
    if kept < len(train):
        logger.warning("%d of %d pairs dropped: their prompt fills max_length=%d", len(train) - kept, len(train),
                       dpo.max_length)
    return trainer, start


def run_dpo(pref: PreferenceArguments, run_args: AlignRecTrainArguments, dpo: DPOConfig,
            extra_callbacks: list | None = None, ranking_validation: RankingValidationFactory | None = None) -> Path:
    """Train and write the run folder; returns it. ``extra_callbacks``: more TrainerCallbacks; ``ranking_validation``:
    the ranking callback factory for best-checkpoint selection (``build_dpo_trainer``)."""
    output_dir = Path(dpo.output_dir)
    if is_main_process():
        claim_output_dir(output_dir, "trainer/dpo.py", inputs=[pref.sft_run_dir, pref.pairs_dir],
                         overwrite=run_args.overwrite)
    resume = resolve_resume(dpo)
    callbacks = [JsonlMetricsCallback(output_dir / METRICS_FILE), *(extra_callbacks or [])]
    trainer, start = build_dpo_trainer(pref, run_args, dpo, callbacks, ranking_validation)
    guard_output_dir(output_dir, start.item_tokenizer.content_hash, resume)
    resolved = {
        **config_to_dict(pref, run_args, dpo), "item_tokenizer_hash": start.item_tokenizer.content_hash,
        "sft_run_dir": str(Path(pref.sft_run_dir).resolve()), "sft_manifest": start.manifest,
        "train_pairs": len(trainer.train_dataset),
    }
    if is_main_process():
        atomic_write_json(output_dir / RESOLVED_CONFIG_FILE, resolved)
    trainer.train(resume_from_checkpoint=resume)
    model = trainer.model if not hasattr(trainer.model, "module") else trainer.model.module
    if REF_ADAPTER in getattr(model, "peft_config", {}):
        model.delete_adapter(REF_ADAPTER)  # the reference is the SFT run itself; the run folder keeps one adapter
    manifest = {**start.manifest, "preference": {"sft_run_dir": resolved["sft_run_dir"], "beta": dpo.beta,
                                                 "loss_type": list(dpo.loss_type), "train_pairs": len(trainer.train_dataset)}}
    save_run(trainer, start.tokenizer, start.item_tokenizer, output_dir, manifest,
             user_knowledge=read_user_knowledge(pref.sft_run_dir))
    if trainer.is_world_process_zero():
        if run_args.loss_curve:
            plot_loss_curve(output_dir / METRICS_FILE, output_dir / LOSS_CURVE_FILE)
        if run_args.merge:
            merge_run(output_dir)
    logger.info("DPO run written to %s (%s)", output_dir, MANIFEST_FILE)
    return output_dir
