"""Collective extraction's groups: k-means over existing item vectors; a user is the mean of its training items.

The user vector reads ``split.train_sequences()`` only, so clusters (and the group prompts built from
them) never see a validation or test item.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from alignrec.knowledge.config import ExtractConfig
from recdata.dataset import RecDataset

__all__ = ["cluster_item_vectors", "group_representatives", "kmeans_labels", "popular_items", "user_vectors"]


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cluster_item_vectors(cfg: ExtractConfig, dataset: RecDataset) -> np.ndarray:
    """``[items, D]`` unit vectors in catalogue order, from ``cfg.cluster_source``."""
    catalogue = dataset.item_ids()
    items = dataset.item_table()
    texts = [" ".join(str(items[i].get(f) or "") for f in ("title", "brand", "categories", "description")).strip()
             or str(i) for i in catalogue]
    if cfg.cluster_source == "tfidf":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        matrix = TfidfVectorizer(stop_words="english", sublinear_tf=True, min_df=1).fit_transform(texts)
        dims = min(64, matrix.shape[1] - 1, matrix.shape[0] - 1)
        vectors = TruncatedSVD(dims, random_state=cfg.seed).fit_transform(matrix) if dims >= 2 else matrix.toarray()
    elif cfg.cluster_source == "sentence":
        from alignrec.llm.text_encoders import encode_sentence
        from recdata.paths import default_sentence_encoder_dir

        vectors = encode_sentence(texts, default_sentence_encoder_dir())
    else:
        from recdata.item_vectors import load_user_embeddings

        vectors = load_user_embeddings(cfg.cluster_file, cfg.cluster_ids_file or None, catalogue).vectors
    return _normalize(np.asarray(vectors, dtype=np.float32))


def user_vectors(train_sequences: Sequence[tuple[str, Sequence[str]]], item_vectors: np.ndarray,
                 catalogue: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``(user_ids, [users, D])``: mean of each user's *training* items' vectors (users with none are left out)."""
    row = {item_id: r for r, item_id in enumerate(catalogue)}
    ids, out = [], []
    for user_id, items in train_sequences:
        rows = [row[i] for i in items if i in row]
        if rows:
            ids.append(user_id)
            out.append(item_vectors[rows].mean(0))
    return ids, _normalize(np.stack(out)) if out else np.zeros((0, item_vectors.shape[1]), np.float32)


def kmeans_labels(vectors: np.ndarray, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [n], centroids [k, D])`` with ``k = min(clusters, n)``; every row gets a label."""
    from sklearn.cluster import KMeans

    k = min(clusters, len(vectors))
    model = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(vectors)
    return model.labels_.astype(np.int64), model.cluster_centers_


def group_representatives(vectors: np.ndarray, labels: np.ndarray, centroids: np.ndarray, count: int) -> dict[int, list[int]]:
    """Rows of the ``count`` members closest to each cluster's centroid (ties by row order)."""
    out: dict[int, list[int]] = {}
    for c in range(len(centroids)):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        dist = np.linalg.norm(vectors[members] - centroids[c], axis=1)
        out[c] = [int(members[j]) for j in np.lexsort((members, dist))[:count]]
    return out


def popular_items(histories: Sequence[Sequence[str]], count: int, catalogue_order: dict[str, int]) -> list[str]:
    """The ``count`` items bought by most of these (training) histories; ties by catalogue order."""
    counts = Counter(i for h in histories for i in set(h))
    return sorted(counts, key=lambda i: (-counts[i], catalogue_order.get(i, 0)))[:count]
