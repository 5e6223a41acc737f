"""RQ-VAE step budget (issue 34): cost independent of the catalogue above the budget, unchanged below it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tokenization.config import TokenizerConfig
from tokenization.pipeline import fit_item_tokenizer
from tokenization.rqvae_training import planned_steps, train_rqvae


def small_cfg(**kw) -> TokenizerConfig:
    base = dict(num_levels=2, codebook_size=8, hidden_dims=[16], latent_dim=4, align_weight=0.0, rq_epochs=3,
                rq_batch_size=32, dead_code_steps=2)
    return TokenizerConfig(**{**base, **kw})


@pytest.mark.parametrize(("n", "kw", "expected"), [
    (100, {}, (150, 1)),
    (32_768, {}, (4800, 32)),  # the largest catalogue the default budget leaves untouched
    (32_769, {}, (4800, 33)),  # 145.5 epochs
    (10**6, {}, (4800, 977)),  # ~4.9 epochs instead of 150 (146,550 steps)
    (10**7, {}, (4800, 9766)),  # under one pass: each item seen about half a time
    (10**6, {"rq_max_steps": 0}, (146_550, 977)),  # 0 = no cap: the old cost
    (10**6, {"rq_epochs": 2}, (1954, 977)),  # fewer epochs than the budget allows: epochs win
])
def test_planned_steps(n, kw, expected):
    assert planned_steps(n, TokenizerConfig(**kw)) == expected


def test_default_budget_keeps_every_catalogue_up_to_32768_items_as_before():
    cfg = TokenizerConfig()
    for n in [*range(1, 32_769, 97), 16_384, 30_000, 32_767, 32_768]:
        total, per_epoch = planned_steps(n, cfg)
        assert total == cfg.rq_epochs * per_epoch == 150 * -(-n // min(1024, n)), n


def _vectors(n: int = 100) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)


def test_a_budget_above_the_planned_steps_changes_nothing():
    """100 items / 32 per batch = 4 steps x 3 epochs: a budget of 12 (or more) trains the very same weights."""
    x = _vectors()
    free = train_rqvae(x, small_cfg(rq_max_steps=0))
    capped = train_rqvae(x, small_cfg(rq_max_steps=12))
    for key, value in free.model.state_dict().items():
        assert torch.equal(value, capped.model.state_dict()[key]), key
    assert free.history == capped.history and free.steps == capped.steps == 12


def test_a_budget_stops_mid_epoch_and_records_the_schedule():
    x = _vectors()
    res = train_rqvae(x, small_cfg(rq_epochs=50, rq_max_steps=6, dead_code_steps=0))
    assert res.steps == 6 and len(res.history) == 2  # one full epoch of 4 steps, then 2 steps of the next
    assert res.schedule() == {"steps": 6, "steps_per_epoch": 4, "epochs": 1.5}
    # the budget is a prefix of the same training: 8 budgeted steps of 50 epochs = 2 whole epochs (no resets,
    # whose window depends on the total)
    budgeted = train_rqvae(x, small_cfg(rq_epochs=50, rq_max_steps=8, dead_code_steps=0))
    two_epochs = train_rqvae(x, small_cfg(rq_epochs=2, rq_max_steps=0, dead_code_steps=0))
    for key, value in budgeted.model.state_dict().items():
        assert torch.equal(value, two_epochs.model.state_dict()[key]), key
    assert train_rqvae(x, small_cfg(quantizer="rkmeans")).schedule() == {"steps": 0, "steps_per_epoch": 0,
                                                                         "epochs": 0.0}


def test_negative_budget_is_refused():
    with pytest.raises(ValueError, match="rq_max_steps must be >= 0"):
        TokenizerConfig(rq_max_steps=-1)


def test_tokenizer_meta_report_and_manifest_record_the_steps(tmp_path):
    x = _vectors()
    tok, report = fit_item_tokenizer([f"i{i}" for i in range(100)], x, small_cfg(rq_max_steps=10))
    want = {"steps": 10, "steps_per_epoch": 4, "epochs": 2.5, "max_steps": 10}
    assert tok.meta["rq_training"] == report["rq_training"] == want
    tok.save_pretrained(tmp_path / "tok")
    assert json.loads((tmp_path / "tok" / "manifest.json").read_text())["rq_training"] == want
