"""The "text retriever" row of next-item evaluation: item text vectors, the history's mean as the query.

``score(item) = cosine(unit(mean of the history items' unit text vectors), item text vector)``, history items
excluded as for every row, ties in catalogue order. The ranking is ``alignrec.recommenders.request_retriever.
TextRetriever`` (the retriever of the request tasks too: one implementation), read through its next-item mode.
It needs no training interaction, so it ranks cold items (``recdata.cold_items``) like any other: the content-only
bar of the cold slice.

The vectors are MiniLM's (the sentence encoder) over each item's rendered text (``tokenization.EmbeddingConfig``'s
template and token limit), from the embedding cache when the key matches: ``alignrec evaluate`` encodes them with
``encoder_dir`` and the default template; ``alignrec run`` passes its embeddings stage's text vectors when the
stage wrote MiniLM ones, else the embeddings section's text settings with the sentence encoder
(``sentence_text_vectors``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from recdata.item_vectors import ItemEmbeddings

__all__ = ["SENTENCE_KIND", "TEXT_RETRIEVER_ROW", "sentence_text_vectors", "text_retriever_recommender"]

TEXT_RETRIEVER_ROW = "text retriever"
SENTENCE_KIND = "text-sentence"  # meta["kind"] of sentence-encoder text vectors (tokenization.embeddings)


def sentence_text_vectors(split: Any, embedding_config: Any = None, encoder_dir: str = "") -> ItemEmbeddings:
    """MiniLM vectors of the catalogue's item texts (catalogue order), cached: ``tokenization.text_embeddings``
    of ``embedding_config`` (default: ``EmbeddingConfig()``) with the sentence encoder (``encoder_dir`` when set,
    else the config's ``sentence_encoder_dir``, else the installed all-MiniLM-L6-v2)."""
    from tokenization import EmbeddingConfig, text_embeddings

    cfg = embedding_config if embedding_config is not None else EmbeddingConfig()
    cfg = dataclasses.replace(cfg, source="text", text_encoder="sentence",
                              sentence_encoder_dir=encoder_dir or cfg.sentence_encoder_dir)
    return text_embeddings(cfg, split)


def text_retriever_recommender(vectors: ItemEmbeddings, catalogue: Sequence[str], k: int,
                               exclude_history: bool = True) -> Any:
    """The row's ``recommend_fn(user_ids, histories)`` over ``vectors`` (one per catalogue item, any order)."""
    from alignrec.recommenders.request_retriever import TextRetriever

    row = {item: n for n, item in enumerate(vectors.item_ids)}
    missing = [item for item in catalogue if item not in row]
    if missing or len(row) != len(catalogue):
        raise ValueError(f"text retriever: the item vectors ({len(row)} items) do not cover the catalogue "
                         f"({len(catalogue)} items; first missing {missing[:3]}); encode them on this split")
    matrix = vectors.vectors[[row[item] for item in catalogue]]  # [items, D] in catalogue order
    return TextRetriever(list(catalogue), matrix).history_recommend_fn(k, exclude_history)
