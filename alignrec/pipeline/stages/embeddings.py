"""The ``embeddings`` stage: item vectors for the tokenizer, plus the SASRec / knowledge / LEARN rows.

Reads: the split, the ``embeddings`` section (``EmbeddingConfig``), user vectors and the text encoder (content in the
key), the knowledge vectors when the section uses them (then the knowledge section joins the key). Writes:
``vectors.npy`` + ``item_ids.json`` + ``meta.json`` and the trained ``sasrec/``, ``sasrec_knowledge/``, ``learn/``.
"""

from __future__ import annotations

import json
from typing import Any

from alignrec.pipeline.runner import Stage, StageContext
from alignrec.pipeline.sections import (
    build_section,
    cold_mask_key,
    embedding_classes,
    embedding_injected,
    sasrec_knowledge_kinds,
    uses_knowledge,
)


def _embedding_inputs(section: dict[str, Any], run_cfg: Any) -> dict[str, str]:
    """User vectors and the text encoder folder the embeddings stage reads."""
    from recdata.paths import default_llm_dir, default_sentence_encoder_dir

    source = section.get("source", "text")
    fusion = str(section.get("fusion_weights", "text=1.0,cf=1.0"))
    out = {"file_path": section.get("file_path", ""), "file_ids_path": section.get("file_ids_path", "")}
    if source == "text" or (source == "fused" and "text" in fusion):
        if section.get("text_encoder", "sentence") == "sentence":
            out["text_encoder"] = str(section.get("sentence_encoder_dir") or default_sentence_encoder_dir())
        else:
            out["text_encoder"] = str(section.get("llm_dir") or default_llm_dir())
    return out


def _embeddings_key(section: dict[str, Any], run_cfg: Any) -> dict[str, Any]:
    """The knowledge section joins the key only of stages that read it, so other runs keep their keys; likewise the
    cold-item protocol's softmax mask of the SASRec / LEARN training here (``cold_mask_key``) and, for fused
    vectors, the imputed CF rows of its items without training (``tokenization.embeddings.cold_imputation``), so
    a cold run made before the imputation recomputes its vectors."""
    knowledge = {"knowledge": run_cfg.sections.get("knowledge", {})} if uses_knowledge(section) else {}
    cold = cold_mask_key(run_cfg)
    imputed = {"cold_cf_imputed": 1} if cold and section.get("source") == "fused" else {}
    return {**knowledge, **cold, **imputed}


def run_embeddings(ctx: StageContext) -> dict[str, Any]:
    import numpy as np

    from alignrec.recommenders import train_sasrec
    from recdata import SplitDataset, atomic_write_json
    from tokenization.embeddings import compute_item_embeddings

    baseline = bool(ctx.config.get("sasrec_baseline", True))
    (cfg,) = build_section(embedding_classes(), ctx.config, embedding_injected(ctx, ctx.config), "embeddings")
    split = SplitDataset.load(ctx.upstream("data") / "split")
    sasrec = None
    summary: dict[str, Any] = {"source": cfg.source}
    if baseline or cfg.source in ("cf", "fused"):
        sasrec = train_sasrec(split, cfg.sasrec_config(), log_file=ctx.out_dir / "sasrec_metrics.jsonl")
        sasrec.save_pretrained(ctx.out_dir / "sasrec")
        summary["sasrec_valid"] = _selection_metrics(sasrec, split, cfg.sasrec_valid_users, cfg.sasrec_seed)
    if ctx.config.get("sasrec_knowledge"):
        summary["sasrec_knowledge_valid"] = _train_knowledge_sasrec(ctx, cfg, split)
    learn = _train_learn_stage(ctx, cfg, split, summary)
    emb = compute_item_embeddings(cfg, split, sasrec=sasrec, learn=learn)
    np.save(ctx.out_dir / "vectors.npy", emb.vectors)
    atomic_write_json(ctx.out_dir / "item_ids.json", list(emb.item_ids), indent=None)
    atomic_write_json(ctx.out_dir / "meta.json", json.loads(json.dumps(emb.meta, default=str)))
    summary.update({"items": len(emb.item_ids), "dim": int(emb.vectors.shape[1])})
    return summary


def _train_knowledge_sasrec(ctx: StageContext, cfg: Any, split: Any) -> dict[str, float]:
    """"SASRec + knowledge" with the baseline's SASRec config, saved with its prestored vectors."""
    from alignrec.knowledge.train import knowledge_sasrec_from_vectors
    from alignrec.recommenders import train_sasrec

    if not cfg.knowledge_dir:
        raise ValueError("embeddings.sasrec_knowledge needs knowledge vectors: fill the 'knowledge' section "
                         "(or set embeddings.knowledge_dir)")
    model = knowledge_sasrec_from_vectors(cfg.knowledge_dir, split.dataset.item_ids(), cfg.sasrec_config(),
                                          sasrec_knowledge_kinds(ctx.config.get("sasrec_knowledge")))
    train_sasrec(split, cfg.sasrec_config(), log_file=ctx.out_dir / "sasrec_knowledge_metrics.jsonl", model=model)
    model.save_pretrained(ctx.out_dir / "sasrec_knowledge")
    return _selection_metrics(model, split, cfg.sasrec_valid_users, cfg.sasrec_seed)


def _train_learn_stage(ctx: StageContext, cfg: Any, split: Any, summary: dict[str, Any]):
    """LEARN towers when ``source`` uses them or ``learn_baseline: true`` (the LEARN evaluation row); resumable."""
    from alignrec.recommenders import train_learn
    from tokenization.embeddings import text_embeddings

    uses = cfg.source == "learn" or (cfg.source == "fused" and "learn" in cfg.fusion_weight_map())
    if not (uses or bool(ctx.config.get("learn_baseline", False))):
        return None
    learn = train_learn(split, cfg.learn_config(), text_embeddings(cfg, split).vectors,
                        log_file=ctx.out_dir / "learn_metrics.jsonl", checkpoint_path=ctx.out_dir / "learn_checkpoint.pt")
    learn.save_pretrained(ctx.out_dir / "learn")
    summary["learn_valid"] = _selection_metrics(learn, split, cfg.learn_valid_users, cfg.learn_seed)
    return learn


def _selection_metrics(model: Any, split: Any, valid_users: int, seed: int) -> dict[str, Any]:
    """Valid Recall / NDCG@10 of a trained dense recommender on the users its early stopping ranked, and their
    count (``valid_users`` of ``valid_users_of``): all of them on every dataset we publish; at 1M items a seeded
    sample, since ranking all 100k valid users once more would take longer than the training (1e11 scores).
    The kept weights' own evaluation (``train_info['best_valid']``) when early stopping ran: the same numbers."""
    from alignrec.recommenders import full_ranking_metrics
    from alignrec.recommenders.valid_sample import early_stopping_examples

    info = getattr(model, "train_info", None) or {}
    if info.get("best_valid") and "valid_users" in info:
        return {**info["best_valid"], "valid_users": info["valid_users"], "valid_users_of": info["valid_users_of"]}
    valid, record = early_stopping_examples(split.eval_examples("valid"), len(model.item_ids), valid_users, seed,
                                            type(model).__name__)
    context = model.eval_context(valid) if hasattr(model, "eval_context") else {}
    return {**full_ranking_metrics(model, list(valid["history"]), list(valid["target"]), k=10, **context), **record}


# version 2: SASRec model selection masks history items (as evaluation does)
STAGE = Stage("embeddings", run_embeddings, ("data",), version=2, inputs=_embedding_inputs,
              extra_key=_embeddings_key)
