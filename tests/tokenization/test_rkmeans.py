"""quantizer=rkmeans: residual k-means on the standardised vectors, no training, saved and reloaded exactly."""

import numpy as np
import pytest

from tokenization.config import TokenizerConfig
from tokenization.item_tokenizer import ItemTokenizer
from tokenization.pipeline import encode_with_distances, fit_item_tokenizer
from tokenization.rqvae_training import kmeans_centers, train_rqvae


def _vectors(n: int = 120, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) * np.arange(1, d + 1)


def test_rkmeans_codes_equal_a_hand_written_residual_kmeans():
    x = _vectors()
    cfg = TokenizerConfig(quantizer="rkmeans", num_levels=3, codebook_size=8, align_weight=0.0, kmeans_max_samples=10_000)
    model = train_rqvae(x, cfg).model
    codes, _ = encode_with_distances(model, x)
    residual = (x - x.mean(0)) / x.std(0)  # standardised input: the identity encoder's latent
    expected = []
    for level in range(3):
        centres = kmeans_centers(residual, 8, cfg.rq_seed + level)
        idx = ((residual[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        expected.append(idx)
        residual = residual - centres[idx]
    np.testing.assert_array_equal(codes, np.stack(expected, 1))
    assert not any(p.requires_grad and p.grad is not None for p in model.parameters())  # nothing was trained


def test_rkmeans_tokenizer_round_trips_and_refuses_alignment(tmp_path):
    x = _vectors()
    ids = [f"i{i}" for i in range(len(x))]
    cfg = TokenizerConfig(quantizer="rkmeans", num_levels=3, codebook_size=16, align_weight=0.0)
    tok, report = fit_item_tokenizer(ids, x, cfg)
    assert report["collisions_after"] == 0 and len({tuple(c) for c in tok.codes}) == len(ids)
    tok.save_pretrained(tmp_path / "tok")
    again = ItemTokenizer.from_pretrained(tmp_path / "tok")
    np.testing.assert_array_equal(again.codes, tok.codes)
    assert again.content_hash == tok.content_hash
    with pytest.raises(ValueError, match="rkmeans trains nothing"):
        TokenizerConfig(quantizer="rkmeans", align_weight=0.5)
    new = again.assign_new_items(["new"], x[:1] + 0.01)  # cold start encodes through the saved identity model
    assert new.item_ids[-1] == "new" and len({tuple(c) for c in new.codes}) == len(ids) + 1
    np.testing.assert_array_equal(new.codes[:-1], tok.codes)
