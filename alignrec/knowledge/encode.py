"""Knowledge encoding: each answer -> one vector with a frozen text encoder, stored as safetensors + id lists.

Collective answers are shared by a cluster's members, so each distinct text is encoded once. The item file
stores its ids in the safetensors metadata under ``item_ids``, the layout ``tokenization.embeddings``
reads, so ``embeddings.source: knowledge`` loads it as is. The user file also stores each user's
``history_items`` (how much of the training part its knowledge read), which training needs to use it without
leaking targets.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from alignrec.knowledge.config import EncodeConfig
from alignrec.knowledge.extract import KNOWLEDGE_FILES, read_knowledge, read_user_history_items
from recdata.errors import InputFileError
from recdata.io import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["encode_knowledge", "encode_texts", "load_knowledge_vectors", "load_user_history_items", "save_vectors"]


def encode_texts(texts: list[str], cfg: EncodeConfig) -> np.ndarray:
    """``[len(texts), D]`` float32 with ``cfg.encoder`` (an empty answer encodes as the empty string)."""
    from alignrec.llm.text_encoders import encode_llm, encode_sentence
    from recdata.paths import default_llm_dir, default_sentence_encoder_dir

    if cfg.encoder == "sentence":
        model_dir = Path(cfg.encoder_dir) if cfg.encoder_dir else default_sentence_encoder_dir()
        return encode_sentence(texts, model_dir, cfg.batch_size, cfg.device, cfg.max_length)
    model_dir = Path(cfg.encoder_dir) if cfg.encoder_dir else default_llm_dir()
    return encode_llm([t or " " for t in texts], model_dir, cfg.batch_size, cfg.max_length, cfg.device)


def save_vectors(path: Path, kind: str, ids: list[str], vectors: np.ndarray, meta: dict[str, Any],
                 history_items: list[int] | None = None) -> None:
    """``<kind>_vectors.safetensors`` (tensor ``vectors``, metadata ``<kind>_ids`` [+ ``history_items``, aligned
    with the ids]) + ``<kind>_ids.txt``."""
    from safetensors.numpy import save_file

    metadata = {f"{kind}_ids": json.dumps(ids), "meta": json.dumps(meta)}
    if history_items is not None:
        metadata["history_items"] = json.dumps(history_items)
    with atomic_path(path / f"{kind}_vectors.safetensors") as tmp:
        save_file({"vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, str(tmp), metadata=metadata)
    with atomic_path(path / f"{kind}_ids.txt") as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def load_knowledge_vectors(vectors_dir: str | Path, kind: str) -> tuple[list[str], np.ndarray]:
    """``(ids, vectors [n, D])`` written by ``alignrec knowledge encode``."""
    from safetensors import safe_open

    file = Path(vectors_dir) / f"{kind}_vectors.safetensors"
    if not file.is_file():
        raise InputFileError(f"{file} does not exist; run `alignrec knowledge encode` (with {kind} knowledge) first")
    with safe_open(str(file), framework="np") as f:
        ids = [str(i) for i in json.loads((f.metadata() or {})[f"{kind}_ids"])]
        vectors = f.get_tensor("vectors")
    return ids, vectors


def load_user_history_items(vectors_dir: str | Path, command: str = "alignrec knowledge extract") -> dict[str, int]:
    """``{user_id: n}`` stored by ``encode``: each user's knowledge read its first ``n`` training items.

    Vectors encoded from an older extract (no ``history_items``) are refused, naming ``command`` to rerun.
    """
    from safetensors import safe_open

    file = Path(vectors_dir) / "user_vectors.safetensors"
    if not file.is_file():
        raise InputFileError(f"{file} does not exist; run `alignrec knowledge encode` (with user knowledge) first")
    with safe_open(str(file), framework="np") as f:
        meta = f.metadata() or {}
    if "history_items" not in meta:
        raise InputFileError(f"{file} has no history_items (encoded from an older extract, whose user knowledge "
                             f"leaks training targets); rerun `{command}` and `alignrec knowledge encode`")
    return dict(zip(json.loads(meta["user_ids"]), (int(n) for n in json.loads(meta["history_items"])), strict=True))


def encode_knowledge(cfg: EncodeConfig, out_dir: Path) -> dict[str, Any]:
    """Encode every kind present in ``cfg.knowledge_dir``; returns counts per kind."""
    summary: dict[str, Any] = {"encoder": cfg.encoder, "encoder_dir": cfg.encoder_dir or "default"}
    kinds = [k for k, name in KNOWLEDGE_FILES.items() if (Path(cfg.knowledge_dir) / name).is_file()]
    if not kinds:
        raise InputFileError(f"{cfg.knowledge_dir} holds no {' / '.join(KNOWLEDGE_FILES.values())}; "
                             "run `alignrec knowledge extract` into it first")
    for kind in kinds:
        texts = read_knowledge(cfg.knowledge_dir, kind)
        ids = list(texts)
        unique = sorted(set(texts.values()))
        logger.info("%s knowledge: %d members, %d distinct texts", kind, len(ids), len(unique))
        vectors = encode_texts(unique, cfg)  # [distinct, D]
        row = {t: r for r, t in enumerate(unique)}
        member_vectors = vectors[[row[texts[i]] for i in ids]]  # [members, D]
        history = read_user_history_items(cfg.knowledge_dir, required=False) if kind == "user" else None
        save_vectors(out_dir, kind, ids, member_vectors, {"encoder": cfg.encoder},
                     [history[i] for i in ids] if history is not None else None)
        summary[kind] = {"members": len(ids), "distinct_texts": len(unique), "dim": int(vectors.shape[1])}
    atomic_write_json(out_dir / "encode.json", summary)
    return summary
