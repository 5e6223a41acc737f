"""``compute_item_embeddings``: the one entry point that turns a config + split into cached item vectors."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from alignrec.llm.text_encoders import encode_llm, encode_sentence
from alignrec.recommenders import LEARN, SASRec, train_learn, train_sasrec
from alignrec.recommenders.valid_sample import model_key
from recdata.cold_items import items_without_training, uses_cold_protocol
from recdata.errors import UserError
from recdata.io import sha256_json
from recdata.item_vectors import ItemEmbeddings, load_user_embeddings
from recdata.paths import default_llm_dir, default_sentence_encoder_dir, require
from recdata.split import SplitDataset
from tokenization.embeddings.cache import EmbeddingCache, model_identity
from tokenization.embeddings.cold_imputation import impute_untrained
from tokenization.embeddings.config import EmbeddingConfig
from tokenization.embeddings.fusion import fuse_embeddings
from tokenization.embeddings.text import render_catalogue

logger = logging.getLogger(__name__)


def compute_item_embeddings(cfg: EmbeddingConfig, split: SplitDataset, sasrec: SASRec | None = None,
                            learn: LEARN | None = None) -> ItemEmbeddings:
    """Item vectors in catalogue order (``split.dataset.item_ids()``), from the cache when the key matches.

    ``sasrec`` / ``learn``: an already trained SASRec / LEARN (e.g. the pipeline's baselines) whose item table
    is the cf / learn part, so the same model is not trained twice.
    """
    if cfg.source == "fused":
        weights = cfg.fusion_weight_map()
        parts = {name: _compute_part(name, cfg, split, sasrec, learn) for name in weights}
        if uses_cold_protocol(split):  # an item without training has no behaviour vector: impute it from content
            parts = impute_untrained(parts, items_without_training(split))
        return fuse_embeddings(parts, weights)
    return _compute_part(cfg.source, cfg, split, sasrec, learn)


def text_key(cfg: EmbeddingConfig, split: SplitDataset) -> tuple[str, dict, list[str], Path]:
    """(cache kind, cache key, rendered texts, encoder folder) of the text vectors."""
    catalogue = split.dataset.item_ids()
    texts = render_catalogue(split.dataset.item_table(), catalogue, cfg.text_template)
    if cfg.text_encoder == "sentence":
        model_dir = Path(cfg.sentence_encoder_dir) if cfg.sentence_encoder_dir else default_sentence_encoder_dir()
    else:
        model_dir = Path(cfg.llm_dir) if cfg.llm_dir else default_llm_dir()
    require(model_dir, f"{cfg.text_encoder} text encoder")
    key = {"encoder": cfg.text_encoder, "model": model_identity(model_dir), "template": cfg.text_template,
           "max_length": cfg.text_max_length, "item_ids": sha256_json(catalogue), "texts": sha256_json(texts)}
    return f"text-{cfg.text_encoder}", key, texts, model_dir


def learn_key(cfg: EmbeddingConfig, split: SplitDataset) -> dict:
    """What determines trained LEARN towers: the split (labels included), the content vectors, the towers."""
    return {"data": split.dataset.fingerprint(), "max_history": split.max_history,
            "content": sha256_json(text_key(cfg, split)[1]),
            "learn": model_key(cfg.learn_config(), "learn_device")}


def text_embeddings(cfg: EmbeddingConfig, split: SplitDataset) -> ItemEmbeddings:
    """The text vectors of this config (the frozen encoder's output; cached): LEARN's content input."""
    return _compute_part("text", cfg, split, None, None)


def train_learn_cached(cfg: EmbeddingConfig, split: SplitDataset, log_file=None, checkpoint_path=None) -> LEARN:
    """LEARN over this config's text vectors (cached), trained, or loaded from the embedding cache."""
    content = text_embeddings(cfg, split)
    cache = EmbeddingCache(cfg.resolved_cache_dir())
    key = learn_key(cfg, split)
    entry = cache.path("learn", key)
    if cfg.use_cache and cache.get("learn", key) is not None and (entry / "learn").is_dir():
        return LEARN.from_pretrained(entry / "learn", device=cfg.learn_device)
    model = train_learn(split, cfg.learn_config(), content.vectors, log_file=log_file, checkpoint_path=checkpoint_path)
    model.train_info["content"] = {k: content.meta.get(k) for k in ("kind", "model_dir", "encode")}
    if cfg.use_cache:
        entry = cache.put("learn", key, ItemEmbeddings(content.item_ids, model.item_embeddings(),
                                                       {"kind": "learn", "train_info": model.train_info}))
        model.save_pretrained(entry / "learn")
    return model


def _compute_part(source: str, cfg: EmbeddingConfig, split: SplitDataset, sasrec: SASRec | None,
                  learn: LEARN | None) -> ItemEmbeddings:
    catalogue = split.dataset.item_ids()
    if source == "cf" and sasrec is not None:
        if list(sasrec.item_ids) != catalogue:
            raise UserError("the given SASRec was trained on another catalogue; train it on this split")
        return ItemEmbeddings(catalogue, sasrec.item_embeddings(), {"kind": "cf-sasrec", "train_info": sasrec.train_info})
    if source == "learn":
        learn = learn if learn is not None else train_learn_cached(cfg, split)
        if list(learn.item_ids) != catalogue:
            raise ValueError("the given LEARN model was trained on another catalogue; train it on this split")
        return ItemEmbeddings(catalogue, learn.item_embeddings(), {"kind": "learn", "train_info": learn.train_info})
    if source == "file":
        return load_user_embeddings(cfg.file_path, cfg.file_ids_path or None, catalogue)
    if source == "knowledge":  # REKI item knowledge: ids live in the safetensors metadata ('item_ids')
        emb = load_user_embeddings(Path(cfg.knowledge_dir) / "item_vectors.safetensors", None, catalogue)
        return ItemEmbeddings(emb.item_ids, emb.vectors, {"kind": "knowledge", "knowledge_dir": cfg.knowledge_dir})
    cache = EmbeddingCache(cfg.resolved_cache_dir())
    if source == "text":
        kind, key, texts, model_dir = text_key(cfg, split)
    else:
        sasrec_cfg = cfg.sasrec_config()
        key = {"data": split.dataset.fingerprint(), "max_history": split.max_history,
               "sasrec": model_key(sasrec_cfg, "sasrec_device")}
        kind = "cf-sasrec"
    if cfg.use_cache and (hit := cache.get(kind, key)) is not None:
        return hit
    if source == "text":
        logger.info("encoding %d item texts with %s (%s)", len(texts), cfg.text_encoder, model_dir)
        started = time.perf_counter()
        if cfg.text_encoder == "sentence":
            vectors = encode_sentence(texts, model_dir, cfg.text_batch_size, cfg.text_device, cfg.text_max_length)
        else:
            vectors = encode_llm(texts, model_dir, cfg.text_batch_size, cfg.text_max_length, cfg.text_device)
        seconds = time.perf_counter() - started  # the frozen encoder's one-off cost (model load included)
        emb = ItemEmbeddings(catalogue, vectors, {
            "kind": kind, "model_dir": str(model_dir), "template": cfg.text_template,
            "encode": {"seconds": round(seconds, 2), "items_per_second": round(len(texts) / seconds, 1),
                       "device": cfg.text_device, "threads": torch.get_num_threads()}})
    else:
        model = train_sasrec(split, sasrec_cfg)
        emb = ItemEmbeddings(catalogue, model.item_embeddings(), {"kind": kind, "train_info": model.train_info})
    if cfg.use_cache:
        entry = cache.put(kind, key, emb)
        if source == "cf":
            model.save_pretrained(entry / "sasrec")  # reusable as the CF baseline
    return emb

