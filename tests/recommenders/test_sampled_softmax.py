"""Catalogue softmax losses: chunked = full CE exactly, the sampled loss's exact identity and logQ consistency,
accidental hits, the seeded sampler, the auto rule, and a tiny SASRec trained with each loss."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import alignrec.recommenders.sampled_softmax as sampled_softmax
from alignrec.recommenders import SASRec, SASRecConfig, train_sasrec, training_windows
from alignrec.recommenders.sampled_softmax import (
    AUTO_SAMPLED_MIN_ITEMS,
    CPU_TILE_ELEMENTS,
    DEFAULT_CHUNK,
    NegativeSampler,
    column_logsumexp,
    column_softmax_loss,
    linear_logsumexp,
    linear_softmax_loss,
    popularity_proposal,
    resolve_loss,
    sampled_softmax_loss,
)

FAST = dict(sasrec_dim=16, sasrec_heads=2, sasrec_layers=1, sasrec_max_len=4, sasrec_batch_size=4,
            sasrec_lr=1e-2, sasrec_seed=0, sasrec_dropout=0.0)


def _random(dtype, p=7, n=23, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(p, d, generator=gen, dtype=dtype, requires_grad=True)
    table = torch.randn(n, d, generator=gen, dtype=dtype, requires_grad=True)
    return hidden, table, torch.randint(0, n, (p,), generator=gen)


@pytest.mark.parametrize("chunk", [1, 4, 23, 1000])  # one item, a chunk that does not divide N, exactly N, > N
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_chunked_ce_equals_full_ce_and_its_gradient(chunk, dtype):
    hidden, table, targets = _random(dtype)
    full = F.cross_entropy(hidden @ table.T, targets)
    g_full = torch.autograd.grad(full, (hidden, table))
    chunked = linear_softmax_loss("chunked", hidden, table, targets, chunk=chunk)
    g_chunked = torch.autograd.grad(chunked, (hidden, table))
    assert chunked.dtype == dtype and abs(chunked.item() - full.item()) < 1e-6
    for a, b in zip(g_chunked, g_full, strict=True):
        assert a.dtype == dtype and torch.allclose(a, b, atol=1e-6)


def test_linear_logsumexp_passes_gradcheck():
    hidden, table, _ = _random(torch.float64, p=3, n=9, d=4)
    assert torch.autograd.gradcheck(lambda h, t: linear_logsumexp(h, t, chunk=4), (hidden, table))


def _head(dtype, with_bias, with_columns, p=37, v=1501, d=24, seed=0):
    """States, a table, a bias and columns of a linear head in ``dtype``; the exact reference ``[p]`` log-partition
    of the logits as that head computes them (rounded to ``dtype``, reduced in float32 or wider)."""
    gen = torch.Generator().manual_seed(seed)
    hidden, table = torch.randn(p, d, generator=gen).to(dtype), torch.randn(v, d, generator=gen).to(dtype)
    columns = torch.randperm(v, generator=gen)[:1001] if with_columns else None  # 1001 of the 1501 rows, shuffled
    width = v if columns is None else 1001
    bias = torch.randn(width, generator=gen).to(dtype) if with_bias else None
    logits = F.linear(hidden, table if columns is None else table[columns], bias)  # [p, width] in dtype
    return hidden, table, bias, columns, logits.to(torch.promote_types(dtype, torch.float32)).logsumexp(1)


@pytest.mark.parametrize("with_columns", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk, max_elements", [(DEFAULT_CHUNK, None), (100, 1000), (7, 10), (DEFAULT_CHUNK, 10**8)])
def test_no_grad_linear_logsumexp_is_the_heads_exact_log_partition(dtype, with_bias, with_columns, chunk,
                                                                   max_elements):
    """Without a gradient: tiles in the head's dtype (``tile_dtype``), reduced in float32 or wider, equal
    ``logsumexp`` of the head's own logits; tiles that divide neither the 37 rows nor the 1,001 columns."""
    hidden, table, bias, columns, expected = _head(dtype, with_bias, with_columns)
    with torch.no_grad():
        got = linear_logsumexp(hidden, table, chunk, bias=bias, columns=columns, tile_dtype=dtype,
                               max_elements=max_elements)
    assert got.dtype == expected.dtype == torch.promote_types(dtype, torch.float32)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_no_grad_linear_logsumexp_of_half_states_is_exact_in_float32_by_default(dtype):
    hidden, table, bias, columns, _ = _head(dtype, True, True)
    exact = F.linear(hidden.float(), table[columns].float(), bias.float()).logsumexp(1)
    with torch.no_grad():
        got = linear_logsumexp(hidden, table, 100, bias=bias, columns=columns)
    assert got.dtype == torch.float32 and torch.allclose(got, exact, atol=1e-5, rtol=0)


