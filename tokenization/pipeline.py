"""Embeddings -> RQ-VAE -> collision-free assignment -> ``ItemTokenizer`` + report, saved to one folder.

``fit_item_tokenizer`` is the core on plain arrays (tests, benchmarks, user vectors);
``build_item_tokenizer`` adds the item embeddings and LLM alignment targets from ``tokenization.embeddings``
and writes the artefacts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recdata.config import config_to_dict
from recdata.errors import UserError
from recdata.io import atomic_write_json
from tokenization.collisions import assign_unique_codes, with_item_id_level
from tokenization.config import TokenizerConfig
from tokenization.item_tokenizer import ItemTokenizer
from tokenization.report import build_report, save_report
from tokenization.rqvae import RQVAE
from tokenization.rqvae_training import train_rqvae

logger = logging.getLogger(__name__)


@torch.no_grad()
def encode_with_distances(model: RQVAE, vectors: np.ndarray, batch_size: int = 4096,
                          distances: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Greedy codes ``[N, Lq]`` and squared distances of the last residual to every last-level code ``[N, C]``.

    ``distances=False`` returns None for them: an item-id level needs none, and at 1M items x 1024 codes they
    would be 4 GB.
    """
    device = next(model.parameters()).device
    model.eval()
    codes, dists = [], []
    for start in range(0, len(vectors), batch_size):
        x = torch.from_numpy(np.asarray(vectors[start : start + batch_size], dtype=np.float32)).to(device)
        _, c, residuals = model.quantize(model.encode(x))
        codes.append(c.cpu().numpy())
        if distances:
            dists.append((torch.cdist(residuals[-1], model.codebooks[-1]) ** 2).cpu().numpy())
    return np.concatenate(codes), (np.concatenate(dists) if distances else None)


def fit_item_tokenizer(
    item_ids: list[str], vectors: np.ndarray, cfg: TokenizerConfig, targets: np.ndarray | None = None
) -> tuple[ItemTokenizer, dict[str, Any]]:
    """Train the RQ-VAE, assign unique codes, and return the tokenizer with its report."""
    if len(item_ids) != len(vectors):
        raise UserError(f"{len(item_ids)} item ids but {len(vectors)} vectors; they must align row by row")
    start = time.perf_counter()
    result = train_rqvae(vectors, cfg, targets)
    train_s = time.perf_counter() - start
    model = result.model
    raw, last_dists = encode_with_distances(model, vectors, distances=not cfg.item_id_level)
    if cfg.item_id_level:
        assignment = with_item_id_level(raw, list(model.cfg.codebook_sizes))
    else:
        assignment = assign_unique_codes(raw, last_dists, model.cfg.codebook_sizes)
    tensors = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    schedule = {**result.schedule(), "max_steps": cfg.rq_max_steps}  # what was trained (the step budget, issue 34)
    tok = ItemTokenizer.from_codes(
        item_ids,
        assignment.codes,
        assignment.codebook_sizes,
        tensors=tensors,
        model_config=model.cfg.to_dict(),
        meta={"align_weight": cfg.align_weight, "embedding_dim": int(vectors.shape[1]),
              "cold_start_beam": cfg.cold_start_beam, "item_id_level": bool(cfg.item_id_level),
              "rq_training": schedule},
    )
    final = result.history[-1] if result.history else {}
    report = build_report(
        model, vectors, raw, assignment,
        extra={"train_seconds": round(train_s, 2), "dead_code_resets": result.resets, "final_losses": final,
               "content_hash": tok.content_hash, "item_id_level": bool(cfg.item_id_level), "rq_training": schedule},
    )
    logger.info(
        "tokenizer: %d items, sizes %s, level-1 usage %.1f%%, collisions %d -> %d (%d moved), recon %.4g",
        len(tok), tok.codebook_sizes, report["level1_usage_pct"], report["collisions_before"],
        report["collisions_after"], report["items_moved"], report["recon_mse"],
    )
    warn_degenerate(vectors, tok, report, cfg)
    return tok, report


