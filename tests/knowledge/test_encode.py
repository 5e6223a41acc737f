"""Knowledge encoding (distinct texts once, ids kept) and ``embeddings.source: knowledge`` (alone / fused)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignrec.knowledge import EncodeConfig, encode_knowledge, load_knowledge_vectors
from alignrec.knowledge.encode import save_vectors
from tokenization.embeddings import EmbeddingConfig, compute_item_embeddings


def test_encode_shares_a_clusters_vector_and_keeps_ids(tmp_path, tiny_model_dir):
    k = tmp_path / "k"
    k.mkdir()
    rows = [("i1", "glass"), ("i2", "glass"), ("i3", "steel tools")]
    (k / "item_knowledge.jsonl").write_text("".join(json.dumps({"item_id": i, "text": t}) + "\n" for i, t in rows))
    out = tmp_path / "v"
    out.mkdir()
    summary = encode_knowledge(EncodeConfig(knowledge_dir=str(k), out_dir=str(out), encoder="llm",
                                            encoder_dir=str(tiny_model_dir)), out)
    assert summary["item"] == {"members": 3, "distinct_texts": 2, "dim": 64} and "user" not in summary
    ids, vectors = load_knowledge_vectors(out, "item")
    assert ids == ["i1", "i2", "i3"] and vectors.shape == (3, 64)
    assert np.array_equal(vectors[0], vectors[1]) and not np.allclose(vectors[0], vectors[2])
    assert (out / "item_ids.txt").read_text().split() == ids


def test_embeddings_source_knowledge_alone_and_fused(tmp_path, tiny_split):
    catalogue = tiny_split.dataset.item_ids()
    vectors = np.arange(len(catalogue) * 3, dtype=np.float32).reshape(-1, 3)
    save_vectors(tmp_path, "item", catalogue[::-1], vectors[::-1], {})  # stored in another order
    emb = compute_item_embeddings(EmbeddingConfig(source="knowledge", knowledge_dir=str(tmp_path)), tiny_split)
    assert emb.item_ids == catalogue and np.array_equal(emb.vectors, vectors)  # reordered to the catalogue
    save_vectors(tmp_path, "item", catalogue[:-1], vectors[:-1], {})
    with pytest.raises(ValueError, match="1 missing"):  # individual mode on a sample cannot feed the tokenizer
        compute_item_embeddings(EmbeddingConfig(source="knowledge", knowledge_dir=str(tmp_path)), tiny_split)
    with pytest.raises(ValueError, match="knowledge_dir"):
        EmbeddingConfig(source="fused", fusion_weights="text=1.0,knowledge=1.0")