def test_no_grad_linear_logsumexp_treats_infinities_as_torch_logsumexp(monkeypatch):
    """Rows of +inf and of -inf logits; and tiles of -inf logits (a masked vocabulary block) beside rows whose finite
    logits are all near -200: each partial is reduced at its own peak, so those rows stay exact, not -inf."""
    monkeypatch.setattr(sampled_softmax, "FOLD_TILES", 3)  # the partials are folded too
    gen = torch.Generator().manual_seed(4)
    hidden, table = torch.randn(9, 6, generator=gen), torch.randn(301, 6, generator=gen)
    table[:, 0] = table[:, 0].abs() + 0.1
    masked = torch.randn(301, generator=gen) - 200.0
    masked[:150] = -math.inf  # several whole tiles of -inf
    infinite = hidden.clone()
    infinite[2, 0], infinite[5, 0] = math.inf, -math.inf  # every logit of row 2 is +inf, of row 5 -inf
    for h, bias in ((hidden, masked), (infinite, None)):
        expected = (h @ table.T + (0 if bias is None else bias)).logsumexp(1)
        with torch.no_grad():
            got = linear_logsumexp(h, table, 20, bias=bias, max_elements=40)
        finite = expected.isfinite()
        assert torch.equal(got.isfinite(), finite) and torch.equal(got[~finite], expected[~finite])
        assert torch.allclose(got[finite], expected[finite], atol=1e-4, rtol=0)  # float32's ulp at 200: 1.5e-5
    assert expected[2] == math.inf and expected[5] == -math.inf


@pytest.mark.parametrize("max_elements", [None, 10, 300, 3000, 10**8])  # 10: several row blocks
def test_linear_logsumexp_tiles_every_logit_once_within_the_budget(max_elements, monkeypatch):
    hidden, table, bias, _, expected = _head(torch.float32, True, False, p=300, v=5000)
    tiles: list[int] = []
    mm, addmm = torch.mm, torch.addmm
    monkeypatch.setattr(torch, "mm", lambda a, w, out: tiles.append(out.numel()) or mm(a, w, out=out))
    monkeypatch.setattr(torch, "addmm", lambda c, a, w, out: tiles.append(out.numel()) or addmm(c, a, w, out=out))
    with torch.no_grad():
        got = linear_logsumexp(hidden, table, bias=bias, max_elements=max_elements)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    budget = max_elements or CPU_TILE_ELEMENTS  # the CPU default: 256 rows x 2,048 columns
    assert max(tiles) <= budget and sum(tiles) == 300 * 5000  # every logit once, never a [rows, vocab] tile
    if max_elements == 10**8:  # rows capped at CPU_TILE_ROWS, columns at chunk
        assert tiles == [256 * 5000, 44 * 5000]


