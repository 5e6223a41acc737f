"""Config parsing, code-row initialisation, completion-only labels and the mismatch guards (no training)."""

from __future__ import annotations

import pytest
import torch

from tests.trainer.conftest import build_tiny_llama, make_item_tokenizer


def test_yaml_cli_precedence_unknown_keys_and_local_rank(tmp_path, monkeypatch):
    from trainer.config import parse_train_config
    from trainer.launch import prepare_launch

    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset_dir: d\nitem_tokenizer_dir: t\nlora_r: 4\nlearning_rate: 0.1\nmax_length: 32\n")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    argv = prepare_launch(["--local_rank=0", "--config", str(cfg), "--lora_r", "8", "--output_dir", str(tmp_path),
                           "--local_rank", "0"])
    assert "--local_rank" not in " ".join(argv)
    model, data, run, sft = parse_train_config(argv)
    assert (model.lora_r, sft.learning_rate, sft.max_length, data.dataset_dir) == (8, 0.1, 32, "d")
    assert sft.bf16 is False and run.precision == "auto"  # CPU default, never bf16 without a GPU
    cfg.write_text("dataset_dir: d\nitem_tokenizer_dir: t\nlora_rank: 4\n")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['lora_rank'\]"):
        parse_train_config(["--config", str(cfg)])
    with pytest.raises(ValueError, match="finetune_mode=full"):
        parse_train_config(["--dataset_dir", "d", "--item_tokenizer_dir", "t", "--model_init", "scratch"])


@pytest.mark.parametrize("tied", [True, False])
def test_code_rows_init_from_codebook_and_mean(tiny_chat_tokenizer, tiny_dataset, tied):
    from trainer.model_setup import add_code_tokens, init_code_rows

    itok = make_item_tokenizer(tiny_dataset.item_ids(), aligned_dim=64)
    for mode in ("codebook", "mean"):
        tok = build_tok(tiny_chat_tokenizer)
        model = build_tiny_llama(len(tok), tie_word_embeddings=tied)
        getters = [model.get_input_embeddings] + ([] if tied else [model.get_output_embeddings])
        olds = [g().weight.detach().clone() for g in getters]
        ids = add_code_tokens(model, tok, itok)
        assert ids == list(range(len(olds[0]), len(olds[0]) + 8)) and getters[0]().weight.shape[0] == len(tok)
        assert init_code_rows(model, ids, itok, mode, noise=0.0) == mode
        for get, old in zip(getters, olds, strict=True):
            w = get().weight.detach()
            expected = itok.code_token_embeddings() if mode == "codebook" else old.mean(0).expand(8, -1)
            torch.testing.assert_close(w[ids], expected)
            torch.testing.assert_close(w[: ids[0]], old, rtol=0, atol=0)


def build_tok(tok):
    import copy

    return copy.deepcopy(tok)


def test_codebook_init_width_mismatch(tiny_chat_tokenizer, tiny_dataset):
    from trainer.model_setup import add_code_tokens, init_code_rows

    itok = make_item_tokenizer(tiny_dataset.item_ids(), aligned_dim=32)  # aligned to a different LLM width
    tok = build_tok(tiny_chat_tokenizer)
    model = build_tiny_llama(len(tok))
    ids = add_code_tokens(model, tok, itok)
    with pytest.raises(ValueError, match="different LLM width"):
        init_code_rows(model, ids, itok, "codebook", noise=0.1)
    with pytest.raises(ValueError, match="resolve auto first"):
        init_code_rows(model, ids, itok, "auto", noise=0.1)
    no_proj = make_item_tokenizer(tiny_dataset.item_ids())
    with pytest.raises(ValueError, match="no alignment projection"):
        init_code_rows(model, ids, no_proj, "codebook", noise=0.1)


