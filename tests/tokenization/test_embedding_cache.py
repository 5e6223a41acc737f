"""Issue 11: an embedding cache entry is verified (checksums written last); a truncated, NaN or unverified entry is
discarded with a warning naming it and recomputed, never trusted and never blamed on the user's data."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from tests.cli.conftest import workspace  # noqa: F401  (the shared tiny artefacts)
from tokenization.embeddings import EmbeddingCache, ItemEmbeddings
from tokenization.embeddings.cache import CHECKSUM_FILE

PARTS = {"encoder": "test", "texts": "abc"}


def _entry(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    emb = ItemEmbeddings(["a", "b", "c"], np.arange(12, dtype=np.float32).reshape(3, 4), {"kind": "t"})
    return cache, cache.put("t", PARTS, emb), emb


def _truncate(entry):
    data = (entry / "vectors.npy").read_bytes()
    (entry / "vectors.npy").write_bytes(data[:-8])


def _nan(entry):
    vectors = np.load(entry / "vectors.npy")
    vectors[1, 2] = np.nan
    np.save(entry / "vectors.npy", vectors)


def _unverified(entry):
    (entry / CHECKSUM_FILE).unlink()


def _bad_ids(entry):
    (entry / "item_ids.json").write_text(json.dumps(["a", "b"]))


def test_good_entry_round_trips(tmp_path):
    cache, entry, emb = _entry(tmp_path)
    assert json.loads((entry / CHECKSUM_FILE).read_text()).keys() == {"vectors.npy", "item_ids.json", "meta.json"}
    hit = cache.get("t", PARTS)
    assert hit is not None and hit.item_ids == emb.item_ids and np.array_equal(hit.vectors, emb.vectors)


@pytest.mark.parametrize("corrupt", [_truncate, _nan, _unverified, _bad_ids])
def test_bad_entry_is_discarded_with_a_warning_naming_it(tmp_path, caplog, corrupt):
    cache, entry, _ = _entry(tmp_path)
    corrupt(entry)
    with caplog.at_level(logging.WARNING):
        assert cache.get("t", PARTS) is None
    assert any(str(entry) in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)
    assert not entry.exists()


def test_corrupt_entry_is_recomputed_by_compute_item_embeddings(workspace, tmp_path, caplog):  # noqa: F811
    from recdata import SplitDataset
    from tokenization.embeddings import EmbeddingConfig, compute_item_embeddings

    split = SplitDataset.load(workspace.split)
    cfg = EmbeddingConfig(source="cf", cache_dir=str(tmp_path / "cache"), sasrec_epochs=1, sasrec_dim=8,
                          sasrec_heads=1, sasrec_layers=1)
    first = compute_item_embeddings(cfg, split)
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    _truncate(entry)
    with caplog.at_level(logging.WARNING):
        again = compute_item_embeddings(cfg, split)
    assert any(str(entry) in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(again.vectors, first.vectors, rtol=1e-5, atol=1e-6)  # same seed: same vectors
    assert EmbeddingCache(tmp_path / "cache")._read_verified(entry).item_ids == first.item_ids  # rewritten, valid
