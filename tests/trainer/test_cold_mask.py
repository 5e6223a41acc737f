"""The LLM under the cold-item protocol (issue 31): the tasks build records the items without training, the trainer
turns them into an item mask (the item head) and a token mask (the code loss: their own item-id tokens only), both
losses equal a brute-force CE over the kept columns, a trained model leaves the masked rows where they started, and
the run manifest says what was masked. Without the protocol nothing is recorded and nothing is masked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recdata.cold_items import cold_item_split, items_without_training
from recdata.errors import InputFileError
from trainer.cold_mask import ColdItemMask, read_cold_item_mask
from trainer.item_head import ItemHeadObjective, ItemHeadTargets, item_head_loss, item_head_loss_from_hidden
from trainer.lm_loss import chunked_lm_loss, logits_lm_loss

# vocab: 0 pad, 1 eos, 2-3 clusters, 4-7 the items' own tokens; items (cluster, own): (2,4) (2,5) (3,6) (3,7)
CODES = np.array([[2, 4], [2, 5], [3, 6], [3, 7]])
VOCAB = 8
LABELS = torch.tensor([[-100, -100, 3, 6, 2, 5, 1], [-100, -100, 2, 4, 1, -100, -100]])  # item targets 2, 1, 0


@pytest.fixture
def cold_split(tiny_split):
    return cold_item_split(tiny_split, 0.25, seed=3)


def test_mask_leaves_out_the_item_id_tokens_only_cold_items_use():
    mask = ColdItemMask.build(["b", "d"], ["a", "b", "c", "d"], CODES, VOCAB)
    assert mask.items.tolist() == [False, True, False, True]
    assert mask.tokens.nonzero().squeeze(1).tolist() == [5, 7]  # their own tokens; clusters 2, 3 are shared
    both = ColdItemMask.build(["c", "d"], ["a", "b", "c", "d"], CODES, VOCAB)  # cluster 3 holds cold items only
    assert both.tokens.nonzero().squeeze(1).tolist() == [3, 6, 7]
    assert mask.manifest() == {"cold_items": {"masked_items": 2, "masked_tokens": 2}}
    with pytest.raises(InputFileError, match="no code in the item tokenizer"):
        ColdItemMask.build(["zz"], ["a", "b", "c", "d"], CODES, VOCAB)
    with pytest.raises(ValueError, match="at least one item"):
        ColdItemMask.build(["a", "b", "c", "d"], ["a", "b", "c", "d"], CODES, VOCAB)


def _brute_force(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Per row: CE over the kept columns plus the row's own target."""
    losses = []
    for row, target in enumerate(targets.tolist()):
        keep = [i for i in range(logits.shape[1]) if not masked[i] or i == target]
        losses.append(F.cross_entropy(logits[row, keep].unsqueeze(0), torch.tensor([keep.index(target)])))
    return torch.stack(losses)


