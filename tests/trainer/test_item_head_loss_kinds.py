"""The item head's bounded-memory losses (chunked, logQ-corrected sampled), its logit adjustment, the training
counts behind both, and a tiny model and trainer that learn with them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import build_tiny_llama
from trainer.item_head import (
    ItemHeadObjective,
    ItemHeadOptions,
    ItemHeadTargets,
    item_head_loss,
    item_head_manifest,
    item_target_counts,
)

# vocab: 0 pad, 1 eos, 2-3 clusters, 4-7 the items' own tokens; items (cluster, own): (2,4) (2,5) (3,6) (3,7)
CODES = np.array([[2, 4], [2, 5], [3, 6], [3, 7]])
VOCAB = 8
LABELS = torch.tensor([[-100, -100, 3, 6, 2, 5, 1], [-100, -100, 3, 7, 1, -100, -100]])  # targets: items 2, 1, 3


def _picked(logits: torch.Tensor) -> torch.Tensor:
    """The head's logits [3, 4] at the three boundaries of ``LABELS`` (positions (0,1), (0,3), (1,1))."""
    return torch.stack([logits[0, 1, 4:8], logits[0, 3, 4:8], logits[1, 1, 4:8]])


class _AllItems:
    """Draws every item once at expected count 1: the sampled loss must then be the full one exactly."""

    num_items = 4

    def sample(self, device=None):
        return torch.arange(4, device=device), torch.zeros(4, device=device)


@pytest.mark.parametrize("objective, exact", [
    (ItemHeadObjective("chunked", chunk=3), False),
    (ItemHeadObjective("sampled", sampler=_AllItems()), False),
    (ItemHeadObjective("sampled", sampler=None), True),  # evaluation: exact (chunked), the sampler is not used
])
def test_bounded_memory_losses_equal_the_full_head_loss(objective, exact):
    head = ItemHeadTargets.from_token_ids(CODES, VOCAB)
    logits = torch.randn(2, 7, VOCAB, generator=torch.Generator().manual_seed(0), requires_grad=True)
    full = F.cross_entropy(_picked(logits), torch.tensor([2, 1, 3]))
    g_full, = torch.autograd.grad(full, logits)
    got = item_head_loss(logits, LABELS, head, objective, exact=exact)
    g_got, = torch.autograd.grad(got, logits)
    assert abs(got.item() - full.item()) < 1e-6
    assert torch.allclose(g_got, g_full, atol=1e-7)


@pytest.mark.parametrize("kind", ["full", "chunked"])
def test_logit_adjustment_adds_the_weighted_log_prior_to_training_logits(kind):
    head = ItemHeadTargets.from_token_ids(CODES, VOCAB)
    counts = torch.tensor([5, 0, 2, 1])  # p_train add-one smoothed: (c + 1) / (8 + 4)
    objective = ItemHeadObjective.build(ItemHeadOptions(loss=kind, logq_weight=0.5), 4, lambda: counts, seed=0)
    prior = 0.5 * torch.log(torch.tensor([6.0, 1.0, 3.0, 2.0]) / 12)
    assert torch.allclose(objective.log_prior, prior)
    logits = torch.randn(2, 7, VOCAB, generator=torch.Generator().manual_seed(1))
    expected = F.cross_entropy(_picked(logits) + prior, torch.tensor([2, 1, 3]))
    assert abs(item_head_loss(logits, LABELS, head, objective).item() - expected.item()) < 1e-6


def test_objective_resolves_auto_and_counts_only_when_popularity_is_needed():
    calls = []

    def counts():
        calls.append(1)
        return torch.tensor([3, 1, 0, 0])

    full = ItemHeadObjective.build(ItemHeadOptions(), 4, counts, seed=0)  # auto, 4 items: full, no prior
    assert (full.kind, full.sampler, full.log_prior, calls) == ("full", None, None, [])
    assert full.record == {"loss": "full", "logq_weight": 0.0}
    uniform = ItemHeadObjective.build(ItemHeadOptions(loss="sampled", negative_alpha=0.0, num_negatives=7), 4,
                                      counts, seed=0)
    assert uniform.sampler.uniform and uniform.sampler.num_negatives == 7 and calls == []
    popular = ItemHeadObjective.build(ItemHeadOptions(loss="sampled", negative_alpha=1.0), 4, counts, seed=0)
    assert calls == [1] and torch.allclose(popular.sampler.log_q.exp().float(), torch.tensor([4, 2, 1, 1]) / 8.0)
    assert popular.record == {"loss": "sampled", "logq_weight": 0.0, "num_negatives": 2048, "negative_alpha": 1.0}


def test_manifest_records_the_resolved_head_loss():
    run_args = SimpleNamespace(item_head_weight=2.0, item_head_decode_weight=1.0)
    objective = ItemHeadObjective.build(ItemHeadOptions(loss="chunked", logq_weight=0.3), 4,
                                        lambda: torch.zeros(4), seed=0)
    assert item_head_manifest(run_args, objective) == {"item_head": {
        "loss_weight": 2.0, "decode_weight": 1.0, "loss": {"loss": "chunked", "logq_weight": 0.3}}}
    assert item_head_manifest(run_args) == {"item_head": {"loss_weight": 2.0, "decode_weight": 1.0}}