@pytest.mark.parametrize("with_columns", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_path_values_equal_the_no_grad_path(dtype, with_bias, with_columns, monkeypatch):
    """With a gradient the forward is the same tiled one (the backward recomputes its own tiles): equal values."""
    monkeypatch.setattr(sampled_softmax, "POSITION_CHUNK", 5)
    hidden, table, bias, columns, expected = _head(dtype, with_bias, with_columns)
    with torch.no_grad():
        plain = linear_logsumexp(hidden, table, 100, bias=bias, columns=columns, max_elements=1000)
    inputs = [t.requires_grad_() for t in (hidden, table, bias) if t is not None]
    lse = linear_logsumexp(hidden, table, 100, bias=bias, columns=columns, max_elements=1000)
    assert lse.requires_grad and torch.equal(lse.detach(), plain)
    assert all(g is not None for g in torch.autograd.grad(lse.sum(), inputs))


def test_linear_logsumexp_rejects_a_rounding_tile_dtype_with_a_gradient_and_a_bad_budget():
    hidden, table, _ = _random(torch.float32)
    with pytest.raises(ValueError, match="no gradient"):
        linear_logsumexp(hidden, table, tile_dtype=torch.bfloat16)
    assert linear_logsumexp(hidden, table, tile_dtype=torch.float32).requires_grad  # the reduction's own: allowed
    with pytest.raises(ValueError, match="max_elements"):
        linear_logsumexp(hidden, table, max_elements=0)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_column_chunked_ce_equals_full_ce_over_gathered_columns(chunk, with_bias):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 20, generator=gen, requires_grad=True)  # [R, V]: rows of a flattened [B, T, V]
    rows = torch.tensor([0, 2, 3, 5])  # [M] supervised rows
    columns = torch.tensor([4, 9, 11, 12, 13, 17, 19])  # [N] each item's own column
    targets = torch.tensor([0, 6, 3, 3])
    bias = torch.randn(7, generator=gen) if with_bias else None
    z = logits[rows][:, columns] + (bias if with_bias else 0)
    full = F.cross_entropy(z, targets)
    g_full, = torch.autograd.grad(full, logits)
    got = column_softmax_loss("chunked", logits, rows, columns, targets, bias=bias, chunk=chunk)
    g_got, = torch.autograd.grad(got, logits)
    assert abs(got.item() - full.item()) < 1e-6
    assert torch.allclose(g_got, g_full, atol=1e-7)
    assert torch.equal(g_got != 0, g_full != 0)  # only the items' columns of the supervised rows
    assert torch.allclose(column_logsumexp(logits, rows, columns, bias, chunk), z.logsumexp(1), atol=1e-6)


@pytest.mark.parametrize("layout", ["linear", "column"])
def test_sampled_loss_with_every_item_drawn_once_at_unit_expected_count_is_full_ce(layout):
    """The exact identity: negatives = all N items once, uniform q and S = N, so log(S q) = 0 for every draw; the
    target's own draw is an accidental hit (masked), leaving exactly the full softmax's terms."""
    hidden, table, targets = _random(torch.float32)
    n = table.shape[0]
    negatives = torch.arange(n)
    q = popularity_proposal(torch.zeros(n), alpha=0.0)
    log_expected = (math.log(n) + q.log()[negatives]).float()
    assert torch.allclose(log_expected, torch.zeros(n), atol=1e-6)
    logits = hidden @ table.T  # [P, N]
    if layout == "linear":
        got = sampled_softmax_loss((hidden * table[targets]).sum(-1), logits[:, negatives], targets, negatives,
                                   log_expected)
    else:
        flat, rows, columns = logits.repeat(1, 2), torch.arange(len(targets)), torch.arange(n) + n  # columns N..2N-1
        got = column_softmax_loss("sampled", flat, rows, columns, targets, sampler=_AllItems(n))
    full = F.cross_entropy(hidden @ table.T, targets)
    assert abs(got.item() - full.item()) < 1e-6
    g_got = torch.autograd.grad(got, (hidden, table))
    g_full = torch.autograd.grad(full, (hidden, table))
    for a, b in zip(g_got, g_full, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


class _AllItems:
    """A sampler that draws every item once with expected count 1 (the identity above through the dispatch)."""

    def __init__(self, n: int) -> None:
        self.num_items = n

    def sample(self, device=None):
        return torch.arange(self.num_items, device=device), torch.zeros(self.num_items, device=device)


def test_accidental_hits_are_masked_and_only_they():
    target_logits = torch.tensor([1.0, 0.5])
    negatives = torch.tensor([2, 0, 2, 3])  # row 0's target 2 is drawn twice, row 1's target 0 once
    negative_logits = torch.tensor([[9.0, 0.3, 9.0, -0.2], [0.1, 9.0, 0.4, 0.2]])
    log_expected = torch.tensor([0.1, 0.2, 0.1, 0.3])
    got = sampled_softmax_loss(target_logits, negative_logits, torch.tensor([2, 0]), negatives, log_expected)
    row0 = torch.tensor([1.0, 0.3 - 0.2, -0.2 - 0.3])  # target, then the non-hits, corrected
    row1 = torch.tensor([0.5, 0.1 - 0.1, 0.4 - 0.1, 0.2 - 0.3])
    expected = ((row0.logsumexp(0) - 1.0) + (row1.logsumexp(0) - 0.5)) / 2
    assert abs(got.item() - expected.item()) < 1e-6


def test_logq_correction_makes_the_partition_estimate_unbiased_and_the_gradient_consistent():
    """Tiny case, skewed popularity proposal. (1) sum_k exp(z_jk - log(S q_jk)) over non-target draws is an
    unbiased estimate of sum_{i != y} exp(z_i): its Monte Carlo mean is within 4 standard errors. (2) The mean
    gradient of the corrected loss matches full CE's: the sampled loss is a smooth function of that estimate, so its
    bias is O(1/S) (delta method; measured < 1e-3 at S = 200) and the Monte Carlo standard error over R = 1000
    draws is ~1e-3 per coordinate: 0.01 leaves ~10 standard errors. Without the correction the mean gradient is
    > 0.1 off (measured 0.29): the check can fail."""
    z0 = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0], dtype=torch.float64)
    y = torch.tensor([3])
    sampler = NegativeSampler(popularity_proposal(torch.tensor([50, 20, 10, 5, 2, 1]), 1.0), 200, seed=0)
    partition, corrected, uncorrected = [], [], []
    for _ in range(1000):
        negatives, log_expected = sampler.sample()
        partition.append(((z0[negatives] - log_expected).exp() * (negatives != y)).sum())
        for correction, out in ((log_expected, corrected), (torch.zeros_like(log_expected), uncorrected)):
            z = z0.clone().requires_grad_(True)
            sampled_softmax_loss(z[y], z[negatives].unsqueeze(0), y, negatives, correction).backward()
            out.append(z.grad)
    partition = torch.stack(partition)
    exact = z0.exp().sum() - z0[y].exp()
    assert abs(partition.mean() - exact) < 4 * partition.std() / math.sqrt(len(partition))
    z = z0.clone().requires_grad_(True)
    F.cross_entropy(z.unsqueeze(0), y).backward()
    assert (torch.stack(corrected).mean(0) - z.grad).abs().max() < 0.01
    assert (torch.stack(uncorrected).mean(0) - z.grad).abs().max() > 0.1


