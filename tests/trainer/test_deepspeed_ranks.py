"""DeepSpeed data parallelism on CPU (gloo): 2 ranks x batch 2 train like 1 rank x batch 4, step for step.

Both runs go through the real launcher (``deepspeed --num_gpus N trainer/sft.py``; on CPU ``--num_gpus`` is the
number of processes) with ZeRO-2, the same tiny model, rows, seed and steps, and the same rows in every global batch:
``train_sampling_strategy sequential`` (no shuffling), and accelerate hands each rank every other per-device batch
of that order (rank 0 rows 4k, 4k+1; rank 1 rows 4k+2, 4k+3), so step k trains on rows 4k..4k+3 in both runs.

The code loss sums token losses over the tokens of the whole global batch (``average_tokens_across_devices``:
``num_items_in_batch`` gathered from every rank, each rank's loss times the world size against DeepSpeed's gradient
average); the rows' completions differ in length, so a rank normalising by its own tokens would show. The item
head is a mean over a rank's item boundaries; every row here has one, so the ranks' means average to the 1-rank
mean. The logged losses and the trained weights must agree.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import CHAT_TEMPLATE, TINY_ITEMS, build_tiny_hf_tokenizer
from tests.trainer.conftest import REPO_ROOT, logged, make_item_tokenizer

ENTRY = str(Path(REPO_ROOT) / "trainer" / "sft.py")
ZERO2 = str(Path(REPO_ROOT) / "ds_configs" / "zero2.json")
GLOBAL_BATCH, STEPS = 4, 8
# Not bit-exact: with 2 ranks the gradients are summed by an all-reduce and the token losses in two partial sums (one
# per rank) added afterwards, while 1 rank sums them in one pass; float32 addition is not associative, so the two
# differ in the last bits, and the difference grows a little through 8 Adam steps. Measured: <= 2e-6 on the losses
# and <= 7e-6 on the weights. Real mismatches measured on the loss: each rank normalising by its own tokens
# (average_tokens_across_devices false) 0.015; a global batch of 2: 0.15; the item head weighted by the world size
# 4.1; the logged item_head_loss of rank 0's rows only 0.18.
LOSS_ATOL = 1e-4
WEIGHT_ATOL = 1e-4

# case -> (flags, item-id-level codes): each runs one loss path of trainer/trl_trainer.py under 2 ranks
CASES = {
    # LoRA + trainable code rows (tied head): the model's own token-normalised loss (Trainer.compute_loss)
    "lora": ([], False),
    # + the flat item head (a per-micro-batch mean added to the code loss), both from the hidden states (chunked)
    "item_head_chunked": (["--item_head_weight", "2", "--lm_loss", "chunked"], True),
}


def _item_id_level_tokenizer(item_ids: list[str]):
    """Codes (cluster i // 4, own token i): the layout an item head needs; codebook vectors for the row init."""
    from tokenization import ItemTokenizer

    n, clusters = len(item_ids), (len(item_ids) + 3) // 4
    gen = torch.Generator().manual_seed(1)
    tensors = {"codebooks.0": torch.randn(clusters, 3, generator=gen), "codebooks.1": torch.randn(n, 3, generator=gen),
               "align_proj.weight": 0.01 * torch.randn(64, 3, generator=gen),
               "align_proj.bias": 0.01 * torch.randn(64, generator=gen)}
    codes = np.stack([np.arange(n) // 4, np.arange(n)], 1).astype(np.int64)
    return ItemTokenizer.from_codes(item_ids, codes, [clusters, n], tensors=tensors)


def _train_rows(split, item_tokenizer, repeat: int = 2) -> dict[str, list[str]]:
    """seqrec rows (history codes -> the next item's code, title and description: one item boundary and a varying
    number of tokens per row), cut to whole global batches (a short last batch would be split unevenly across the
    ranks)."""
    text = {item["item_id"]: item["title"] + (f": {item['description']}" if item["description"] else "")
            for item in TINY_ITEMS}
    rows = {"prompt": [], "completion": [], "task": []}
    for _, items in split.train_sequences():
        for pos in range(1, len(items)):
            history = " ".join(item_tokenizer.item_to_string(i) for i in items[:pos])
            rows["prompt"].append(f"Recommend the next item. History: {history} Next:")
            rows["completion"].append(f" {item_tokenizer.item_to_string(items[pos])} {text[items[pos]]}")
            rows["task"].append("seqrec")
    keep = len(rows["prompt"]) * repeat // GLOBAL_BATCH * GLOBAL_BATCH
    return {k: (v * repeat)[:keep] for k, v in rows.items()}


def _rank_tokens(rows: dict[str, list[str]], item_tokenizer) -> list[tuple[int, int]]:
    """Completion tokens of (rank 0's rows, rank 1's rows) at each step of an epoch."""
    tok = build_tiny_hf_tokenizer(CHAT_TEMPLATE)
    item_tokenizer.add_to_tokenizer(tok)
    lengths = [len(tok(c, add_special_tokens=False).input_ids) for c in rows["completion"]]
    half = GLOBAL_BATCH // 2
    return [(sum(lengths[i:i + half]), sum(lengths[i + half:i + GLOBAL_BATCH]))
            for i in range(0, len(lengths), GLOBAL_BATCH)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(argv: list[str], tmp_path: Path, ranks: int, per_device_batch: int, name: str) -> Path:
    out = tmp_path / name
    argv = [*argv, "--output_dir", str(out), "--per_device_train_batch_size", str(per_device_batch),
            "--train_sampling_strategy", "sequential", "--max_steps", str(STEPS), "--deepspeed", ZERO2]
    # a free rendezvous port: the launcher's default 29500 may be held by another run on the machine
    cmd = [str(Path(sys.executable).with_name("deepspeed")), "--num_gpus", str(ranks), "--master_port",
           str(_free_port()), ENTRY, *argv]
    # CPU processes whatever the machine has: gloo, one thread per rank
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_train_like_one_rank_at_the_same_global_batch(base_argv, tmp_path, tiny_split, case):
    import datasets

    flags, item_id_level = CASES[case]
    ids = tiny_split.dataset.item_ids()
    item_tokenizer = _item_id_level_tokenizer(ids) if item_id_level else make_item_tokenizer(ids, aligned_dim=64)
    rows = _train_rows(tiny_split, item_tokenizer)
    assert all(a != b for a, b in _rank_tokens(rows, item_tokenizer))  # the ranks' token counts differ
    tasks = tmp_path / "tasks_ranks"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tasks))
    argv = [*base_argv, *flags, "--dataset_dir", str(tasks),  # later flags win over base_argv's
            "--item_tokenizer_dir", str(item_tokenizer.save_pretrained(tmp_path / "item_tokenizer_ranks"))]

    one = _launch(argv, tmp_path, ranks=1, per_device_batch=GLOBAL_BATCH, name="one_rank")
    two = _launch(argv, tmp_path, ranks=2, per_device_batch=GLOBAL_BATCH // 2, name="two_ranks")

    for key in ["loss", *(["item_head_loss"] if item_id_level else [])]:
        got_one, got_two = logged(one, key), logged(two, key)
        assert sorted(got_one) == sorted(got_two) == list(range(1, STEPS + 1)), key
        diff = max(abs(got_one[s] - got_two[s]) for s in got_one)
        print(f"{case} {key}: max |1 rank - 2 ranks| = {diff:.3g}")
        assert diff <= LOSS_ATOL, {s: (got_one[s], got_two[s]) for s in got_one}
    assert logged(one, "loss")[STEPS] < logged(one, "loss")[1]  # it trained

    w_one = load_file(str(one / "adapter_model.safetensors"))
    w_two = load_file(str(two / "adapter_model.safetensors"))
    assert w_one.keys() == w_two.keys() and w_one
    weight_diff = max((w_one[k] - w_two[k]).abs().max().item() for k in w_one)
    print(f"{case} weights: max |1 rank - 2 ranks| = {weight_diff:.3g}")
    assert weight_diff <= WEIGHT_ATOL
