"""Packed batches (TRL ``packing``, flattened or ``packed_rows``) give exactly the per-example loss.

On CPU there is no varlen FlashAttention: examples packed into one row stay apart only through the block-diagonal
mask transformers builds from ``position_ids`` that restart at 0. These tests pack real task rows (codes-format
seqrec_full + seqrec, completion-only loss) on a tiny random Llama and check, per attention backend, that the
code loss and the flat item head's loss equal the per-example ones within 1e-5; and that the same batch without
the position restarts does leak (so the check can fail).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import SFTConfig

from trainer.item_head import ItemHeadTargets, item_head_loss
from trainer.item_targets import CodeLevels, count_item_targets

TOL = 1e-5


def _item_tokenizer(item_ids: list[str]):
    """One cluster level + an item-id level (the demo's shape), so the item head applies."""
    from tokenization import ItemTokenizer

    codes = np.array([[i // 4, i] for i in range(len(item_ids))], dtype=np.int64)
    return ItemTokenizer.from_codes(item_ids, codes, [2, len(item_ids)])


def _train_rows(tiny_split, item_tokenizer, hf_tokenizer) -> Dataset:
    from sft_tasks import TaskConfig, build_task_datasets

    cfg = TaskConfig(weights='{"seqrec_full": 1, "seqrec": 1}', prompt_format="codes", max_history=3)
    return build_task_datasets(cfg, tiny_split, item_tokenizer, hf_tokenizer)["train"].select_columns(
        ["prompt", "completion"])


def _sft_args(tmp_path, name: str, **kwargs) -> SFTConfig:
    return SFTConfig(output_dir=str(tmp_path / name), max_length=64, per_device_train_batch_size=2, report_to=[],
                     use_cpu=True, bf16=False, completion_only_loss=True, dataloader_num_workers=0, seed=0,
                     **kwargs)


def _component_sums(model, batch, head: ItemHeadTargets, levels: CodeLevels) -> torch.Tensor:
    """[code loss sum, code tokens, head loss sum, head boundaries] of one batch, from the model's own logits."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits.float()  # [B, T, V]
    labels = batch["labels"]
    shifted = labels[:, 1:]
    code = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1), reduction="sum")
    n_code = (shifted != -100).sum()
    head_mean = item_head_loss(logits, labels, head)
    n_head = count_item_targets(labels, levels)  # 2-token codes: a boundary = an item whose codes carry loss
    head_sum = head_mean * n_head if head_mean is not None else torch.tensor(0.0)
    return torch.stack([code, n_code.float(), head_sum, torch.tensor(float(n_head))])


@pytest.fixture
def packed_setup(tmp_path, tiny_model_dir, tiny_split):
    """A built model (peft-wrapped for LoRA), its tokenizer and the tasks' rows; one per test."""

    def build(finetune_mode: str, attn: str, head_weight: float):
        from trainer.config import ModelArguments
        from trainer.model_setup import setup_model
        from trainer.trl_trainer import AlignRecSFTTrainer

        item_tokenizer = _item_tokenizer(tiny_split.dataset.item_ids())
        args = ModelArguments(model_name_or_path=str(tiny_model_dir), finetune_mode=finetune_mode, lora_dropout=0.0,
                              new_rows_init="mean")
        bundle = setup_model(args, item_tokenizer, torch.float32, seed=0)
        bundle.model.set_attn_implementation(attn)
        rows = _train_rows(tiny_split, item_tokenizer, bundle.tokenizer)
        token_ids = item_tokenizer.item_token_ids(bundle.tokenizer)
        head = ItemHeadTargets.from_token_ids(token_ids, len(bundle.tokenizer))
        levels = CodeLevels.from_token_ids(token_ids, len(bundle.tokenizer))
        common = dict(processing_class=bundle.tokenizer, item_head=head if head_weight else None,
                      item_head_weight=head_weight)
        ref = AlignRecSFTTrainer(model=bundle.model, args=_sft_args(tmp_path, "ref"), train_dataset=rows,
                                 peft_config=bundle.peft_config, **common)
        model = ref.model
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():  # move every trained weight off its start (LoRA B = 0 would hide the adapters)
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=gen))
        model.eval()
        flat = AlignRecSFTTrainer(model=model, args=_sft_args(tmp_path, "flat", packing=True), train_dataset=rows,
                                  **common)
        packed_rows = AlignRecSFTTrainer(model=model, args=_sft_args(tmp_path, "rows", packing=True),
                                         train_dataset=rows, packed_rows=True, **common)
        return model, (head, levels), ref, flat, packed_rows

    return build


def _whole(trainer) -> dict:
    data = trainer.train_dataset
    return trainer.data_collator([data[i] for i in range(len(data))])


@pytest.mark.parametrize(("finetune_mode", "head_weight"), [("lora", 2.0), ("full", 0.0)])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_per_example_loss(packed_setup, finetune_mode, head_weight, attn):
    model, lookups, ref, flat, packed_rows = packed_setup(finetune_mode, attn, head_weight)
    examples = [ref.train_dataset[i] for i in range(len(ref.train_dataset))]
    flat_batch, rows_batch = _whole(flat), _whole(packed_rows)
    assert flat_batch["input_ids"].shape[0] == 1 and "attention_mask" not in flat_batch  # TRL: one flat sequence
    assert rows_batch["input_ids"].shape[0] > 1 and "attention_mask" not in rows_batch
    assert len(flat.train_dataset) < len(examples)  # several examples share a packed row
    with torch.no_grad():
        # the reference: every example alone, no padding at all
        per_example = sum(_component_sums(model, ref.data_collator([e]), *lookups) for e in examples)
        assert per_example[1] > 0 and per_example[3] > 0  # code tokens and item boundaries are supervised
        for batch in (flat_batch, rows_batch, ref.data_collator(examples)):  # packed flat, packed rows, padded
            got = _component_sums(model, batch, *lookups)
            assert torch.equal(got[[1, 3]], per_example[[1, 3]])  # the same supervised tokens and boundaries
            assert abs(got[0] / got[1] - per_example[0] / per_example[1]) < TOL
            assert abs(got[2] / got[3] - per_example[2] / per_example[3]) < TOL
        # the trainer's loss (code loss + weight x item head) is the same on every layout
        expected = per_example[0] / per_example[1] + head_weight * per_example[2] / per_example[3]
        for trainer, batch in ((ref, ref.data_collator(examples)), (flat, flat_batch), (packed_rows, rows_batch)):
            assert abs(float(trainer.compute_loss(model, dict(batch))) - float(expected)) < TOL


def test_packing_without_position_restarts_leaks(packed_setup):
    """The control: the same flat batch with positions 0..T-1 lets examples attend to each other."""
    model, lookups, ref, flat, _ = packed_setup("lora", "sdpa", 0.0)
    batch = _whole(flat)
    leaky = {**batch, "position_ids": torch.arange(batch["input_ids"].shape[1])[None]}
    with torch.no_grad():
        exact, leaked = _component_sums(model, batch, *lookups), _component_sums(model, leaky, *lookups)
    assert abs(exact[0] / exact[1] - leaked[0] / leaked[1]) > 1e-3


def test_packed_rows_collator_restarts_positions_and_masks_first_labels():
    from trainer.packing import PackedRowsCollator

    collate = PackedRowsCollator(pad_token_id=0)
    out = collate([{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, -100, 9], "seq_lengths": [3, 2]},
                   {"input_ids": [4, 4], "labels": [4, 4], "seq_lengths": [2]}])
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9], [4, 4, 0, 0, 0]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, 4, -100, -100, -100]]
    assert set(out) == {"input_ids", "labels", "position_ids"}


def test_packed_rows_needs_packing(tmp_path, tiny_model_dir, tiny_split):
    from trainer.config import ModelArguments
    from trainer.model_setup import setup_model
    from trainer.trl_trainer import AlignRecSFTTrainer

    item_tokenizer = _item_tokenizer(tiny_split.dataset.item_ids())
    bundle = setup_model(ModelArguments(model_name_or_path=str(tiny_model_dir), finetune_mode="full"),
                         item_tokenizer, torch.float32)
    rows = _train_rows(tiny_split, item_tokenizer, bundle.tokenizer)
    with pytest.raises(ValueError, match="packing: true"):
        AlignRecSFTTrainer(model=bundle.model, args=_sft_args(tmp_path, "x"), train_dataset=rows,
                           processing_class=bundle.tokenizer, packed_rows=True)