@pytest.mark.parametrize("num_items", [None, 13])
def test_code_loss_with_the_mask_is_ce_over_the_kept_tokens(num_items):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(VOCAB, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(VOCAB, generator=gen, dtype=torch.float64)
    masked = torch.zeros(VOCAB, dtype=torch.bool)
    masked[[4, 7]] = True  # item 0's own token is a target (row 1): it keeps its logit there
    logits = hidden @ weight.T + bias  # [2, 7, V]
    shifted = LABELS[:, 1:]
    keep = shifted != -100
    expected = _brute_force(logits[:, :-1][keep], shifted[keep], masked).sum() / (num_items or int(keep.sum()))
    chunked = chunked_lm_loss(hidden, weight, LABELS, bias, num_items, chunk=3, masked=masked)
    from_logits = logits_lm_loss(logits, LABELS, masked, num_items)
    assert abs(chunked.item() - expected.item()) < 1e-5 and abs(from_logits.item() - expected.item()) < 1e-5
    grad = torch.autograd.grad(chunked, weight)[0]
    assert torch.isfinite(grad).all() and torch.equal(grad[7], torch.zeros_like(grad[7]))  # never a target
    assert (grad[~masked].abs().sum(1) > 0).all()
    plain = chunked_lm_loss(hidden, weight, LABELS, bias, num_items, chunk=3)  # no mask: the model's own loss
    assert abs(plain.item() - F.cross_entropy(logits[:, :-1][keep], shifted[keep], reduction="sum").item()
               / (num_items or int(keep.sum()))) < 1e-9


class _AllItems:
    num_items = 4

    def sample(self, device=None):
        return torch.arange(4, device=device), torch.zeros(4, device=device)


@pytest.mark.parametrize("kind", ["full", "chunked", "sampled"])
def test_item_head_with_the_mask_is_ce_over_the_kept_items(kind):
    head = ItemHeadTargets.from_token_ids(CODES, VOCAB)
    masked = torch.tensor([False, False, False, True])  # item 3 is cold; targets are items 2, 1, 0
    objective = ItemHeadObjective(kind, sampler=_AllItems(), masked=masked)
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 7, 5, generator=gen, requires_grad=True)
    weight = torch.randn(VOCAB, 5, generator=gen, requires_grad=True)
    logits = hidden @ weight.T
    picked = torch.stack([logits[0, 1, 4:8], logits[0, 3, 4:8], logits[1, 1, 4:8]])  # the three boundaries
    expected = F.cross_entropy(picked[:, :3], torch.tensor([2, 1, 0]))  # the warm items only
    from_logits = item_head_loss(logits, LABELS, head, objective)
    from_hidden = item_head_loss_from_hidden(hidden, weight, None, LABELS, head, objective)
    assert abs(from_logits.item() - expected.item()) < 1e-5 and abs(from_hidden.item() - expected.item()) < 1e-5
    grad = torch.autograd.grad(from_hidden, weight)[0]
    assert torch.equal(grad[7], torch.zeros_like(grad[7])) and (grad[4:7].abs().sum(1) > 0).all()


def test_tasks_build_records_the_cold_items_under_the_protocol_only(tmp_path, tiny_split, cold_split,
                                                                    tiny_hf_tokenizer):
    from sft_tasks import TaskConfig, read_build_cold_items
    from sft_tasks.builder import write_tasks
    from tests.trainer.conftest import make_item_tokenizer

    item_tokenizer = make_item_tokenizer(tiny_split.dataset.item_ids())
    cfg = TaskConfig(weights='{"seqrec": 1}', prompt_format="codes", max_history=3)
    stats = write_tasks(cfg, cold_split, item_tokenizer, tiny_hf_tokenizer, tmp_path / "cold")
    assert read_build_cold_items(tmp_path / "cold") == items_without_training(cold_split)
    assert stats["build"]["items_without_training"] == len(items_without_training(cold_split))
    write_tasks(cfg, tiny_split, item_tokenizer, tiny_hf_tokenizer, tmp_path / "plain")
    assert read_build_cold_items(tmp_path / "plain") is None  # never bought items are not cold: nothing masked
    manifest = json.loads((tmp_path / "plain" / "tasks_manifest.json").read_text())
    assert "items_without_training" not in manifest
    assert read_cold_item_mask(tmp_path / "plain", item_tokenizer, tiny_hf_tokenizer, 100) is None


