"""Collision-free assignment (exact small cases + adversarial input) and cold-start items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenization.collisions import assign_unique_codes, count_collisions
from tokenization.config import TokenizerConfig
from tokenization.pipeline import fit_item_tokenizer


def test_no_collisions_is_identity():
    codes = np.array([[0, 1], [1, 1], [0, 0]])
    res = assign_unique_codes(codes, np.zeros((3, 3)), [2, 3])
    np.testing.assert_array_equal(res.codes, codes)
    assert res.summary() == {"collisions_before": 0, "collisions_after": 0, "items_moved": 0,
                             "disambiguation_level": False, "disambiguation_size": 0}


def test_nearest_item_keeps_code_others_take_nearest_unused():
    codes = np.array([[1, 0], [1, 0], [1, 0], [1, 2]])
    dists = np.array(
        [
            [0.5, 0.1, 0.9, 0.3],  # item 0: own distance 0.5
            [0.2, 0.4, 0.1, 0.8],  # item 1: nearest to code 0 -> keeps it
            [0.6, 0.7, 0.0, 0.2],  # item 2: code 2 is taken by item 3 -> code 3
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    res = assign_unique_codes(codes, dists, [2, 4])
    np.testing.assert_array_equal(res.codes, [[1, 1], [1, 0], [1, 3], [1, 2]])
    assert res.collisions_before == 2 and res.items_moved == 2 and not res.disambiguation_level


def test_saturated_prefix_adds_disambiguation_level_for_all():
    # 5 items share prefix (0,) with a last level of 2 codes; item 5 elsewhere is untouched
    codes = np.array([[0, 0]] * 5 + [[1, 1]])
    dists = np.tile([0.0, 1.0], (6, 1))
    res = assign_unique_codes(codes, dists, [2, 2])
    assert res.disambiguation_level and res.codebook_sizes == [2, 2, 3]
    assert res.codes.shape == (6, 3) and count_collisions(res.codes) == 0
    np.testing.assert_array_equal(res.codes[5], [1, 1, 0])
    # overflow spreads evenly across the prefix's codes: occupancy 3 + 2, not 4 + 1
    assert sorted(np.bincount(res.codes[:5, 1]).tolist()) == [2, 3]
    assert res.items_moved == 4


@pytest.mark.parametrize(("n", "levels", "size"), [(50, 2, 4), (300, 3, 4), (40, 3, 8)])
def test_identical_embeddings_still_unique(n, levels, size):
    cfg = TokenizerConfig(num_levels=levels, codebook_size=size, hidden_dims=[16], latent_dim=4, align_weight=0.0,
                          rq_epochs=3, rq_batch_size=32)
    vectors = np.ones((n, 6), dtype=np.float32)
    ids = [f"it{i}" for i in range(n)]
    tok, report = fit_item_tokenizer(ids, vectors, cfg)
    assert len({tuple(r) for r in tok.codes.tolist()}) == n
    assert report["collisions_after"] == 0 and report["collisions_before"] == n - 1
    assert tok.codes.shape[1] == levels + (n > size)
    for i in ids:
        assert tok.string_to_item(tok.item_to_string(i)) == i


def _clusters(n, dim=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, size=(6, dim))
    return (centres[rng.integers(0, 6, n)] + rng.normal(0, 0.5, size=(n, dim))).astype(np.float32)


def _cfg(**kw):
    return TokenizerConfig(**{**dict(num_levels=3, codebook_size=8, hidden_dims=[16], latent_dim=6, align_weight=0.0,
                                    rq_epochs=8, rq_batch_size=64), **kw})


def test_fit_is_deterministic_and_one_to_one():
    x = _clusters(150)
    ids = [str(i) for i in range(150)]
    a, rep = fit_item_tokenizer(ids, x, _cfg())
    b, _ = fit_item_tokenizer(ids, x, _cfg())
    np.testing.assert_array_equal(a.codes, b.codes)
    assert a.content_hash == b.content_hash
    assert rep["collisions_after"] == 0 and rep["levels"][0]["usage_pct"] > 0
    c, _ = fit_item_tokenizer(ids, x, _cfg(rq_seed=7))
    assert c.content_hash != a.content_hash


def test_cold_start_keeps_existing_and_one_to_one(tmp_path):
    x = _clusters(160)
    ids = [f"old{i}" for i in range(120)]
    tok, _ = fit_item_tokenizer(ids, x[:120], _cfg(num_levels=2, codebook_size=4))  # 16 codes < 120 items
    assert tok.codes.shape[1] == 3  # saturated -> disambiguation level
    new_ids = [f"new{i}" for i in range(40)]
    grown = tok.assign_new_items(new_ids, x[120:])
    np.testing.assert_array_equal(grown.codes[:120], tok.codes)
    assert grown.codebook_sizes == tok.codebook_sizes and grown.code_tokens() == tok.code_tokens()
    assert len({tuple(r) for r in grown.codes.tolist()}) == 160
    # persisted model gives the same cold-start result
    tok.save_pretrained(tmp_path / "t")
    again = type(tok).from_pretrained(tmp_path / "t").assign_new_items(new_ids, x[120:])
    np.testing.assert_array_equal(again.codes, grown.codes)
    with pytest.raises(ValueError, match="already have codes"):
        grown.assign_new_items(["old3"], x[:1])
    with pytest.raises(ValueError, match=r"\[1, 10\]"):
        tok.assign_new_items(["z"], x[:1, :5])


def test_cold_start_takes_greedy_code_when_free_else_next_best():
    x = _clusters(100, seed=1)
    tok, _ = fit_item_tokenizer([str(i) for i in range(60)], x[:60], _cfg(num_levels=3, codebook_size=8))
    assert tok.codes.shape[1] == 3
    grown = tok.assign_new_items([f"n{i}" for i in range(40)], x[60:])
    model = tok.rqvae()
    greedy = model.encode_codes(torch.from_numpy(x[60:])).numpy()
    ranked, _ = model.beam_codes(torch.from_numpy(x[60:]), 64)
    taken = {tuple(r) for r in tok.codes.tolist()}
    fallbacks = 0
    for m, row in enumerate(grown.codes[60:].tolist()):
        if tuple(greedy[m]) not in taken:
            assert tuple(row) == tuple(greedy[m])
        else:
            fallbacks += 1
            assert tuple(row) == next(tuple(c) for c in ranked[m].tolist() if tuple(c) not in taken)
        taken.add(tuple(row))
    assert fallbacks > 0  # both branches exercised
    assert len(taken) == 100


def test_cold_start_without_free_code_raises():
    x = _clusters(64)
    tok, _ = fit_item_tokenizer([str(i) for i in range(60)], x[:60], _cfg(num_levels=2, codebook_size=4))
    # fill the grid exactly, then one more item cannot be placed
    capacity = int(np.prod(tok.codebook_sizes)) - len(tok)
    full = tok.assign_new_items([f"f{i}" for i in range(capacity)], np.repeat(x[60:61], capacity, axis=0), beam=16)
    assert len(full) == np.prod(tok.codebook_sizes)
    with pytest.raises(ValueError, match="no free code for cold-start item 'extra'"):
        full.assign_new_items(["extra"], x[63:64], beam=16)


def test_item_id_level_keeps_greedy_prefixes_and_gives_each_item_its_own_last_token(tmp_path):
    x = _clusters(150)
    x[1] = x[0]  # identical vectors share the whole RQ code; the id level still separates them
    ids = [str(i) for i in range(150)]
    tok, rep = fit_item_tokenizer(ids, x, _cfg(item_id_level=True))
    greedy = tok.rqvae().encode_codes(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(tok.codes[:, :3], greedy)  # nothing moved
    np.testing.assert_array_equal(tok.codes[:, 3], np.arange(150))
    assert tok.codebook_sizes == [8, 8, 8, 150] and tok.meta["item_id_level"] is True
    assert rep["items_moved"] == 0 and rep["collisions_before"] >= 1 and rep["collisions_after"] == 0
    assert tuple(tok.codes[0, :3]) == tuple(tok.codes[1, :3])
    plain, _ = fit_item_tokenizer(ids, x, _cfg())
    assert plain.meta["item_id_level"] is False and 150 not in plain.codebook_sizes  # default: reassignment

    tok.save_pretrained(tmp_path / "t")
    grown = type(tok).from_pretrained(tmp_path / "t").assign_new_items(["n0", "n1"], x[:2] + 0.01)
    np.testing.assert_array_equal(grown.codes[:150], tok.codes)
    assert grown.codebook_sizes == [8, 8, 8, 152]  # the id level grows at the end of the vocabulary
    assert grown.codes[150:, 3].tolist() == [150, 151]
    new_prefix = tok.rqvae().encode_codes(torch.from_numpy(x[:2] + 0.01)).numpy()
    np.testing.assert_array_equal(grown.codes[150:, :3], new_prefix)
    assert grown.code_tokens()[: len(tok.code_tokens())] == tok.code_tokens()  # existing token ids stay valid
