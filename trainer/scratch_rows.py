"""Content start for a from-scratch model's code-token rows: each code's row is the mean of its items' vectors.

Random rows give a rarely seen (tail) item nothing to go on: its tied input/output row moves only in the few
steps where the item appears. Projecting the tokenizer's item vectors (text + collaborative) to the model width
and starting each code's row at the mean of its items' projections puts similar items near each other from step
0; with the item-id level every item token starts at its own vector, each cluster token at its members' mean.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from recdata.errors import UserError

logger = logging.getLogger(__name__)


def project_to_width(vectors: np.ndarray, width: int, scale: float) -> np.ndarray:
    """``[N, width]`` PCA projection of the centred vectors (no whitening: the spectrum, hence the similarity
    structure, is kept), scaled to entry std ``scale``; columns past the vectors' rank are zero."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)  # x = u s vt
    k = min(width, int((s > s.max() * 1e-6).sum()) if s.size else 0)
    out = np.zeros((x.shape[0], width), dtype=np.float64)
    out[:, :k] = x @ vt[:k].T
    std = out.std()
    if std == 0:
        raise UserError("item vectors are all identical: they carry no content to start the code rows from")
    return (out * (scale / std)).astype(np.float32)


def content_code_rows(codes: np.ndarray, codebook_sizes: list[int], projected: np.ndarray,
                      fallback: torch.Tensor) -> torch.Tensor:
    """``[sum(codebook_sizes), width]`` rows in ``code_tokens()`` order: code ``c`` of level ``l`` = mean of the
    projected vectors of the items whose level-``l`` code is ``c``; codes no item uses keep ``fallback``'s row."""
    rows = fallback.detach().float().clone()
    offset = 0
    for level, size in enumerate(codebook_sizes):
        sums = np.zeros((size, projected.shape[1]))
        counts = np.bincount(codes[:, level], minlength=size)
        np.add.at(sums, codes[:, level], projected)
        used = np.flatnonzero(counts)
        rows[offset + used] = torch.from_numpy(sums[used] / counts[used, None]).float()
        offset += size
    return rows


def init_scratch_code_rows(model, ids: list[int], item_tokenizer, vectors_dir: str) -> str:
    """Fill the code rows of a random model from ``vectors_dir`` (``vectors.npy`` + ``item_ids.json``)."""
    from tokenization.embeddings import load_embeddings_dir
    from trainer.model_setup import gathered, is_tied

    if not vectors_dir:
        raise UserError("scratch_code_rows=item_vectors needs item_vectors_dir (a folder with vectors.npy + "
                        "item_ids.json, e.g. a run's embeddings stage)")
    embeddings = load_embeddings_dir(vectors_dir).reorder(list(item_tokenizer.item_ids), source=vectors_dir)
    weight = model.get_input_embeddings().weight  # [V, d]; a tied output head follows
    width = model.get_input_embeddings().embedding_dim  # (weight.shape is empty under ZeRO-3)
    targets = [weight]
    out = model.get_output_embeddings()
    if out is not None and not is_tied(model):
        targets.append(out.weight)
    first, n = ids[0], len(ids)
    with gathered(targets), torch.no_grad():
        random_rows = weight[first:first + n].detach().float().clone()  # [n_codes, d]
        projected = project_to_width(embeddings.vectors, width, float(random_rows.std()))
        rows = content_code_rows(np.asarray(item_tokenizer.codes), list(item_tokenizer.codebook_sizes), projected,
                                 random_rows)
        for target in targets:
            target[first:first + n] = rows.to(target.dtype)
    logger.info("code rows from %d item vectors (dim %d) in %s", len(embeddings.item_ids), embeddings.dim,
                vectors_dir)
    return "item_vectors"