@pytest.fixture
def build_cold_trainer(tmp_path, tiny_model_dir, cold_split):
    """``build(lm_loss, head_weight)``: a tiny full fine-tune on the cold split's tasks with the cold mask."""
    from trl import SFTConfig

    from sft_tasks import TaskConfig, build_task_datasets
    from tests.trainer.test_lm_loss import _item_tokenizer
    from trainer.config import ModelArguments
    from trainer.model_setup import setup_model
    from trainer.trl_trainer import AlignRecSFTTrainer

    item_tokenizer = _item_tokenizer(cold_split.dataset.item_ids())  # a cluster level + an item-id level

    def build(lm_loss: str, head_weight: float):
        args = ModelArguments(model_name_or_path=str(tiny_model_dir), finetune_mode="full", new_rows_init="mean")
        bundle = setup_model(args, item_tokenizer, torch.float32, seed=0)
        cfg = TaskConfig(weights='{"seqrec_full": 1, "seqrec": 1}', prompt_format="codes", max_history=3)
        data = build_task_datasets(cfg, cold_split, item_tokenizer, bundle.tokenizer)
        rows = data["train"].select_columns(["prompt", "completion"])
        held_out = data["validation"].select_columns(["prompt", "completion"])  # cold targets among them
        token_ids = item_tokenizer.item_token_ids(bundle.tokenizer)
        mask = ColdItemMask.build(items_without_training(cold_split), item_tokenizer.item_ids, token_ids,
                                  bundle.model.get_output_embeddings().weight.shape[0])
        sft = SFTConfig(output_dir=str(tmp_path / lm_loss), max_length=64, per_device_train_batch_size=4,
                        report_to=[], use_cpu=True, bf16=False, completion_only_loss=True, dataloader_num_workers=0,
                        seed=0, data_seed=0, max_steps=3, learning_rate=5e-3, lr_scheduler_type="constant",
                        logging_steps=1, save_strategy="no", per_device_eval_batch_size=4, weight_decay=0.0)
        trainer = AlignRecSFTTrainer(
            model=bundle.model, args=sft, train_dataset=rows, eval_dataset=held_out,
            processing_class=bundle.tokenizer, lm_loss=lm_loss, cold_mask=mask,
            item_head=ItemHeadTargets.from_token_ids(token_ids, len(bundle.tokenizer)) if head_weight else None,
            item_head_weight=head_weight)
        return trainer, mask, torch.as_tensor(token_ids[:, -1])

    return build


@pytest.mark.parametrize("head_weight", [0.0, 1.0])
def test_trained_model_keeps_the_cold_rows_and_full_matches_chunked(build_cold_trainer, head_weight):
    runs = {}
    for lm_loss in ("full", "chunked"):
        trainer, mask, own_tokens = build_cold_trainer(lm_loss, head_weight)
        head = trainer.model.get_output_embeddings().weight
        rows = mask.tokens.nonzero().squeeze(1)
        assert rows.tolist() == sorted(own_tokens[mask.items].tolist())  # exactly the cold items' own tokens
        before = head.detach().clone()
        trainer.train()
        after = trainer.model.get_output_embeddings().weight.detach()
        assert torch.equal(after[rows], before[rows])  # no gradient: the starting rows stay
        assert all(not torch.equal(after[t], before[t]) for t in own_tokens[~mask.items].tolist())  # warm ones train
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        evaluation = trainer.evaluate()["eval_loss"]
        assert len(losses) == 3 and np.isfinite(losses).all() and np.isfinite(evaluation)
        runs[lm_loss] = (losses, evaluation)
    assert np.allclose(runs["full"][0], runs["chunked"][0], rtol=0, atol=1e-5)
    assert abs(runs["full"][1] - runs["chunked"][1]) < 1e-5


def test_entry_point_records_the_mask_in_the_run_manifest(monkeypatch, base_argv, task_dataset_dir, tmp_path,
                                                          cold_split):
    from sft_tasks.formatting import DEFAULT_PROMPT_FORMAT
    from tests.trainer.conftest import run_entry

    cold = items_without_training(cold_split)
    (task_dataset_dir / "tasks_manifest.json").write_text(json.dumps(
        {"prompt_format": DEFAULT_PROMPT_FORMAT, "items_without_training": cold}))
    run_entry(monkeypatch, [*base_argv, "--max_steps", "2"])
    manifest = json.loads((tmp_path / "run" / "alignrec_train.json").read_text())
    # the fixture's codes (i // 4, i % 4) have no item-id level: only tokens no warm item shares are left out
    assert manifest["cold_items"]["masked_items"] == len(cold) and manifest["cold_items"]["masked_tokens"] >= 0
    assert manifest["cold_rows"] == {"mode": "start"}  # auto without item vectors or own tokens: nothing to fit
