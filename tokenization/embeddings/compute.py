"""``compute_item_embeddings``: the one entry point that turns a config + split into cached item vectors."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from alignrec.recommenders import SASRec, train_sasrec
from recdata.errors import UserError
from recdata.io import sha256_json
from recdata.paths import default_llm_dir, default_sentence_encoder_dir, require
from recdata.split import SplitDataset
from tokenization.embeddings.cache import EmbeddingCache, model_identity
from tokenization.embeddings.config import EmbeddingConfig
from tokenization.embeddings.fusion import fuse_embeddings
from tokenization.embeddings.text import encode_llm, encode_sentence, render_catalogue
from tokenization.embeddings.user_provided import load_user_embeddings
from tokenization.embeddings.vectors import ItemEmbeddings

logger = logging.getLogger(__name__)


def compute_item_embeddings(cfg: EmbeddingConfig, split: SplitDataset, sasrec: SASRec | None = None) -> ItemEmbeddings:
    """Item vectors in catalogue order (``split.dataset.item_ids()``), from the cache when the key matches.

    ``sasrec``: an already trained SASRec (e.g. the pipeline's CF baseline) whose item table is the CF part,
    so the same model is not trained twice.
    """
    if cfg.source == "fused":
        weights = cfg.fusion_weight_map()
        parts = {name: _compute_part(name, cfg, split, sasrec) for name in weights}
        return fuse_embeddings(parts, weights)
    return _compute_part(cfg.source, cfg, split, sasrec)


def _compute_part(source: str, cfg: EmbeddingConfig, split: SplitDataset, sasrec: SASRec | None) -> ItemEmbeddings:
    catalogue = split.dataset.item_ids()
    if source == "cf" and sasrec is not None:
        if list(sasrec.item_ids) != catalogue:
            raise UserError("the given SASRec was trained on another catalogue; train it on this split")
        return ItemEmbeddings(catalogue, sasrec.item_embeddings(), {"kind": "cf-sasrec", "train_info": sasrec.train_info})
    if source == "file":
        return load_user_embeddings(cfg.file_path, cfg.file_ids_path or None, catalogue)
    if source == "knowledge":  # REKI item knowledge: ids live in the safetensors metadata ('item_ids')
        emb = load_user_embeddings(Path(cfg.knowledge_dir) / "item_vectors.safetensors", None, catalogue)
        return ItemEmbeddings(emb.item_ids, emb.vectors, {"kind": "knowledge", "knowledge_dir": cfg.knowledge_dir})
    cache = EmbeddingCache(cfg.resolved_cache_dir())
    if source == "text":
        texts = render_catalogue(split.dataset.item_table(), catalogue, cfg.text_template)
        if cfg.text_encoder == "sentence":
            model_dir = Path(cfg.sentence_encoder_dir) if cfg.sentence_encoder_dir else default_sentence_encoder_dir()
        else:
            model_dir = Path(cfg.llm_dir) if cfg.llm_dir else default_llm_dir()
        require(model_dir, f"{cfg.text_encoder} text encoder")
        key = {"encoder": cfg.text_encoder, "model": model_identity(model_dir), "template": cfg.text_template,
               "max_length": cfg.text_max_length, "item_ids": sha256_json(catalogue), "texts": sha256_json(texts)}
        kind = f"text-{cfg.text_encoder}"
    else:
        sasrec_cfg = cfg.sasrec_config()
        key = {"data": split.dataset.fingerprint(), "max_history": split.max_history,
               "sasrec": {k: v for k, v in dataclasses.asdict(sasrec_cfg).items() if k != "sasrec_device"}}
        kind = "cf-sasrec"
    if cfg.use_cache and (hit := cache.get(kind, key)) is not None:
        return hit
    if source == "text":
        logger.info("encoding %d item texts with %s (%s)", len(texts), cfg.text_encoder, model_dir)
        if cfg.text_encoder == "sentence":
            vectors = encode_sentence(texts, model_dir, cfg.text_batch_size, cfg.text_device, cfg.text_max_length)
        else:
            vectors = encode_llm(texts, model_dir, cfg.text_batch_size, cfg.text_max_length, cfg.text_device)
        emb = ItemEmbeddings(catalogue, vectors, {"kind": kind, "model_dir": str(model_dir),
                                                  "template": cfg.text_template})
    else:
        model = train_sasrec(split, sasrec_cfg)
        emb = ItemEmbeddings(catalogue, model.item_embeddings(), {"kind": kind, "train_info": model.train_info})
    if cfg.use_cache:
        entry = cache.put(kind, key, emb)
        if source == "cf":
            model.save_pretrained(entry / "sasrec")  # reusable as the CF baseline
    return emb

