"""Items left out of the training softmax (the cold-item protocol, issue 31): every loss kind equals a brute-force
cross-entropy over the kept items, masked rows get exactly zero gradient while kept rows train, no NaN, a masked
target keeps its own logit, and without a mask the code path is the one it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import alignrec.recommenders.sampled_softmax as sampled_softmax
from alignrec.recommenders import (
    LEARN,
    LEARNConfig,
    SASRecConfig,
    train_learn,
    train_sasrec,
    training_windows,
)
from alignrec.recommenders.bar import content_sasrec
from alignrec.recommenders.sampled_softmax import (
    NegativeSampler,
    column_softmax_loss,
    linear_softmax_loss,
    popularity_proposal,
)
from alignrec.recommenders.softmax_mask import check_mask, mask_bias, masked_cross_entropy
from recdata.cold_items import cold_item_split, items_without_training, training_softmax_mask

KINDS = ("full", "chunked", "sampled")
N, P, D = 23, 9, 6
MASKED = torch.tensor([i % 3 == 1 for i in range(N)])  # 8 of the 23 items left out
SASREC = dict(sasrec_dim=16, sasrec_heads=2, sasrec_layers=1, sasrec_max_len=4, sasrec_batch_size=4, sasrec_lr=1e-2,
              sasrec_seed=0, sasrec_dropout=0.0)
LEARN_FAST = dict(learn_dim=16, learn_heads=2, learn_layers=1, learn_max_len=4, learn_batch_size=4, learn_lr=1e-2,
                  learn_seed=0, learn_negatives=3, learn_dropout=0.0)


def _every_item_once(num_items: int) -> NegativeSampler:
    """A sampler whose draws are every item once with ``S q = 1``: the sampled loss is then the full loss exactly."""
    sampler = NegativeSampler(popularity_proposal(torch.zeros(num_items), 0.0), num_items, seed=0)
    sampler.sample = lambda device=None: (torch.arange(num_items, device=device), torch.zeros(num_items, device=device))
    return sampler


def _case(seed: int = 0, masked_targets: bool = False):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(P, D, generator=gen, dtype=torch.float64, requires_grad=True)
    table = torch.randn(N, D, generator=gen, dtype=torch.float64, requires_grad=True)
    pool = torch.arange(N) if masked_targets else (~MASKED).nonzero().squeeze(1)
    targets = pool[torch.randint(0, len(pool), (P,), generator=gen)]
    bias = torch.randn(N, generator=gen, dtype=torch.float64)
    return hidden, table, targets, bias


def _brute_force(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row: CE over the kept items plus the row's own target, one row at a time."""
    losses = []
    for row, target in enumerate(targets.tolist()):
        keep = [i for i in range(logits.shape[1]) if not MASKED[i] or i == target]
        losses.append(F.cross_entropy(logits[row, keep].unsqueeze(0), torch.tensor([keep.index(target)])))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("masked_targets", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_linear_loss_with_a_mask_is_ce_over_the_kept_items(kind, with_bias, masked_targets, monkeypatch):
    monkeypatch.setattr(sampled_softmax, "POSITION_CHUNK", 4)  # tiles of positions too
    hidden, table, targets, bias = _case(masked_targets=masked_targets)
    bias = bias if with_bias else None
    loss = linear_softmax_loss(kind, hidden, table, targets, sampler=_every_item_once(N), chunk=5, bias=bias,
                               masked=MASKED)
    logits = hidden @ table.T + (0 if bias is None else bias)
    assert abs(loss.item() - _brute_force(logits, targets).item()) < 1e-5
    grad_h, grad_t = torch.autograd.grad(loss, (hidden, table))
    assert torch.isfinite(grad_h).all() and torch.isfinite(grad_t).all()
    untargeted = MASKED & ~torch.isin(torch.arange(N), targets)
    assert untargeted.any() and torch.equal(grad_t[untargeted], torch.zeros_like(grad_t[untargeted]))
    assert (grad_t[~MASKED].abs().sum(1) > 0).all()  # every kept row trains


@pytest.mark.parametrize("kind", KINDS)
def test_column_loss_with_a_mask_is_ce_over_the_kept_items(kind):
    """The item head's layout: item logits are columns of a larger [rows, vocab] matrix."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, 40, generator=gen, dtype=torch.float64, requires_grad=True)  # [B, T, V]
    columns = torch.randperm(40, generator=gen)[:N]  # item i is vocabulary column columns[i]
    rows = torch.tensor([0, 2, 5, 7, 11])
    targets = (~MASKED).nonzero().squeeze(1)[torch.tensor([0, 3, 3, 9, 14])]
    flat = logits.reshape(12, 40)
    loss = column_softmax_loss(kind, flat, rows, columns, targets, sampler=_every_item_once(N), chunk=4,
                               masked=MASKED)
    assert abs(loss.item() - _brute_force(flat[rows][:, columns], targets).item()) < 1e-5
    grad = torch.autograd.grad(loss, logits)[0].reshape(12, 40)
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[rows][:, columns[MASKED]], torch.zeros(5, int(MASKED.sum()), dtype=grad.dtype))
    assert (grad[rows][:, columns[~MASKED]] != 0).all()


@pytest.mark.parametrize("max_elements", [None, 6])
def test_whole_masked_tiles_give_exact_finite_losses_and_gradients(max_elements):
    """Tiles whose every logit is -inf (items 0-5 masked, 2 items per tile) add nothing and stay NaN-free."""
    hidden, table, _, bias = _case(seed=2)
    masked = torch.arange(N) < 6
    targets = torch.arange(6, 6 + P)
    lse = sampled_softmax.linear_logsumexp(hidden, table, 2, bias=mask_bias(masked, bias), max_elements=max_elements)
    expected = torch.logsumexp((hidden @ table.T + bias)[:, 6:], 1)
    assert torch.allclose(lse, expected, atol=1e-10, rtol=0)
    loss = linear_softmax_loss("chunked", hidden, table, targets, chunk=2, bias=bias, masked=masked)
    grad_h, grad_t = torch.autograd.grad(loss, (hidden, table))
    assert torch.isfinite(grad_h).all() and torch.equal(grad_t[:6], torch.zeros_like(grad_t[:6]))


def test_a_masked_draw_adds_exactly_nothing_to_the_sampled_loss():
    """Draws of masked items next to a kept one: the same loss as the kept draw alone, and no NaN."""
    hidden, table, targets, _ = _case()
    kept = int((~MASKED).nonzero()[0]) if int(targets[0]) != int((~MASKED).nonzero()[0]) else int((~MASKED).nonzero()[1])
    masked_ids = MASKED.nonzero().squeeze(1)[:3]

    def loss_with(draws: list[int]) -> torch.Tensor:
        sampler = NegativeSampler(popularity_proposal(torch.zeros(N), 0.0), len(draws), seed=0)
        sampler.sample = lambda device=None: (torch.tensor(draws), torch.zeros(len(draws)))
        return linear_softmax_loss("sampled", hidden[:1], table, targets[:1], sampler=sampler, masked=MASKED)

    alone, with_masked = loss_with([kept]), loss_with([*masked_ids.tolist(), kept])
    assert torch.isfinite(with_masked) and with_masked.item() == alone.item()
    grad_t = torch.autograd.grad(with_masked, table)[0]
    assert torch.equal(grad_t[masked_ids], torch.zeros_like(grad_t[masked_ids]))


def test_without_a_mask_the_losses_are_the_unmasked_code_path_bit_for_bit():
    hidden, table, targets, bias = _case()
    sampler = NegativeSampler(popularity_proposal(torch.arange(N), 0.75), 7, seed=3)
    twin = NegativeSampler(popularity_proposal(torch.arange(N), 0.75), 7, seed=3)
    assert torch.equal(linear_softmax_loss("full", hidden, table, targets, bias=bias, masked=None),
                       F.cross_entropy(hidden @ table.T + bias, targets))
    for kind in KINDS:
        a = linear_softmax_loss(kind, hidden, table, targets, sampler=sampler, chunk=5, bias=bias)
        b = linear_softmax_loss(kind, hidden, table, targets, sampler=twin, chunk=5, bias=bias, masked=None)
        assert torch.equal(a, b)


def test_mask_helpers_refuse_a_bad_mask_and_never_give_nan():
    assert check_mask(None, 3) is None
    with pytest.raises(ValueError, match=r"must be \[3\]"):
        check_mask(torch.zeros(4, dtype=torch.bool), 3)
    with pytest.raises(ValueError, match="at least one item"):
        check_mask(torch.ones(3, dtype=torch.bool), 3)
    assert torch.equal(mask_bias(torch.tensor([False, True])), torch.tensor([0.0, -math.inf]))
    logits = torch.tensor([[5.0, -2.0, 1.0]], requires_grad=True)
    loss = masked_cross_entropy(logits, torch.tensor([1]), torch.tensor([True, True, False]))  # target masked too
    grad = torch.autograd.grad(loss, logits)[0]
    assert torch.isfinite(loss) and torch.isfinite(grad).all() and grad[0, 0].item() == 0.0


# ---- the cold-item protocol: the mask comes from the split -----------------------------------------------------------
@pytest.fixture
def cold_split(tiny_split):
    split = cold_item_split(tiny_split, 0.25, seed=3)
    assert set(items_without_training(split)) > set(items_without_training(tiny_split))  # some items went cold
    return split


def test_the_mask_is_the_items_without_training_under_the_protocol_only(tiny_split, cold_split):
    assert items_without_training(tiny_split)  # naturally never bought items: still negatives, as before
    assert training_softmax_mask(tiny_split) is None
    mask = training_softmax_mask(cold_split)
    ids = cold_split.dataset.item_ids()
    assert [ids[i] for i in np.flatnonzero(mask)] == items_without_training(cold_split)
    assert training_softmax_mask(cold_split, ids[::-1]).tolist() == mask[::-1].tolist()


@pytest.mark.parametrize("loss", ["full", "chunked", "sampled", "bce"])
def test_sasrec_step_leaves_the_cold_rows_untouched(cold_split, loss):
    cfg = SASRecConfig(**SASREC, sasrec_loss=loss, sasrec_num_negatives=5, sasrec_epochs=1, sasrec_patience=0)
    model = train_sasrec(cold_split, cfg)  # sets the mask, the sampler; one epoch of training
    cold = torch.from_numpy(training_softmax_mask(cold_split))
    assert torch.equal(model.softmax_mask.cpu(), cold) and model.train_info["masked_items"] == int(cold.sum())
    inputs, targets = training_windows(cold_split.train_sequences(), model.index, 4)
    model.train()
    grad = torch.autograd.grad(model.training_loss(inputs, targets), model.item_emb.weight)[0][1:]  # [N, dim]
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[cold], torch.zeros_like(grad[cold]))
    trained = grad[~cold].abs().sum(1) > 0  # sampled: a warm item neither drawn, a target nor an input gets none
    assert trained.all() if loss != "sampled" else trained.any()
    scores = model.score([["i1", "i3"]])  # ranking (early stopping, evaluation) still covers every item
    assert scores.shape == (1, 8) and torch.isfinite(scores).all()


def test_sasrec_without_the_protocol_has_no_mask(tiny_split):
    model = train_sasrec(tiny_split, SASRecConfig(**SASREC, sasrec_epochs=1, sasrec_patience=0))
    assert model.softmax_mask is None and "masked_items" not in model.train_info


def test_content_sasrec_cold_rows_and_adaptor_outputs_get_no_gradient(cold_split):
    cfg = SASRecConfig(**SASREC, sasrec_loss="full", sasrec_epochs=1, sasrec_patience=0)
    text = (cold_split.dataset.item_ids(), np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32))
    model = train_sasrec(cold_split, cfg, model=content_sasrec(cold_split.dataset.item_ids(), cfg, text))
    cold = model.softmax_mask.cpu()
    inputs, targets = training_windows(cold_split.train_sequences(), model.index, 4)
    table = model.output_table()  # [N, dim]: ID embedding + projected text
    table.retain_grad()
    model.output_table = lambda: table
    model.training_loss(inputs, targets).backward()
    assert torch.equal(table.grad[cold], torch.zeros_like(table.grad[cold]))
    assert (table.grad[~cold].abs().sum(1) > 0).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adaptor.parameters())  # shared: trains


@pytest.mark.parametrize("loss", ["softmax", "infonce"])
def test_learn_cold_tower_outputs_get_no_gradient_and_loss_is_ce_over_warm_items(cold_split, loss):
    cold = torch.from_numpy(training_softmax_mask(cold_split))
    cfg = LEARNConfig(**{**LEARN_FAST, "learn_negatives": 50}, learn_loss=loss)
    model = LEARN(cold_split.dataset.item_ids(), np.random.default_rng(0).normal(size=(8, 12)), cfg)
    inputs, targets = training_windows(cold_split.train_sequences(), model.index, 4)
    outputs = []
    original = model.item_vectors

    def spy(rows=None):
        out = original(rows)
        out.retain_grad()
        outputs.append((rows, out))
        return out

    model.item_vectors = spy
    gen = torch.Generator().manual_seed(0)
    value = model.training_loss(inputs, targets, loss=loss, generator=gen, masked=cold)
    value.backward()
    rows, out = outputs[0]
    rows = torch.arange(8) if rows is None else rows
    assert torch.equal(out.grad[cold[rows]], torch.zeros_like(out.grad[cold[rows]]))
    assert (out.grad[~cold[rows]].abs().sum(1) > 0).all()
    if loss == "softmax":  # brute force: CE over the warm items only (every target is warm)
        with torch.no_grad():
            users = model.user_states(inputs)[targets > 0]
            warm = (~cold).nonzero().squeeze(1)
            logits = users @ original(warm).T / cfg.learn_temperature
            expected = F.cross_entropy(logits, torch.searchsorted(warm, targets[targets > 0] - 1))
        assert abs(value.item() - expected.item()) < 1e-5


def test_train_learn_records_the_mask(cold_split, tiny_split):
    masked = train_learn(cold_split, LEARNConfig(**LEARN_FAST, learn_epochs=1, learn_patience=0),
                         np.random.default_rng(0).normal(size=(8, 12)))
    assert masked.train_info["masked_items"] == len(items_without_training(cold_split))
    plain = train_learn(tiny_split, LEARNConfig(**LEARN_FAST, learn_epochs=1, learn_patience=0),
                        np.random.default_rng(0).normal(size=(8, 12)))
    assert "masked_items" not in plain.train_info
