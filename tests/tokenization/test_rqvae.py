"""RQ-VAE model and training: quantisation maths, k-means init, dead-code reset, alignment loss, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenization.config import TokenizerConfig, auto_codebook_size
from tokenization.rqvae import RQVAE, RQVAEConfig
from tokenization.rqvae_training import DeadCodeTracker, kmeans_centers, kmeans_init, train_rqvae


def clustered(n=240, dim=12, clusters=8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + rng.normal(0, 0.3, size=(n, dim))).astype(np.float32)


def small_cfg(**kw) -> TokenizerConfig:
    base = dict(num_levels=3, codebook_size=8, hidden_dims=[32], latent_dim=8, align_weight=0.0, rq_epochs=30,
                rq_batch_size=64, rq_lr=3e-3)
    return TokenizerConfig(**{**base, **kw})


@pytest.mark.parametrize(("n", "size"), [(1, 16), (100, 16), (1682, 64), (4300, 128), (16385, 256), (65536, 256),
                                         (65537, 512), (10**6, 1024), (10**7, 4096), (10**8, 4096)])
def test_auto_codebook_size(n, size):
    assert auto_codebook_size(n) == size


def test_auto_codebook_size_is_the_old_rule_up_to_65536_items():
    """Issue 34 raised the cap (256 -> 4096) for 1M-item id steps; every catalogue the old rule sized stays put."""
    n = np.arange(1, 65537)
    old = np.clip(2 ** np.ceil(np.log2(np.maximum(np.sqrt(n), 1.0))), 16, 256).astype(int)
    assert [auto_codebook_size(int(i)) for i in n] == old.tolist()




def test_auto_codebook_size_integer_rule_is_the_float_sqrt_rule_at_every_boundary():
    """levels=1 is computed in integers now; at each power of two +-1 (where a float root could tip) it still
    gives the float rule's size, so the shipped layout is unchanged above 65,536 items too."""
    n = np.array(sorted({2**k + d for k in range(1, 50) for d in (-1, 0, 1)}), dtype=np.int64)
    old = np.clip(2 ** np.ceil(np.log2(np.maximum(np.sqrt(n), 1.0))), 16, 4096).astype(int)
    assert [auto_codebook_size(int(i)) for i in n] == old.tolist()

@pytest.mark.parametrize(("n", "levels", "size"), [
    (10**6, 2, 128), (10**6, 3, 32),  # 1e6^(1/3) = 100 -> 128; 1e6^(1/4) = 31.6 -> 32
    (10**4, 2, 32), (10**5, 2, 64), (10**5, 3, 32), (2**21, 2, 128), (2**21 + 1, 2, 256),  # exact powers stay put
    (10**4, 3, 16), (100, 2, 16), (1, 3, 16), (10**13, 2, 4096), (10**20, 3, 4096),  # clipped to [16, 4096]
    (10**6, 1, 1024),
])
def test_auto_codebook_size_balanced_for_deeper_codes(n, levels, size):
    """Issue 34: C ~ N^(1/(L+1)) keeps each RQ level's and the item-id step's fan-out equal."""
    assert auto_codebook_size(n, levels) == size


@pytest.mark.parametrize(("num_levels", "item_id_level", "n", "sizes"), [
    (1, True, 4_344, [128]),  # the shipped layout: sqrt(N), as before
    (1, True, 1_000_000, [1024]),
    (2, True, 1_000_000, [128, 128]),  # balanced: each level and the id step ~N^(1/3) wide
    (2, True, 4_344, [32, 32]),
    (4, False, 1_000_000, [1024] * 4),  # no item-id level: sqrt(N) per level, as before
    (2, True, 0, None),
])
def test_codebook_sizes_balance_levels_only_before_an_item_id_level(num_levels, item_id_level, n, sizes):
    cfg = TokenizerConfig(num_levels=num_levels, item_id_level=item_id_level)
    if sizes is None:
        with pytest.raises(ValueError):
            cfg.codebook_sizes(n)
        return
    assert cfg.codebook_sizes(n) == sizes
    assert TokenizerConfig(num_levels=num_levels, item_id_level=item_id_level, codebook_size=7).codebook_sizes(n) == \
        [7] * num_levels


def test_auto_codebook_size_levels_default_is_one_and_below_one_raises():
    assert [auto_codebook_size(n) for n in (1, 1682, 10**6, 10**7)] == [
        auto_codebook_size(n, levels=1) for n in (1, 1682, 10**6, 10**7)]
    for bad in (0, -1):
        with pytest.raises(ValueError, match="levels"):
            auto_codebook_size(1000, bad)

def test_quantize_is_greedy_residual_and_straight_through():
    torch.manual_seed(0)
    model = RQVAE(RQVAEConfig(in_dim=6, codebook_sizes=[4, 3], hidden_dims=[8], latent_dim=5))
    x = torch.randn(7, 6)
    z = model.encode(x)
    z_q, codes, residuals = model.quantize(z)
    r = z.clone()
    total = torch.zeros_like(z)
    for level, book in enumerate(model.codebooks):
        torch.testing.assert_close(residuals[level], r)
        brute = ((r[:, None] - book[None]) ** 2).sum(-1).argmin(1)
        assert torch.equal(codes[:, level], brute)
        total = total + book[brute]
        r = r - book[brute]
    torch.testing.assert_close(z_q, total)
    out = model(x)
    out.loss.backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0  # reconstruction reaches the encoder through STE
    assert all(b.grad.abs().sum() > 0 for b in model.codebooks)