def test_labels_cover_completion_only(tiny_model_dir, item_tokenizer, tmp_path):
    import datasets
    from trl import SFTConfig

    from trainer.config import ModelArguments
    from trainer.model_setup import setup_model
    from trainer.trl_trainer import AlignRecSFTTrainer

    bundle = setup_model(ModelArguments(model_name_or_path=str(tiny_model_dir)), item_tokenizer, torch.float32)
    completion = " " + item_tokenizer.item_to_string("i4")
    train = datasets.Dataset.from_dict({"prompt": ["History: <a_0><b_1> Next:"], "completion": [completion]})
    args = SFTConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to=[], completion_only_loss=True,
                     max_length=64)
    trainer = AlignRecSFTTrainer(model=bundle.model, args=args, train_dataset=train,
                                 processing_class=bundle.tokenizer, peft_config=bundle.peft_config)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    supervised = labels[labels != -100].tolist()
    assert bundle.tokenizer.decode(supervised) == completion + bundle.tokenizer.eos_token
    code_ids = set(bundle.code_token_ids)
    assert sum(t in code_ids for t in supervised) == 2  # the two code tokens of i4 are single tokens


def _fake_run(tmp_path, model_dir, itok):
    """A finished full-model run folder, written with the same functions as a real run."""
    from recdata.io import atomic_write_json
    from trainer.config import ModelArguments
    from trainer.export import ITEM_TOKENIZER_DIR, MANIFEST_FILE, build_manifest
    from trainer.model_setup import setup_model

    bundle = setup_model(ModelArguments(model_name_or_path=str(model_dir), finetune_mode="full"), itok, torch.float32)
    run = tmp_path / "run"
    bundle.model.save_pretrained(run)
    bundle.tokenizer.save_pretrained(run)
    itok.save_pretrained(run / ITEM_TOKENIZER_DIR)
    rows = bundle.model.get_input_embeddings().weight.shape[0]
    atomic_write_json(run / MANIFEST_FILE, build_manifest("full", str(model_dir), itok, bundle.code_token_ids, rows))
    return run, bundle


def test_load_guards(tmp_path, tiny_model_dir, tiny_dataset, item_tokenizer):
    import shutil

    from transformers import AutoTokenizer

    from trainer import load_for_inference
    from trainer.export import ITEM_TOKENIZER_DIR, MANIFEST_FILE, check_code_ids, read_manifest

    run, bundle = _fake_run(tmp_path, tiny_model_dir, item_tokenizer)
    model, tok, itok = load_for_inference(run, device="cpu")
    assert not model.training and itok.content_hash == item_tokenizer.content_hash
    other = make_item_tokenizer(tiny_dataset.item_ids(), shift=1)  # same grid, different item -> code map
    with pytest.raises(ValueError, match="ItemTokenizer mismatch"):
        load_for_inference(run, device="cpu", item_tokenizer=other)
    shifted = AutoTokenizer.from_pretrained(tiny_model_dir)
    shifted.add_tokens(["<extra>"])
    item_tokenizer.add_to_tokenizer(shifted)  # code tokens one id later than the weights expect
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        check_code_ids(read_manifest(run), shifted, item_tokenizer, "test")
    shutil.rmtree(run / ITEM_TOKENIZER_DIR)
    other.save_pretrained(run / ITEM_TOKENIZER_DIR)  # a swapped-in index
    with pytest.raises(ValueError, match="ItemTokenizer mismatch"):
        load_for_inference(run, device="cpu")
    (run / MANIFEST_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="not a finished alignrec training run"):
        load_for_inference(run, device="cpu")


def test_setup_refuses_extended_tokenizer_and_resume_with_other_index(tmp_path, tiny_model_dir, item_tokenizer,
                                                                       tiny_dataset):
    from recdata.io import atomic_write_json
    from trainer.config import ModelArguments
    from trainer.model_setup import setup_model
    from trainer.train import RESOLVED_CONFIG_FILE, guard_output_dir

    run, _ = _fake_run(tmp_path, tiny_model_dir, item_tokenizer)
    with pytest.raises(ValueError, match="already holds code tokens"):
        setup_model(ModelArguments(model_name_or_path=str(run)), item_tokenizer, torch.float32)
    atomic_write_json(run / RESOLVED_CONFIG_FILE, {"item_tokenizer_hash": item_tokenizer.content_hash})
    other = make_item_tokenizer(tiny_dataset.item_ids(), shift=1)
    guard_output_dir(run, item_tokenizer.content_hash, resume="x")  # same index: fine
    with pytest.raises(ValueError, match="cannot resume"):
        guard_output_dir(run, other.content_hash, resume="x")


