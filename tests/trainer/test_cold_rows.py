"""``cold_rows: fitted`` (issue 31): the cold items' own-token rows become a ridge map of their vectors fitted on the
warm items' trained rows, in a plain model and through peft's trainable tokens (kept by save / load); warm rows
and every other token are untouched; items that share their last token are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recdata.errors import UserError
from trainer.cold_rows import fill_cold_rows, read_rows, write_rows

COLD = ["i3", "i6"]


@pytest.fixture
def items():
    return [f"i{n}" for n in range(8)]


@pytest.fixture
def setup(tiny_model_dir, items):
    """``build(finetune_mode)``: (model, hf tokenizer, item tokenizer with an item-id level, own tokens)."""
    from tests.trainer.test_lm_loss import _item_tokenizer
    from trainer.config import ModelArguments
    from trainer.model_setup import setup_model

    item_tokenizer = _item_tokenizer(items)

    def build(finetune_mode: str):
        args = ModelArguments(model_name_or_path=str(tiny_model_dir), finetune_mode=finetune_mode,
                              new_rows_init="mean")
        bundle = setup_model(args, item_tokenizer, torch.float32, seed=0)
        model = bundle.model
        if bundle.peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, bundle.peft_config)
        own = torch.as_tensor(np.asarray(item_tokenizer.item_token_ids(bundle.tokenizer))[:, -1])
        return model, bundle.tokenizer, item_tokenizer, own

    return build


def _planted(model, own: torch.Tensor, items: list[str]):
    """Item vectors, and warm rows set to an exact affine map of them (the map ``fill`` should recover)."""
    gen = torch.Generator().manual_seed(0)
    vectors = torch.randn(len(items), 5, generator=gen).double()
    width = model.get_input_embeddings().weight.shape[1]
    weight, bias = torch.randn(5, width, generator=gen).double(), torch.randn(width, generator=gen).double()
    rows = (vectors @ weight + bias).float()
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        write_rows(module, own, rows)
    return vectors.numpy(), rows


@pytest.mark.parametrize("finetune_mode", ["full", "lora"])
def test_cold_rows_are_the_warm_rows_map_of_their_vectors(setup, items, finetune_mode, tmp_path):
    model, hf_tokenizer, item_tokenizer, own = setup(finetune_mode)
    vectors, planted = _planted(model, own, items)
    cold = torch.tensor([i in COLD for i in items])
    scrambled = planted.clone()
    scrambled[cold] = 50.0  # what training left: rows nowhere near the trained ones
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        write_rows(module, own, scrambled)
    every = torch.arange(model.get_input_embeddings().weight.shape[0])
    before = {name: read_rows(m, every) for name, m in (("in", model.get_input_embeddings()),
                                                       ("out", model.get_output_embeddings()))}
    record = fill_cold_rows(model, item_tokenizer, hf_tokenizer, items[::-1], vectors[::-1], COLD)
    assert record["items"] == 2 and set(record) == {"items", "input", "output"}
    assert record["input"]["warm_r2"] > 0.999 and record["input"]["alpha"] <= 0.01  # an exact map is found
    for name, module in (("in", model.get_input_embeddings()), ("out", model.get_output_embeddings())):
        after = read_rows(module, every)
        assert torch.allclose(after[own[cold]], planted[cold], atol=0.05)  # the map recovered, to the ridge shrink
        untouched = torch.ones(len(every), dtype=torch.bool)
        untouched[own[cold]] = False
        assert torch.equal(after[untouched], before[name][untouched])  # warm items, clusters, the LLM's own vocab
    looked_up = model.get_input_embeddings()(own[cold])  # what the forward reads
    assert torch.allclose(looked_up, planted[cold], atol=0.05)
    if finetune_mode == "lora":  # the adapter's saved trainable tokens carry the rows
        from peft import PeftModel

        model.save_pretrained(tmp_path / "adapter")
        fresh, _, _, _ = setup("full")  # same base (same seed), the adapter's rows loaded over it
        loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
        assert torch.allclose(loaded.get_input_embeddings()(own[cold]), looked_up, atol=1e-6)


def test_no_cold_item_changes_nothing(setup, items):
    model, hf_tokenizer, item_tokenizer, own = setup("full")
    before = model.get_input_embeddings().weight.detach().clone()
    vectors = np.random.default_rng(0).normal(size=(len(items), 4))
    assert fill_cold_rows(model, item_tokenizer, hf_tokenizer, items, vectors, []) == {"items": 0}
    assert torch.equal(model.get_input_embeddings().weight, before)


def test_shared_last_tokens_and_missing_vectors_are_refused(setup, items):
    from tokenization import ItemTokenizer

    model, hf_tokenizer, item_tokenizer, _ = setup("full")
    vectors = np.random.default_rng(0).normal(size=(len(items), 4))
    shared = ItemTokenizer.from_codes(items, np.array([[i // 4, i % 4] for i in range(len(items))]), [2, len(items)])
    with pytest.raises(UserError, match="item_id_level"):
        fill_cold_rows(model, shared, hf_tokenizer, items, vectors, COLD)
    with pytest.raises(UserError, match="lack 1 tokenizer item"):
        fill_cold_rows(model, item_tokenizer, hf_tokenizer, items[1:], vectors[1:], COLD)


def test_resolve_cold_rows():
    from trainer.cold_rows import resolve_cold_rows

    assert resolve_cold_rows("auto", "pretrained", True) == "fitted"
    assert resolve_cold_rows("auto", "pretrained", False) == "start"  # no vectors or no own tokens: nothing to fit
    assert resolve_cold_rows("auto", "scratch", True) == "start"
    assert resolve_cold_rows("fitted", "scratch", False) == "fitted"  # explicit: refused later if it cannot fit
    with pytest.raises(ValueError, match="cold_rows must be one of"):
        resolve_cold_rows("ridge", "pretrained", True)


def train_cold_run(monkeypatch, tmp_path: Path, tiny_model_dir: Path, tiny_split, finetune_mode: str = "lora",
                   cold_rows: str = "auto", name: str = "run") -> dict:
    """Train the entry point 2 steps on the tiny split under the protocol (an item-id level, random item vectors);
    returns the folders and what the run was made from."""
    from recdata.cold_items import cold_item_split, items_without_training
    from sft_tasks.formatting import DEFAULT_PROMPT_FORMAT
    from tests.trainer.conftest import build_task_dataset_dict, run_entry
    from tests.trainer.test_lm_loss import _item_tokenizer

    split = cold_item_split(tiny_split, 0.25, seed=3)
    cold = items_without_training(split)
    item_tokenizer = _item_tokenizer(split.dataset.item_ids())
    tasks = tmp_path / "tasks"
    if not tasks.exists():
        build_task_dataset_dict(split, item_tokenizer).save_to_disk(str(tasks))
        (tasks / "tasks_manifest.json").write_text(json.dumps({"prompt_format": DEFAULT_PROMPT_FORMAT,
                                                               "items_without_training": cold}))
    vectors_dir = tmp_path / "vectors"
    vectors = np.random.default_rng(0).normal(size=(len(item_tokenizer.item_ids), 6)).astype(np.float32)
    if not vectors_dir.exists():
        vectors_dir.mkdir()
        np.save(vectors_dir / "vectors.npy", vectors)
        (vectors_dir / "item_ids.json").write_text(json.dumps(list(item_tokenizer.item_ids)))
    out = tmp_path / name
    run_entry(monkeypatch, [
        "--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(tasks),
        "--item_tokenizer_dir", str(item_tokenizer.save_pretrained(tmp_path / "item_tokenizer")),
        "--output_dir", str(out), "--finetune_mode", finetune_mode, "--new_rows_init", "item_vectors",
        "--item_vectors_dir", str(vectors_dir), "--cold_rows", cold_rows, "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--max_length", "64",
        "--save_strategy", "no", "--eval_strategy", "no", "--seed", "0", "--tensorboard", "false",
        "--loss_curve", "false", "--dataloader_num_workers", "0"])
    return {"model_dir": out, "split": split, "cold": cold, "vectors": vectors, "vectors_dir": vectors_dir}


@pytest.mark.parametrize("finetune_mode", ["lora", "full"])
def test_trained_run_carries_fitted_cold_rows(monkeypatch, tmp_path, tiny_model_dir, tiny_split, finetune_mode):
    """The entry point under the protocol: the saved model's cold own-token rows are the ridge map of their vectors
    fitted on the saved warm rows (read back through load_for_inference), and the manifest says so."""
    from recdata.ridge_fill import ridge_fill
    from trainer import load_for_inference

    run = train_cold_run(monkeypatch, tmp_path, tiny_model_dir, tiny_split, finetune_mode)
    cold, vectors, out = run["cold"], run["vectors"], run["model_dir"]
    record = json.loads((out / "alignrec_train.json").read_text())["cold_rows"]
    assert record["mode"] == "fitted" and record["items"] == len(cold)  # auto: a pretrained model with vectors
    model, hf_tokenizer, saved = load_for_inference(out, device="cpu")
    own = torch.as_tensor(np.asarray(saved.item_token_ids(hf_tokenizer))[:, -1])
    is_cold = np.isin(np.asarray(saved.item_ids, dtype=object), np.asarray(cold, dtype=object))
    rows = model.get_input_embeddings()(own).detach().double().numpy()
    expected, _ = ridge_fill(vectors.astype(np.float64), rows, is_cold)  # the warm rows as saved predict the cold
    assert np.allclose(rows[is_cold], expected[is_cold], atol=1e-4)
