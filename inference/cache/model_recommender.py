"""Glue for ``alignrec cache build``: a trained run folder -> (recommend_fn, identity recorded in the manifest).

Imports torch / trainer / sft_tasks only when called, so the cache library and ``alignrec --help`` stay light.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recdata.errors import InputFileError
from recdata.io import sha256_file

logger = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("adapter_model*.safetensors", "adapter_model*.bin", "model*.safetensors", "pytorch_model*.bin")


def weights_fingerprint(model_dir: str | os.PathLike) -> str:
    """sha256 over the weight files of a run folder, so a retrained model never resumes an old cache."""
    model_dir = Path(model_dir)
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in model_dir.glob(pattern)})
    if not files:
        raise InputFileError(f"no weight files ({', '.join(WEIGHT_PATTERNS)}) in {model_dir}; is it a run folder?")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()[:16]


def model_identity(model_dir: str | os.PathLike, popularity_penalty: float = 0.0,
                   item_head_decode_weight: float | None = None, item_vector_prior_weight: float = 0.0,
                   item_vectors: str | os.PathLike | None = None, decode_normaliser: str = "vocabulary"
                   ) -> dict[str, str]:
    """``model`` / ``adapter`` strings for the cache manifest: base model + adapter weights, or full weights.

    A non-zero ``popularity_penalty``, a set ``item_head_decode_weight`` (an override of the run's own), a
    non-zero ``item_vector_prior_weight`` (with the fingerprint of its vectors, ``item_vectors``: the resolved
    folder) and ``decode_normaliser`` children (the resolved mode, ``inference.trained_run.run_normaliser``) are
    part of the weights' tag: the same weights decoded differently are another cache (a resume or a refresh never
    mixes the two); unset, the tag is the one caches were built with before these keys existed.
    """
    from trainer.export import read_manifest

    model_dir = Path(model_dir).resolve()
    manifest = read_manifest(model_dir)
    tag = f"{model_dir}@{weights_fingerprint(model_dir)}"
    if popularity_penalty:
        tag += f"#popularity_penalty={popularity_penalty:g}"
    if item_head_decode_weight is not None:
        tag += f"#item_head_decode_weight={item_head_decode_weight:g}"
    if item_vector_prior_weight:
        from inference.item_prior import item_vectors_fingerprint

        tag += f"#item_vector_prior_weight={item_vector_prior_weight:g}@{item_vectors_fingerprint(item_vectors)}"
    if decode_normaliser != "vocabulary":  # exact scores keep the old tag
        tag += f"#decode_normaliser={decode_normaliser}"
    if manifest["kind"] == "full":
        return {"model": tag, "adapter": "", "item_tokenizer_hash": manifest["item_tokenizer_hash"]}
    return {"model": str(manifest["base_model"]), "adapter": tag, "item_tokenizer_hash": manifest["item_tokenizer_hash"]}


def model_recommend_fn(
    model_dir: str | os.PathLike, k: int, num_beams: int, batch_size: int, exclude_history: bool,
    device: str | None = None, popularity_penalty: float = 0.0, split_dir: str | os.PathLike | None = None,
    item_head_decode_weight: float | None = None, item_vector_prior_weight: float = 0.0,
    item_vectors: str | os.PathLike | None = None, decode_normaliser: str = "auto", **scenario_kw: Any,
) -> tuple[Any, dict[str, str]]:
    """Load a run (``inference.TrainedRun``: its decoding as trained) and wrap it as ``recommend_fn``.

    ``scenario_kw`` (``scenario_items``, ``scenario_prompts``, ``item_scenario``) go to ``llm_recommender``;
    a non-zero ``popularity_penalty`` reads the training counts of ``split_dir``; ``item_head_decode_weight``
    overrides the run's item-head weight (``inference.trained_run.check_item_head_override``; None = its own);
    ``item_vector_prior_weight`` > 0 adds the content prior from ``item_vectors`` (``inference.item_prior``; empty
    = the run's embeddings folder); ``decode_normaliser``: ``inference.decode_normaliser`` (its resolved mode is part
    of the identity).
    """
    from inference.item_prior import check_item_prior, load_item_prior
    from inference.trained_run import TrainedRun, check_item_head_override, run_normaliser

    head_weight = check_item_head_override(model_dir, item_head_decode_weight)
    vectors_dir = check_item_prior(model_dir, item_vector_prior_weight, item_vectors, head_weight)  # None: no prior
    prior = load_item_prior(model_dir, item_vector_prior_weight, vectors_dir, head_weight)

    counts = None
    if popularity_penalty:
        from recdata import SplitDataset
        from recdata.popularity import train_popularity

        if split_dir is None:
            raise ValueError("popularity_penalty needs split_dir (the training counts)")
        counts = train_popularity(SplitDataset.load(split_dir))
    identity = model_identity(model_dir, popularity_penalty, head_weight, item_vector_prior_weight, vectors_dir,
                              run_normaliser(model_dir, decode_normaliser))
    fn = TrainedRun.load(model_dir, device=device).recommender(
        k, num_beams, exclude_history, batch_size, **scenario_kw, popularity_penalty=popularity_penalty,
        item_counts=counts, item_head_weight=head_weight, decode_normaliser=decode_normaliser, **prior)
    logger.info("cache recommender: %s (item tokenizer %s)", identity["adapter"] or identity["model"],
                identity["item_tokenizer_hash"][:12])
    return fn, identity


@dataclass(frozen=True)
class ModelRecommenderFactory:
    """Picklable recipe for ``recommend_fn``: each Ray actor calls it once and keeps the loaded model.

    The fields are ``model_recommend_fn``'s arguments; ``model_dir`` must be readable at the same path on every
    node (a shared or synced folder).
    """

    model_dir: str
    k: int
    num_beams: int
    batch_size: int
    exclude_history: bool = True
    device: str | None = None
    popularity_penalty: float = 0.0
    split_dir: str | None = None
    item_head_decode_weight: float | None = None
    item_vector_prior_weight: float = 0.0
    item_vectors: str | None = None
    decode_normaliser: str = "auto"

    def __call__(self) -> Any:
        fn, _ = model_recommend_fn(self.model_dir, self.k, self.num_beams, self.batch_size, self.exclude_history,
                                   self.device, self.popularity_penalty, self.split_dir,
                                   item_head_decode_weight=self.item_head_decode_weight,
                                   item_vector_prior_weight=self.item_vector_prior_weight,
                                   item_vectors=self.item_vectors, decode_normaliser=self.decode_normaliser)
        return fn


@dataclass(frozen=True)
class PopularityRecommenderFactory:
    """Picklable recipe for the training-popularity baseline ``recommend_fn`` (``--recommender popularity``)."""

    split_dir: str
    k: int
    exclude_history: bool = True

    def __call__(self) -> Any:
        from inference import popularity_recommender
        from recdata import SplitDataset

        return popularity_recommender(SplitDataset.load(self.split_dir), k=self.k,
                                      exclude_history=self.exclude_history)