def test_dataset_contract_errors(tmp_path):
    import datasets

    from trainer.config import DataArguments
    from trainer.train import load_task_datasets

    path = tmp_path / "bad"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["p"], "answer": ["a"]})}).save_to_disk(path)
    with pytest.raises(ValueError, match=r"lacks columns \['completion'\]"):
        load_task_datasets(DataArguments(dataset_dir=str(path), item_tokenizer_dir="x"))
    ok = tmp_path / "ok"
    row = {"prompt": ["p"], "completion": ["c"], "task": ["title"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(row),
                          "validation": datasets.Dataset.from_dict(row)}).save_to_disk(ok)
    with pytest.raises(ValueError, match="no rows of task 'seqrec'"):
        load_task_datasets(DataArguments(dataset_dir=str(ok), item_tokenizer_dir="x"))
    train, evalset = load_task_datasets(DataArguments(dataset_dir=str(ok), item_tokenizer_dir="x", eval_task=""))
    assert train.column_names == ["prompt", "completion"] and len(evalset) == 1


def test_cli_builds_launcher_commands_and_validates_first(capsys):
    import sys

    from alignrec.cli import main
    from trainer.cli import ENTRY, build_command

    rest = ["--config", "c.yaml", "--deepspeed", "ds_configs/zero2.json"]
    assert build_command("python", 0, rest) == [sys.executable, str(ENTRY), *rest]
    assert build_command("torchrun", 2, rest)[2:5] == ["torch.distributed.run", "--nproc_per_node", "2"]
    ds = build_command("deepspeed", 0, rest)
    assert ds[1:4] == ["--num_gpus", "1", str(ENTRY)] and ds[0].endswith("deepspeed")
    assert main(["train", "--dry_run", "--dataset_dir", "d", "--item_tokenizer_dir", "t", "--max_steps", "3"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{ENTRY} --dataset_dir d --item_tokenizer_dir t --max_steps 3")
    # a bad flag is a one-line config error (exit 2) before any launcher starts
    assert main(["train", "--dry_run", "--dataset_dir", "d", "--item_tokenizer_dir", "t", "--bogus", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignrec train: error:") and "--bogus" in err and "\n" not in err


def test_auto_row_start_follows_the_measured_order():
    """auto: scratch -> random; pretrained -> item vectors when given, else the mean row; never the codebook rows
    (last of the LLM path's four cells); an explicit start is kept."""
    from trainer.row_init import resolve_row_init

    assert resolve_row_init("auto", "scratch", has_item_vectors=True) == "random"
    assert resolve_row_init("auto", "pretrained", has_item_vectors=True) == "item_vectors"
    assert resolve_row_init("auto", "pretrained", has_item_vectors=False) == "mean"
    for mode in ("codebook", "mean", "item_vectors", "random"):
        assert resolve_row_init(mode, "pretrained", has_item_vectors=True) == mode


def test_auto_start_on_a_pretrained_model_gives_the_mean_rows_without_vectors(tiny_chat_tokenizer, tiny_dataset):
    """The trainer's own path: an aligned tokenizer of the model's width (codebook rows possible) and no
    item_vectors_dir -> the mean row, not the codebook vectors."""
    from trainer.config import ModelArguments
    from trainer.model_setup import add_code_tokens, start_code_rows

    itok = make_item_tokenizer(tiny_dataset.item_ids(), aligned_dim=64)
    tok = build_tok(tiny_chat_tokenizer)
    model = build_tiny_llama(len(tok))
    old = model.get_input_embeddings().weight.detach().clone()
    ids = add_code_tokens(model, tok, itok)
    args = ModelArguments(finetune_mode="full", new_rows_init="auto", new_rows_noise=0.0)
    assert start_code_rows(model, ids, itok, args) == "mean"
    torch.testing.assert_close(model.get_input_embeddings().weight.detach()[ids], old.mean(0).expand(len(ids), -1))