def test_beam_codes_rank_by_residual_and_beam1_is_greedy():
    torch.manual_seed(1)
    model = RQVAE(RQVAEConfig(in_dim=4, codebook_sizes=[3, 3], hidden_dims=[8], latent_dim=3))
    x = torch.randn(5, 4)
    codes, score = model.beam_codes(x, beam=9)  # 9 = every full code
    assert codes.shape == (5, 9, 2) and torch.all(score[:, 1:] >= score[:, :-1])
    z = model.encode(x)
    for b in range(5):
        for k in range(9):
            c = codes[b, k]
            res = z[b] - model.codebooks[0][c[0]] - model.codebooks[1][c[1]]
            torch.testing.assert_close(score[b, k], (res**2).sum(), rtol=1e-4, atol=1e-5)
    assert torch.equal(model.beam_codes(x, beam=1)[0][:, 0], model.encode_codes(x))


def test_kmeans_init_uses_every_code_and_matches_centres():
    x = clustered(n=200, dim=6, clusters=8)
    torch.manual_seed(0)
    model = RQVAE(RQVAEConfig(in_dim=6, codebook_sizes=[8, 8], hidden_dims=[16], latent_dim=4))
    xt = torch.from_numpy(x)
    kmeans_init(model, xt, seed=0)
    codes = model.encode_codes(xt)
    assert len(torch.unique(codes[:, 0])) == 8 and len(torch.unique(codes[:, 1])) == 8
    z = model.encode(xt).detach().numpy()
    np.testing.assert_allclose(model.codebooks[0].detach().numpy(), kmeans_centers(z, 8, 0), rtol=1e-5, atol=1e-6)


def test_kmeans_centers_with_fewer_distinct_points_than_codes():
    pts = np.repeat(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), 5, axis=0)
    centres = kmeans_centers(pts, 6, seed=0)
    assert centres.shape == (6, 2) and len(np.unique(centres, axis=0)) == 6
    nearest = np.abs(centres[:, None, :] - np.unique(pts, axis=0)[None]).max(-1).min(-1)
    assert nearest.max() < 0.05  # every centre is (a jittered copy of) a real point
    assert {(1.0, 2.0), (3.0, 4.0)} <= {tuple(c) for c in centres.tolist()}


def test_dead_code_reset_reseeds_idle_codes_from_batch():
    torch.manual_seed(0)
    model = RQVAE(RQVAEConfig(in_dim=3, codebook_sizes=[4], hidden_dims=[4], latent_dim=2))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).loss.backward()
    opt.step()
    tracker = DeadCodeTracker([4], patience=3, seed=0)
    tracker.update(torch.tensor([[0], [0], [1]]), step=1)
    tracker.update(torch.tensor([[0]]), step=2)
    before = model.codebooks[0].detach().clone()
    pool = torch.tensor([[10.0, 10.0], [20.0, 20.0]])
    assert tracker.reset(model, [pool], opt, step=3) == 2  # codes 2, 3 never used; code 1 idle 2 steps only
    after = model.codebooks[0].detach()
    assert torch.equal(after[:2], before[:2])
    for c in (2, 3):
        assert min(float((after[c] - p).abs().max()) for p in pool) < 1e-2
        assert float(opt.state[model.codebooks[0]]["exp_avg"][c].abs().sum()) == 0.0
    assert tracker.reset(model, [pool], opt, step=4) == 1  # code 1: unused in steps 2, 3, 4
    assert tracker.reset(model, [pool], opt, step=5) == 1  # code 0: last used at step 2
    assert tracker.reset(model, [pool], opt, step=6) == 2  # codes 2, 3: re-seeded at step 3, still unused


def test_training_lowers_loss_and_dead_code_reset_revives_codes():
    x = clustered()
    res = train_rqvae(x, small_cfg(rq_epochs=40, dead_code_steps=8))
    first, last = res.history[0], res.history[-1]
    assert last["recon"] < 0.5 * first["recon"]
    assert res.resets > 0
    no_reset = train_rqvae(x, small_cfg(rq_epochs=40, dead_code_steps=0, kmeans_init=False))
    used = [len(np.unique(res.model.encode_codes(torch.from_numpy(x))[:, lv])) for lv in range(3)]
    used0 = [len(np.unique(no_reset.model.encode_codes(torch.from_numpy(x))[:, lv])) for lv in range(3)]
    assert sum(used) > sum(used0)


def test_alignment_loss_pulls_projection_to_targets():
    x = clustered(n=128)
    rng = np.random.default_rng(3)
    targets = (x @ rng.normal(size=(12, 10)) * 0.05).astype(np.float32)  # a function of the item
    with pytest.raises(ValueError, match="needs alignment targets"):
        train_rqvae(x, small_cfg(align_weight=1.0))
    res = train_rqvae(x, small_cfg(align_weight=1.0, rq_epochs=60), targets)
    assert res.history[-1]["align"] < 0.5 * res.history[0]["align"]
    assert res.model.align_proj is not None and res.model.align_proj.out_features == 10


def test_same_seed_same_codes_and_bad_input():
    x = clustered(n=120)
    cfg = small_cfg(rq_epochs=5)
    a = train_rqvae(x, cfg).model.encode_codes(torch.from_numpy(x))
    b = train_rqvae(x, cfg).model.encode_codes(torch.from_numpy(x))
    assert torch.equal(a, b)
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        train_rqvae(bad, cfg)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"num_levels": 0}, "num_levels"), ({"codebook_size": 1}, "codebook_size"), ({"align_weight": -1}, "align_weight"),
     ({"rq_lr": 0}, "rq_lr"), ({"hidden_dims": []}, "hidden_dims")],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenizerConfig(**kwargs)
