"""The ``evaluate`` stage: the served model beside the baseline rows, on the test targets.

Reads: the split, the served model (DPO's when the preference stage is on, else SFT's), the embeddings stage's
SASRec / knowledge / LEARN models (its text vectors for ``text_retriever_baseline``, its item vectors for
``item_vector_prior_weight``: injected as ``item_vectors``), the ``evaluate`` section
(``EvaluateConfig`` + the rows it turns on). Writes: ``metrics.json`` / ``metrics.md`` / per-user metrics and the
models of the rows it trains itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignrec.pipeline.bar_rows import BAR_KEYS, bar_recommenders
from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    build_section,
    embedding_classes,
    embedding_injected,
    evaluate_classes,
    preference_enabled,
    served_model_dir,
)

SFT_ROW = "alignrec_sft"  # with the preference stage on, "alignrec" is SFT+DPO and this row the SFT model alone


def _bce_sasrec(ctx: StageContext):
    """The BCE-loss SASRec (one sampled negative per position) that generative-recommendation papers report:
    the embeddings section's SASRec hyper-parameters with ``sasrec_loss: bce``, trained here so adding the row
    re-runs only this stage (and cached: a re-run for a change of ours loads it)."""
    import dataclasses

    from alignrec.pipeline.baseline_cache import baseline_key, cache_root, cached_baseline
    from alignrec.recommenders import SASRec, train_sasrec
    from recdata import SplitDataset

    (emb_cfg,) = build_section(embedding_classes(), ctx.run_config.sections.get("embeddings", {}), {}, "embeddings")
    split = SplitDataset.load(ctx.upstream("data") / "split")
    sasrec_cfg = dataclasses.replace(emb_cfg.sasrec_config(), sasrec_loss="bce")
    model = cached_baseline("bce-sasrec", baseline_key(split, sasrec_cfg),
                            cache_root(emb_cfg),
                            lambda: train_sasrec(split, sasrec_cfg, log_file=ctx.out_dir / "sasrec_bce_metrics.jsonl"),
                            SASRec.from_pretrained)
    model.save_pretrained(ctx.out_dir / "sasrec_bce")
    return model


def _sft_recommender(model_dir: Path, cfg: Any):
    from inference.item_prior import load_item_prior
    from inference.trained_run import TrainedRun, check_item_head_override
    from recdata import SplitDataset
    from recdata.popularity import train_popularity

    counts = train_popularity(SplitDataset.load(cfg.split_dir)) if cfg.popularity_penalty else None
    head_weight = check_item_head_override(model_dir, cfg.item_head_decode_weight)
    prior = load_item_prior(model_dir, cfg.item_vector_prior_weight, cfg.item_vectors, head_weight)
    return TrainedRun.load(model_dir, device=cfg.device).recommender(
        max(cfg.ks), cfg.num_beams, cfg.exclude_history, cfg.batch_size, popularity_penalty=cfg.popularity_penalty,
        item_counts=counts, item_head_weight=head_weight, decode_normaliser=cfg.decode_normaliser, **prior)


def _text_vectors(ctx: StageContext, split_dir: str):
    """The text retriever row's item vectors: the embeddings stage's own when they are MiniLM text vectors (source
    text, sentence encoder), else the embeddings section's item text (template, token limit, sentence encoder
    folder) encoded with the sentence encoder (embedding cache: a fused run with a MiniLM text part hits it)."""
    import json

    from inference.text_retriever import SENTENCE_KIND, sentence_text_vectors
    from recdata import SplitDataset
    from recdata.item_vectors import load_embeddings_dir

    emb_dir = ctx.upstream("embeddings")
    meta = emb_dir / "meta.json"
    if meta.is_file() and json.loads(meta.read_text()).get("kind") == SENTENCE_KIND:
        return load_embeddings_dir(emb_dir)
    section = ctx.run_config.sections.get("embeddings", {})
    (emb_cfg,) = build_section(embedding_classes(), section, embedding_injected(ctx, section), "embeddings")
    return sentence_text_vectors(SplitDataset.load(split_dir), emb_cfg)


def run_evaluate(ctx: StageContext) -> dict[str, Any]:
    from alignrec.recommenders import SASRec, as_recommend_fn
    from inference.cli import run_evaluate as evaluate

    injected = {"model_dir": str(served_model_dir(ctx)), "split_dir": str(ctx.upstream("data") / "split"),
                "out_dir": str(ctx.out_dir), "item_vectors": str(ctx.upstream("embeddings"))}  # the content prior's
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
    text_vectors = _text_vectors(ctx, cfg.split_dir) if cfg.text_retriever_baseline else None
    reports = evaluate(cfg, extra_recommenders=extra, text_vectors=text_vectors)
    return {name: {"n": rep["n_examples"], **{k: rep["overall"][k] for k in ("recall@10", "ndcg@10") if k in rep["overall"]},
                   "invalid_rate": rep["invalid_rate"], "timing": rep.get("timing")}
            for name, rep in reports.items()}


def _evaluate_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """The LLM and encoder of ``evaluate.llm4msr`` and the sentence encoder of ``evaluate.text_retriever_baseline``
    (none without them, so other runs keep their key)."""
    out: dict[str, str] = {}
    if section.get("text_retriever_baseline"):
        from recdata.paths import default_sentence_encoder_dir

        embeddings = run_cfg.sections.get("embeddings", {})
        out["text_retriever_encoder"] = str(embeddings.get("sentence_encoder_dir") or default_sentence_encoder_dir())
    if section.get("llm4msr"):
        from alignrec.pipeline.scenario_rows import llm4msr_inputs

        out.update(llm4msr_inputs(section, run_cfg))
    return out


# version 2: exclude_history true and num_beams auto (1.5 x max K) by default; per-user metrics saved
STAGE = Stage("evaluate", run_evaluate, ("data", "train", "embeddings", "preference"), version=2,
              inputs=_evaluate_inputs)
