"""Trainer fixtures: a tiny ItemTokenizer and a tiny prompt/completion DatasetDict built from ``tiny_split``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import build_tiny_llama  # noqa: F401  (re-exported for the trainer tests)

REPO_ROOT = str(Path(__file__).resolve().parents[2])

CODEBOOK_SIZES = [4, 4]


def make_item_tokenizer(item_ids: list[str], aligned_dim: int | None = None, shift: int = 0):
    """Codes (i // 4, i % 4) (rotated by ``shift``), optionally with an alignment projection to ``aligned_dim``."""
    from tokenization import ItemTokenizer

    n = len(item_ids)
    codes = np.array([[(i + shift) % n // 4, (i + shift) % n % 4] for i in range(n)], dtype=np.int64)
    tensors = None
    if aligned_dim is not None:
        gen = torch.Generator().manual_seed(1)
        tensors = {
            "codebooks.0": torch.randn(4, 3, generator=gen), "codebooks.1": torch.randn(4, 3, generator=gen),
            # scaled like a real alignment target (mean token embedding of a 0.02-std init)
            "align_proj.weight": 0.01 * torch.randn(aligned_dim, 3, generator=gen),
            "align_proj.bias": 0.01 * torch.randn(aligned_dim, generator=gen),
        }
    return ItemTokenizer.from_codes(item_ids, codes, CODEBOOK_SIZES, tensors=tensors)


def build_task_dataset_dict(split, item_tokenizer, repeat: int = 2):
    """seqrec rows (history codes -> next item codes) for train; the valid targets for validation."""
    import datasets

    def prompt(history: list[str]) -> str:
        return "Recommend the next item. History: " + " ".join(item_tokenizer.item_to_string(i) for i in history) + " Next:"

    train = {"prompt": [], "completion": [], "task": []}
    for _, items in split.train_sequences():
        for pos in range(1, len(items)):
            train["prompt"].append(prompt(items[:pos]))
            train["completion"].append(" " + item_tokenizer.item_to_string(items[pos]))
            train["task"].append("seqrec")
    train = {k: v * repeat for k, v in train.items()}
    valid = {"prompt": [], "completion": [], "task": []}
    for row in split.eval_examples("valid"):
        valid["prompt"].append(prompt(row["history"]))
        valid["completion"].append(" " + item_tokenizer.item_to_string(row["target"]))
        valid["task"].append("seqrec")
    valid["prompt"].append("What is the title of <a_0><b_0>?")
    valid["completion"].append(" Pipette tips")
    valid["task"].append("title")
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(train),
                                 "validation": datasets.Dataset.from_dict(valid)})


def run_entry(monkeypatch, argv: list[str]) -> None:
    """Run trainer/sft.py's main exactly as a launcher would: through sys.argv."""
    from trainer.sft import main

    monkeypatch.setattr(sys, "argv", ["trainer/sft.py", *argv])
    assert main() == 0


def logged(run_dir: Path, key: str) -> dict[int, float]:
    from trainer.callbacks import read_metrics

    return {r["step"]: r[key] for r in read_metrics(run_dir / "metrics.jsonl") if key in r}


@pytest.fixture
def item_tokenizer(tiny_dataset):
    return make_item_tokenizer(tiny_dataset.item_ids(), aligned_dim=64)


@pytest.fixture
def item_tokenizer_dir(tmp_path, item_tokenizer) -> Path:
    return item_tokenizer.save_pretrained(tmp_path / "item_tokenizer")


@pytest.fixture
def task_dataset_dir(tmp_path, tiny_split, item_tokenizer) -> Path:
    path = tmp_path / "tasks"
    build_task_dataset_dict(tiny_split, item_tokenizer).save_to_disk(str(path))
    return path


@pytest.fixture
def base_argv(tiny_model_dir, task_dataset_dir, item_tokenizer_dir, tmp_path) -> list[str]:
    """Flags every tiny run shares; tests append mode / step flags."""
    return [
        "--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(task_dataset_dir),
        "--item_tokenizer_dir", str(item_tokenizer_dir), "--output_dir", str(tmp_path / "run"),
        "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--lr_scheduler_type", "constant",
        "--max_length", "64", "--logging_steps", "1", "--save_strategy", "no", "--eval_strategy", "no",
        "--seed", "0", "--data_seed", "0", "--tensorboard", "false", "--loss_curve", "false",
        "--dataloader_num_workers", "0", "--lora_dropout", "0.0", "--warmup_steps", "0",
    ]
