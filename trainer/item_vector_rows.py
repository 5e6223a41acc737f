"""Content start for the code-token rows (``new_rows_init: item_vectors``): each code's row is the mean of its
items' vectors, for a from-scratch model and a pretrained LLM alike.

Random (or all-equal) rows give a rarely seen (tail) item nothing to go on: its input/output row moves only in the
few steps where the item appears. Projecting the tokenizer's item vectors (text + collaborative) to the model
width and starting each code's row at the mean of its items' projections puts similar items near each other from
step 0; with the item-id level every item token starts at its own vector, each cluster token at its members' mean.
The rows sit at the scale of the rows they join: a scratch model's init, a pretrained LLM's existing vocabulary
(its mean row as the centre), so the projection neither drowns nor vanishes next to the model's own tokens.
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


def _reference(weight: torch.Tensor, first: int, n: int, pretrained: bool,
               gen: torch.Generator, noise: float) -> tuple[torch.Tensor, float, torch.Tensor]:
    """(centre ``[d]``, entry scale, fallback rows ``[n, d]``) of the rows the code rows join."""
    from trainer.embedding_rows import mean_start_rows

    if not pretrained:  # a random model: its own init of these rows is the scale and the fallback
        rows = weight[first:first + n].detach().float().clone()
        return torch.zeros(rows.shape[1]), float(rows.std()), rows
    old = weight[:first].detach().float()  # [V_old, d]: the LLM's own vocabulary
    centre = old.mean(dim=0)
    return centre, float((old - centre).std()), mean_start_rows(old, n, noise, gen)


def load_item_vectors(vectors_dir: str, item_tokenizer, needed_by: str):
    """The tokenizer's input vectors (``recdata.item_vectors.ItemEmbeddings``) from ``vectors_dir``, one row per
    item in the tokenizer's item order; ``needed_by`` names the option in the error when the folder is unset."""
    from recdata.item_vectors import load_embeddings_dir

    if not vectors_dir:
        raise UserError(f"{needed_by} needs item_vectors_dir (a folder with vectors.npy + item_ids.json, e.g. a "
                        "run's embeddings stage)")
    return load_embeddings_dir(vectors_dir).reorder(list(item_tokenizer.item_ids), source=vectors_dir)


def init_item_vector_rows(model, ids: list[int], item_tokenizer, vectors_dir: str, pretrained: bool,
                          noise: float = 0.1, seed: int = 0) -> str:
    """Fill the code rows of the input (and untied output) embeddings from ``vectors_dir``
    (``vectors.npy`` + ``item_ids.json``); each matrix gets the rows at its own scale."""
    from trainer.embedding_rows import code_row_matrices, gathered

    embeddings = load_item_vectors(vectors_dir, item_tokenizer, "new_rows_init=item_vectors")
    width = model.get_input_embeddings().embedding_dim  # (weight.shape is empty under ZeRO-3)
    unit = project_to_width(embeddings.vectors, width, 1.0)  # one SVD; each matrix rescales it
    targets = code_row_matrices(model)
    first, n = ids[0], len(ids)
    gen = torch.Generator().manual_seed(seed)
    codes, sizes = np.asarray(item_tokenizer.codes), list(item_tokenizer.codebook_sizes)
    with gathered(targets), torch.no_grad():
        for target in targets:
            centre, scale, fallback = _reference(target, first, n, pretrained, gen, noise)
            projected = unit * scale + centre.numpy()
            target[first:first + n] = content_code_rows(codes, sizes, projected, fallback).to(target.dtype)
    logger.info("code rows from %d item vectors (dim %d) in %s", len(embeddings.item_ids), embeddings.dim,
                vectors_dir)
    return "item_vectors"
