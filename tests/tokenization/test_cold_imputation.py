"""Cold-item protocol: the behaviour (CF) vectors of items without training are imputed from their content."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import tokenization.embeddings.compute as compute
from recdata.cold_items import cold_item_split, items_without_training
from tokenization.embeddings import EmbeddingConfig, ItemEmbeddings
from tokenization.embeddings.cold_imputation import IMPUTED_KEY, impute_untrained
from tokenization.embeddings.fusion import l2_normalize

ITEMS = [f"i{k}" for k in range(12)]
COLD = ["i3", "i7", "i10"]


def _parts(seed: int = 0) -> dict[str, ItemEmbeddings]:
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(12, 4))
    cf = rng.normal(size=(12, 3)) * 5.0
    return {"text": ItemEmbeddings(ITEMS, text), "cf": ItemEmbeddings(list(reversed(ITEMS)), cf[::-1])}


def _ridge_reference(x: np.ndarray, y: np.ndarray, alpha: float, rows: np.ndarray) -> np.ndarray:
    """Closed-form ridge with an unpenalised intercept: beta = (Xc'Xc + aI)^-1 Xc'Yc."""
    xm, ym = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - xm, y - ym
    beta = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return (rows - xm) @ beta + ym


def test_cold_rows_equal_the_ridge_reference_and_warm_rows_are_untouched():
    parts = _parts()
    out = impute_untrained(parts, COLD)
    assert out["text"] is parts["text"]  # content parts are the predictors, never changed
    cf = out["cf"]
    assert cf.item_ids == ITEMS  # aligned to the first content part
    record = cf.meta[IMPUTED_KEY]
    assert record["items"] == 3 and record["from"] == ["text"]
    cold = np.isin(ITEMS, COLD)
    original = parts["cf"].reorder(ITEMS).vectors
    np.testing.assert_array_equal(cf.vectors[~cold], original[~cold])
    x = l2_normalize(parts["text"].vectors.astype(np.float64))
    y = l2_normalize(original.astype(np.float64))
    expected = _ridge_reference(x[~cold], y[~cold], record["alpha"], x[cold])
    np.testing.assert_allclose(cf.vectors[cold], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(cf.vectors[cold], original[cold])


def test_a_linear_behaviour_part_is_recovered_for_cold_items():
    rng = np.random.default_rng(1)
    text = l2_normalize(rng.normal(size=(40, 3)))
    cf = text @ rng.normal(size=(3, 3))  # behaviour = a linear map of content
    ids = [f"i{k}" for k in range(40)]
    cold = ids[:5]
    out = impute_untrained({"text": ItemEmbeddings(ids, text), "cf": ItemEmbeddings(ids, cf)}, cold)
    truth = l2_normalize(cf)  # the scale fusion gives the part
    # a near-linear target (normalised rows) with 35 warm items: close, not exact
    err = np.linalg.norm(out["cf"].vectors[:5] - truth[:5], axis=1)
    random_err = np.linalg.norm(cf[:5] - truth[:5], axis=1)
    assert err.max() < 0.35 and err.mean() < random_err.mean() / 2


def test_nothing_to_impute_returns_the_parts_unchanged(caplog):
    parts = _parts()
    assert impute_untrained(parts, []) is parts
    text_only = {"text": parts["text"]}
    assert impute_untrained(text_only, COLD) is text_only
    cf_only = {"cf": parts["cf"]}
    with caplog.at_level(logging.WARNING):
        assert impute_untrained(cf_only, COLD) is cf_only
    assert "no content part" in caplog.text
    assert impute_untrained(parts, ITEMS) is parts  # no warm item to fit on


@pytest.mark.parametrize("protocol", [True, False])
def test_fused_vectors_impute_only_under_the_cold_protocol(tiny_split, monkeypatch, protocol):
    split = cold_item_split(tiny_split, 0.25, seed=3) if protocol else tiny_split
    catalogue = split.dataset.item_ids()
    rng = np.random.default_rng(2)
    fixed = {"text": ItemEmbeddings(catalogue, rng.normal(size=(len(catalogue), 4))),
             "cf": ItemEmbeddings(catalogue, rng.normal(size=(len(catalogue), 3)))}
    monkeypatch.setattr(compute, "_compute_part", lambda name, *a: fixed[name])
    fused = compute.compute_item_embeddings(EmbeddingConfig(source="fused", fusion_weights="text=1.0,cf=1.0"), split)
    untrained = np.isin(catalogue, items_without_training(split))
    plain = np.concatenate([l2_normalize(fixed["text"].vectors), l2_normalize(fixed["cf"].vectors)], axis=1)
    np.testing.assert_allclose(fused.vectors[~untrained], plain[~untrained], rtol=1e-6)
    if protocol:
        assert untrained.any() and IMPUTED_KEY in fused.meta["parts"]["cf"]
        np.testing.assert_allclose(fused.vectors[untrained, :4], plain[untrained, :4], rtol=1e-6)
        assert not np.allclose(fused.vectors[untrained, 4:], plain[untrained, 4:])
    else:
        assert IMPUTED_KEY not in fused.meta["parts"]["cf"]
        np.testing.assert_allclose(fused.vectors, plain, rtol=1e-6)