def warn_degenerate(vectors: np.ndarray, tok: ItemTokenizer, report: dict[str, Any], cfg: TokenizerConfig) -> None:
    """Say what the assignment had to do when the inputs were poor: colliding items, an added level, a
    code grid far larger than the catalogue needs (counts in every message)."""
    n = len(tok)
    distinct = len(np.unique(np.asarray(vectors), axis=0))
    collided = int(report["collisions_before"])
    if collided and not report.get("item_id_level") and (report.get("disambiguation_level") or collided * 10 > n or distinct < n):
        logger.warning(
            "%d of %d items shared a full RQ code with another item and were moved%s; the embeddings hold only %d "
            "distinct vectors: check the embedding source (identical texts, a constant file)", collided, n,
            " and a disambiguation level was added" if report.get("disambiguation_level") else "", distinct)
    grid = sum(tok.codebook_sizes)
    used = int(sum(len(np.unique(tok.codes[:, level])) for level in range(tok.num_levels)))
    if cfg.codebook_size and used * 4 < grid:  # auto sizes are ours; an explicit size the user should hear about
        logger.warning(
            "codebook sizes %s = %d code tokens for %d items, but only %d (%.1f%%) are used; every unused token "
            "still enlarges the LLM vocabulary: set codebook_size 0 (auto picks %d here)", tok.codebook_sizes, grid, n,
            used, 100.0 * used / grid, dataclasses.replace(cfg, codebook_size=0).codebook_sizes(n)[0])


def build_item_tokenizer(
    cfg: TokenizerConfig, split: Any, out_dir: str | Path, embedding_cfg: Any = None, embeddings: Any = None
) -> ItemTokenizer:
    """Full stage: embeddings (``tokenization.embeddings``) -> tokenizer saved in ``out_dir`` with its report.

    ``embeddings`` (an ``ItemEmbeddings``) skips computing them, e.g. when a pipeline stage already did;
    ``embedding_cfg`` still names the text template and LLM of the alignment targets.

    ``out_dir`` receives the ``ItemTokenizer`` files, ``report.json``, ``code_usage.png`` and
    ``resolved_config.json``.
    """
    from tokenization.embeddings import (
        EmbeddingConfig,
        compute_item_embeddings,
        llm_text_targets,
        render_catalogue,
    )

    embedding_cfg = embedding_cfg or EmbeddingConfig()
    emb = embeddings if embeddings is not None else compute_item_embeddings(embedding_cfg, split)
    targets = None
    meta_llm = None
    if cfg.align_weight > 0:
        items = split.dataset.item_table()
        texts = render_catalogue(items, emb.item_ids, embedding_cfg.text_template)
        llm_dir = embedding_cfg.llm_dir or None
        targets = llm_text_targets(llm_dir, texts, cfg.align_batch_size, cache_dir=embedding_cfg.resolved_cache_dir(),
                                   use_cache=embedding_cfg.use_cache)
        meta_llm = str(llm_dir) if llm_dir else "default"
    cold = _cold_items(cfg, split, emb.item_ids)
    if cold:  # fit on warm items only; cold items get free codes from their vectors, as new items would
        cold_set = set(cold)
        warm_rows = np.array([i for i, item in enumerate(emb.item_ids) if item not in cold_set], dtype=np.int64)
        row_of = {item: i for i, item in enumerate(emb.item_ids)}
        cold_rows = np.array([row_of[item] for item in cold], dtype=np.int64)
        tok, report = fit_item_tokenizer([emb.item_ids[i] for i in warm_rows], emb.vectors[warm_rows], cfg,
                                         None if targets is None else targets[warm_rows])
        tok = tok.assign_new_items(cold, emb.vectors[cold_rows])
        report.update({"cold_items_assigned": len(cold), "content_hash": tok.content_hash})
        logger.info("tokenizer: fitted on %d warm items, %d cold items assigned codes", len(warm_rows), len(cold))
    else:
        tok, report = fit_item_tokenizer(list(emb.item_ids), emb.vectors, cfg, targets)
    tok.meta.update({"embeddings": _jsonable(emb.meta), "alignment_llm": meta_llm, "dataset": split.dataset.name,
                     "dataset_fingerprint": split.dataset.fingerprint()})
    out_dir = Path(out_dir)
    tok.save_pretrained(out_dir)
    save_report(report, out_dir)
    atomic_write_json(out_dir / "resolved_config.json", config_to_dict(cfg, embedding_cfg))
    return tok


def _cold_items(cfg: TokenizerConfig, split: Any, item_ids: list[str]) -> list[str]:
    """Items that get codes by cold-start assignment (see ``TokenizerConfig.cold_items``), in ``item_ids`` order."""
    from recdata.cold_items import items_without_training, uses_cold_protocol

    if cfg.cold_items == "fit" or (cfg.cold_items == "auto" and not uses_cold_protocol(split)):
        return []
    cold = set(items_without_training(split))
    return [item for item in item_ids if item in cold]


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(meta, default=str))