def test_item_target_counts_are_the_head_boundaries_of_the_training_labels():
    from datasets import Dataset

    head = ItemHeadTargets.from_token_ids(CODES, VOCAB)
    rows = [LABELS[0].tolist(), LABELS[1, :5].tolist(), [-100, 2, 4, 2, 4, 3]]  # ragged; last: a cut-off cluster
    counts = item_target_counts(Dataset.from_dict({"labels": rows}), head, batch_size=2)
    assert counts.tolist() == [2, 1, 1, 1]
    with pytest.raises(ValueError, match="map-style dataset with labels"):
        item_target_counts(Dataset.from_dict({"input_ids": rows}), head)


def test_config_rejects_bad_item_head_loss_settings():
    from trainer.config import AlignRecTrainArguments

    with pytest.raises(ValueError, match="item_head_loss"):
        AlignRecTrainArguments(item_head_loss="softmax")
    with pytest.raises(ValueError, match="item_head_num_negatives"):
        AlignRecTrainArguments(item_head_num_negatives=0)
    with pytest.raises(ValueError, match="item_head_logq_weight"):
        AlignRecTrainArguments(item_head_logq_weight=-1.0)


# ---- learning ----------------------------------------------------------------------------------------------------
N_ITEMS, CLUSTER0, LEAF0, KEY0 = 12, 300, 310, 50  # item i: cluster 300 + i // 4, own token 310 + i, cue 50 + i


def _rows(repeats) -> tuple[torch.Tensor, torch.Tensor]:
    """``[prompt cue 50+i, 9, cluster, own token, eos]`` per item, ``repeats[i]`` times; only the code is labelled."""
    ids = [[KEY0 + i, 9, CLUSTER0 + i // 4, LEAF0 + i, 0] for i in range(N_ITEMS) for _ in range(repeats[i])]
    input_ids = torch.tensor(ids)
    labels = input_ids.clone()
    labels[:, :2] = -100
    return input_ids, labels


def _head(vocab: int) -> ItemHeadTargets:
    codes = np.array([[CLUSTER0 + i // 4, LEAF0 + i] for i in range(N_ITEMS)])
    return ItemHeadTargets.from_token_ids(codes, vocab)


@pytest.mark.parametrize("options", [ItemHeadOptions(loss="sampled", num_negatives=5, negative_alpha=0.75),
                                     ItemHeadOptions(loss="chunked"),
                                     ItemHeadOptions(loss="sampled", num_negatives=5, logq_weight=1.0)])
def test_tiny_model_learns_the_head_with_a_bounded_memory_loss(options):
    model = build_tiny_llama(400)
    head = _head(400)
    input_ids, labels = _rows([1] * N_ITEMS)
    counts = torch.arange(N_ITEMS)  # a skewed popularity for the proposal and the prior
    objective = ItemHeadObjective.build(options, N_ITEMS, lambda: counts, seed=0)
    objective.chunk = 5  # several chunks over the 12 items

    def exact_ce() -> float:
        with torch.no_grad():
            return item_head_loss(model(input_ids=input_ids).logits, labels, head).item()

    before = exact_ce()
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        loss = item_head_loss(model(input_ids=input_ids).logits, labels, head, objective)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert exact_ce() < 0.5 * before


def test_trainer_resolves_the_head_loss_from_its_prepared_training_set(tmp_path, tiny_hf_tokenizer):
    from datasets import Dataset
    from trl import SFTConfig

    from trainer.trl_trainer import AlignRecSFTTrainer

    repeats = [1 + i % 3 for i in range(N_ITEMS)]
    input_ids, labels = _rows(repeats)
    data = Dataset.from_dict({"input_ids": input_ids.tolist(), "labels": labels.tolist()})
    model = build_tiny_llama(len(tiny_hf_tokenizer))
    head = _head(len(tiny_hf_tokenizer))
    args = SFTConfig(output_dir=str(tmp_path / "run"), max_steps=25, learning_rate=3e-3, per_device_train_batch_size=8,
                     report_to=[], use_cpu=True, bf16=False, dataloader_num_workers=0, seed=0, save_strategy="no",
                     logging_steps=5)
    options = ItemHeadOptions(loss="sampled", num_negatives=5, negative_alpha=1.0, logq_weight=0.5)
    trainer = AlignRecSFTTrainer(model=model, args=args, train_dataset=data, processing_class=tiny_hf_tokenizer,
                                 item_head=head, item_head_weight=1.0, item_head_options=options)
    objective = trainer.item_head_objective
    counts = torch.tensor(repeats, dtype=torch.float64)
    assert objective.kind == "sampled" and objective.sampler.num_negatives == 5
    assert torch.allclose(objective.sampler.log_q.exp(), (counts + 1) / (counts + 1).sum())  # the set's own counts
    assert torch.allclose(objective.log_prior, (0.5 * ((counts + 1) / (counts.sum() + N_ITEMS)).log()).float())

    def exact_ce() -> float:
        with torch.no_grad():
            return item_head_loss(model(input_ids=input_ids).logits, labels, head).item()

    before = exact_ce()
    trainer.train()
    assert exact_ce() < 0.5 * before