def test_sampler_is_seeded_and_draws_by_its_proposal():
    q = popularity_proposal(torch.tensor([9, 3, 1, 0]), alpha=1.0)
    assert torch.allclose(q, torch.tensor([10, 4, 2, 1], dtype=torch.float64) / 17)
    a, b = NegativeSampler(q, 20000, seed=5), NegativeSampler(q, 20000, seed=5)
    negatives, log_expected = a.sample()
    assert torch.equal(negatives, b.sample()[0])
    assert torch.allclose(log_expected, (math.log(20000) + q.log()[negatives]).float())
    freq = torch.bincount(negatives, minlength=4).double() / 20000
    assert (freq - q).abs().max() < 4 * math.sqrt(0.25 / 20000)  # 4 binomial standard errors at worst
    uniform = NegativeSampler(popularity_proposal(torch.tensor([9, 3, 1, 0]), alpha=0.0), 8, seed=0)
    assert uniform.uniform and torch.allclose(uniform.sample()[1], torch.full((8,), math.log(8 / 4)))


@pytest.mark.parametrize("bad, match", [(dict(num_negatives=0), "num_negatives"),
                                        (dict(proposal=torch.tensor([0.5, 0.0])), "> 0 for every item")])
def test_sampler_rejects_bad_settings(bad, match):
    kwargs = dict(proposal=torch.tensor([0.5, 0.5]), num_negatives=2, seed=0) | bad
    with pytest.raises(ValueError, match=match):
        NegativeSampler(**kwargs)


def test_auto_picks_full_below_the_threshold_and_sampled_from_it():
    assert resolve_loss("auto", AUTO_SAMPLED_MIN_ITEMS - 1) == "full"
    assert resolve_loss("auto", AUTO_SAMPLED_MIN_ITEMS) == "sampled"
    assert resolve_loss("auto", 10, sampled_min_items=10) == "sampled"
    assert resolve_loss("chunked", 10**7) == "chunked"
    with pytest.raises(ValueError, match="not one of"):
        resolve_loss("softmax", 10)


