"""The ``evaluate`` stage: the served model beside the baseline rows, on the test targets.

Reads: the split, the served model (DPO's when the preference stage is on, else SFT's), the embeddings stage's
SASRec / knowledge / LEARN models, the ``evaluate`` section (``EvaluateConfig`` + the rows it turns on). Writes:
``metrics.json`` / ``metrics.md`` / per-user metrics and the models of the rows it trains itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignrec.pipeline.bar_rows import BAR_KEYS, bar_recommenders
from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    build_section,
    embedding_classes,
    evaluate_classes,
    preference_enabled,
    served_model_dir,
)

SFT_ROW = "alignrec_sft"  # with the preference stage on, "alignrec" is SFT+DPO and this row the SFT model alone


def _bce_sasrec(ctx: StageContext):
    """The BCE-loss SASRec (one sampled negative per position) that generative-recommendation papers report:
    the embeddings section's SASRec hyper-parameters with ``sasrec_loss: bce``, trained here so adding the row
    re-runs only this stage."""
    import dataclasses

    from alignrec.recommenders import train_sasrec
    from recdata import SplitDataset

    (emb_cfg,) = build_section(embedding_classes(), ctx.run_config.sections.get("embeddings", {}), {}, "embeddings")
    split = SplitDataset.load(ctx.upstream("data") / "split")
    model = train_sasrec(split, dataclasses.replace(emb_cfg.sasrec_config(), sasrec_loss="bce"),
                         log_file=ctx.out_dir / "sasrec_bce_metrics.jsonl")
    model.save_pretrained(ctx.out_dir / "sasrec_bce")
    return model


def _sft_recommender(model_dir: Path, cfg: Any):
    from inference.trained_run import TrainedRun, check_item_head_override
    from recdata import SplitDataset
    from recdata.popularity import train_popularity

    counts = train_popularity(SplitDataset.load(cfg.split_dir)) if cfg.popularity_penalty else None
    head_weight = check_item_head_override(model_dir, cfg.item_head_decode_weight)
    return TrainedRun.load(model_dir, device=cfg.device).recommender(
        max(cfg.ks), cfg.num_beams, cfg.exclude_history, cfg.batch_size, popularity_penalty=cfg.popularity_penalty,
        item_counts=counts, item_head_weight=head_weight)


def run_evaluate(ctx: StageContext) -> dict[str, Any]:
    from alignrec.recommenders import SASRec, as_recommend_fn
    from inference.cli import run_evaluate as evaluate

    injected = {"model_dir": str(served_model_dir(ctx)), "split_dir": str(ctx.upstream("data") / "split"),
                "out_dir": str(ctx.out_dir)}
    (cfg,) = build_section(evaluate_classes(), ctx.config, injected, "evaluate")
    extra = {}
    if preference_enabled(ctx.run_config.sections):  # SFT vs SFT+DPO on the same users, side by side
        extra[SFT_ROW] = _sft_recommender(ctx.upstream("train") / "model", cfg)
    sasrec_dir = ctx.upstream("embeddings") / "sasrec"
    if sasrec_dir.is_dir():
        from recdata import SplitDataset

        split = SplitDataset.load(cfg.split_dir)  # with scenarios, SASRec is also ranked within each scenario
        extra["sasrec"] = as_recommend_fn(SASRec.from_pretrained(sasrec_dir), k=max(cfg.ks),
                                          exclude_history=cfg.exclude_history,
                                          scenario_items=split.scenario_catalogues() if split.has_scenarios else None)
    if ctx.config.get("sasrec_bce_baseline", False):
        extra["sasrec_bce"] = as_recommend_fn(_bce_sasrec(ctx), k=max(cfg.ks), exclude_history=cfg.exclude_history)
    if any(ctx.config.get(key) is not None for key in BAR_KEYS):  # the tuned bar (alignrec sasrec tune)
        from recdata import SplitDataset

        (emb_cfg,) = build_section(embedding_classes(), ctx.run_config.sections.get("embeddings", {}), {}, "embeddings")
        extra.update(bar_recommenders(ctx.config, emb_cfg, SplitDataset.load(cfg.split_dir), ctx.out_dir,
                                      max(cfg.ks), cfg.exclude_history))
    knowledge_dir = ctx.upstream("embeddings") / "sasrec_knowledge"
    if knowledge_dir.is_dir():
        from alignrec.recommenders import KnowledgeSASRec

        knowledge_model = KnowledgeSASRec.from_pretrained(knowledge_dir)
        extra["sasrec+knowledge"] = as_recommend_fn(knowledge_model, k=max(cfg.ks), exclude_history=cfg.exclude_history,
                                                    context_fn=knowledge_model.context_for)
    learn_dir = ctx.upstream("embeddings") / "learn"
    if learn_dir.is_dir():
        from alignrec.recommenders import LEARN

        extra["learn"] = as_recommend_fn(LEARN.from_pretrained(learn_dir), k=max(cfg.ks),
                                         exclude_history=cfg.exclude_history)
    if ctx.config.get("scenario_backbone") or ctx.config.get("llm4msr"):  # multi-scenario rows (LLM4MSR)
        from alignrec.pipeline.scenario_rows import scenario_rows

        extra.update(scenario_rows(ctx, max(cfg.ks), cfg.exclude_history))
    reports = evaluate(cfg, extra_recommenders=extra)
    return {name: {"n": rep["n_examples"], **{k: rep["overall"][k] for k in ("recall@10", "ndcg@10") if k in rep["overall"]},
                   "invalid_rate": rep["invalid_rate"], "timing": rep.get("timing")}
            for name, rep in reports.items()}


def _evaluate_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The LLM and encoder of ``evaluate.llm4msr`` (none without it, so other runs keep their key)."""
    if not section.get("llm4msr"):
        return {}
    from alignrec.pipeline.scenario_rows import llm4msr_inputs

    return llm4msr_inputs(section, run_cfg)


# version 2: exclude_history true and num_beams auto (1.5 x max K) by default; per-user metrics saved
STAGE = Stage("evaluate", run_evaluate, ("data", "train", "embeddings", "preference"), version=2,
              inputs=_evaluate_inputs)
