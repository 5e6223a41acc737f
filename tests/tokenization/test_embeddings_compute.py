"""compute_item_embeddings end to end on the tiny split, and the keyed on-disk cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tokenization.embeddings.compute as compute_mod
from alignrec.recommenders import SASRec
from tokenization.embeddings import (
    EmbeddingCache,
    EmbeddingConfig,
    ItemEmbeddings,
    compute_item_embeddings,
    l2_normalize,
)

SASREC_FAST = dict(sasrec_dim=16, sasrec_layers=1, sasrec_max_len=4, sasrec_epochs=2, sasrec_patience=0)


def test_cache_hit_and_miss_by_key(tmp_path):
    cache = EmbeddingCache(tmp_path)
    emb = ItemEmbeddings(["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]]), {"kind": "x"})
    key = {"model": "m1", "template": "{title}", "data": "h1"}
    assert cache.get("text", key) is None
    entry = cache.put("text", key, emb)
    hit = cache.get("text", {"data": "h1", "template": "{title}", "model": "m1"})  # key order is irrelevant
    assert hit is not None and hit.item_ids == ["a", "b"]
    np.testing.assert_array_equal(hit.vectors, emb.vectors)
    for changed in ({**key, "model": "m2"}, {**key, "template": "{brand}"}, {**key, "data": "h2"}):
        assert cache.get("text", changed) is None
    assert cache.get("cf", key) is None
    # an entry whose recorded key differs (hash-prefix clash, tampering) is not trusted
    meta = json.loads((entry / "meta.json").read_text())
    (entry / "meta.json").write_text(json.dumps({**meta, "cache_parts": {"model": "other"}}))
    assert cache.get("text", key) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def _text_cfg(tmp_path, model_dir, **kw):
    kw = {"source": "text", **kw}
    return EmbeddingConfig(text_encoder="llm", llm_dir=str(model_dir), cache_dir=str(tmp_path / "c"), text_batch_size=3,
                           **kw)


def test_text_llm_embeddings_cached_by_template(tiny_split, tiny_model_dir, tmp_path, monkeypatch):
    calls = []
    original = compute_mod.encode_llm

    def counting(texts, *args, **kwargs):
        calls.append(list(texts))
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(compute_mod, "encode_llm", counting)
    cfg = _text_cfg(tmp_path, tiny_model_dir)
    emb = compute_item_embeddings(cfg, tiny_split)
    assert emb.item_ids == tiny_split.dataset.item_ids() and emb.vectors.shape == (8, 64)
    assert calls[0][0] == "Title: Pipette tips\nBrand: LabCo\nCategories: Lab > Pipettes\nDescription: Sterile tips"
    again = compute_item_embeddings(cfg, tiny_split)
    assert len(calls) == 1  # cache hit
    np.testing.assert_array_equal(again.vectors, emb.vectors)
    other = compute_item_embeddings(_text_cfg(tmp_path, tiny_model_dir, text_template="{title}"), tiny_split)
    assert len(calls) == 2 and calls[1][0] == "Pipette tips"
    assert not np.allclose(other.vectors, emb.vectors)
    compute_item_embeddings(_text_cfg(tmp_path, tiny_model_dir, use_cache=False), tiny_split)
    assert len(calls) == 3


def test_cf_embeddings_cache_the_sasrec_model(tiny_split, tmp_path):
    cfg = EmbeddingConfig(source="cf", cache_dir=str(tmp_path), **SASREC_FAST)
    emb = compute_item_embeddings(cfg, tiny_split)
    assert emb.vectors.shape == (8, 16) and emb.meta["kind"] == "cf-sasrec"
    (entry,) = tmp_path.iterdir()
    model = SASRec.from_pretrained(entry / "sasrec")
    np.testing.assert_array_equal(model.item_embeddings(), emb.vectors)
    np.testing.assert_array_equal(compute_item_embeddings(cfg, tiny_split).vectors, emb.vectors)
    assert len(list(tmp_path.iterdir())) == 1


def test_fused_text_and_file(tiny_split, tiny_model_dir, tmp_path):
    ids = tiny_split.dataset.item_ids()
    user = np.arange(len(ids) * 3, dtype=np.float32).reshape(len(ids), 3) + 1
    np.save(tmp_path / "u.npy", user[::-1])
    (tmp_path / "ids.txt").write_text("\n".join(ids[::-1]))
    cfg = _text_cfg(tmp_path, tiny_model_dir, source="fused", fusion_weights="text=2.0,file=1.0",
                    file_path=str(tmp_path / "u.npy"), file_ids_path=str(tmp_path / "ids.txt"))
    fused = compute_item_embeddings(cfg, tiny_split)
    text = compute_item_embeddings(_text_cfg(tmp_path, tiny_model_dir), tiny_split)
    np.testing.assert_allclose(fused.vectors[:, :64], 2.0 * l2_normalize(text.vectors), atol=1e-6)
    np.testing.assert_allclose(fused.vectors[:, 64:], l2_normalize(user), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fused.vectors, axis=1), np.sqrt(5.0), atol=1e-5)


def test_missing_model_folder_is_a_clear_error(tiny_split, tmp_path):
    cfg = _text_cfg(tmp_path, tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="llm text encoder not found at .*nope"):
        compute_item_embeddings(cfg, tiny_split)