# ---- SASRec ----------------------------------------------------------------------------------------------------
def _full_ce(model: SASRec, split) -> float:
    """Exact full-softmax CE of the model on every training transition (dropout off)."""
    inputs, targets = training_windows(split.train_sequences(), model.index, model.cfg.sasrec_max_len)
    model.eval()
    with torch.no_grad():
        mask = targets > 0
        hidden = model.encode(inputs)[mask]
        return F.cross_entropy(hidden @ model.output_table().T, targets[mask] - 1).item()


def test_sasrec_chunked_loss_is_its_full_loss_exactly(tiny_split):
    model = SASRec(tiny_split.dataset.item_ids(), SASRecConfig(**FAST, sasrec_loss="full"))
    inputs, targets = training_windows(tiny_split.train_sequences(), model.index, 4)
    full = model.training_loss(inputs, targets)
    g_full = torch.autograd.grad(full, model.item_emb.weight)[0]
    for kind in ("chunked", "ce"):
        model.cfg.sasrec_loss = kind
        loss = model.training_loss(inputs, targets)
        assert abs(loss.item() - full.item()) < 1e-6
        assert torch.allclose(torch.autograd.grad(loss, model.item_emb.weight)[0], g_full, atol=1e-6)


@pytest.mark.parametrize("loss, alpha", [("sampled", 0.75), ("sampled", 0.0), ("chunked", 0.75)])
def test_tiny_sasrec_trains_with_a_bounded_memory_loss(tiny_split, tmp_path, loss, alpha):
    cfg = SASRecConfig(**FAST, sasrec_epochs=30, sasrec_patience=0, sasrec_loss=loss, sasrec_num_negatives=6,
                       sasrec_negative_alpha=alpha)
    torch.manual_seed(cfg.sasrec_seed)  # train_sasrec seeds then builds the model: the same initial weights
    before = _full_ce(SASRec(tiny_split.dataset.item_ids(), cfg), tiny_split)
    log = tmp_path / "log.jsonl"
    model = train_sasrec(tiny_split, cfg, log_file=log)
    losses = [json.loads(line)["loss"] for line in log.read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0]  # the loss it optimises
    assert _full_ce(model, tiny_split) < 0.6 * before  # and the true full-softmax CE
    expected = {"loss": loss} | ({"num_negatives": 6, "negative_alpha": alpha} if loss == "sampled" else {})
    assert {k: model.train_info[k] for k in expected} == expected
    assert (model.negative_sampler is not None) == (loss == "sampled")


def test_sasrec_auto_records_the_loss_it_chose(tiny_split, tmp_path):
    model = train_sasrec(tiny_split, SASRecConfig(**FAST, sasrec_epochs=1, sasrec_patience=0))
    assert model.cfg.sasrec_loss == "auto" and model.train_info["loss"] == "full"  # 8 items: below the threshold
    model.save_pretrained(tmp_path / "sasrec")
    saved = json.loads((tmp_path / "sasrec" / "sasrec_config.json").read_text())
    assert (saved["config"]["sasrec_loss"], saved["loss"]) == ("auto", "full")
    assert SASRec.from_pretrained(tmp_path / "sasrec").loss_kind() == "full"


def test_sasrec_sampled_loss_without_a_sampler_says_how_to_get_one(tiny_split):
    model = SASRec(tiny_split.dataset.item_ids(), SASRecConfig(**FAST, sasrec_loss="sampled"))
    inputs, targets = training_windows(tiny_split.train_sequences(), model.index, 4)
    with pytest.raises(ValueError, match="train with train_sasrec"):
        model.training_loss(inputs, targets)


@pytest.mark.parametrize("bad, match", [(dict(sasrec_loss="softmax"), "sasrec_loss must be one of"),
                                        (dict(sasrec_num_negatives=0), "sasrec_num_negatives must be >= 1"),
                                        (dict(sasrec_negative_alpha=-1.0), "sasrec_negative_alpha")])
def test_sasrec_config_rejects_bad_loss_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        SASRecConfig(**bad)
