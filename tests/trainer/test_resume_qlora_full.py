"""Exact resume, QLoRA on CPU, and from-scratch full fine-tuning with --merge."""

from __future__ import annotations

import json
import shutil

import torch

from tests.trainer.conftest import logged, run_entry


def test_resume_reproduces_uninterrupted_run(monkeypatch, base_argv, tmp_path):
    argv = [*base_argv, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--lora_dropout", "0.1"]
    run_entry(monkeypatch, argv)
    run = tmp_path / "run"
    full = logged(run, "loss")
    assert sorted(full) == [1, 2, 3, 4, 5, 6] and (run / "checkpoint-3").is_dir()
    shutil.rmtree(run / "checkpoint-6")  # as if the job died after step 5
    run_entry(monkeypatch, [*argv, "--resume_from_checkpoint", "last"])
    resumed = logged(run, "loss")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]  # metrics.jsonl: rows after step 3 replaced, not duplicated
    for step in (4, 5, 6):  # same data order, same dropout RNG, same optimizer state
        assert abs(resumed[step] - full[step]) <= 1e-5, (step, resumed[step], full[step])


def test_qlora_runs_on_cpu(monkeypatch, base_argv, tmp_path):
    import bitsandbytes as bnb

    from trainer import load_for_inference

    captured = {}
    import trainer.train as train_mod

    real_setup = train_mod.setup_model

    def spy(*args, **kwargs):
        captured["bundle"] = bundle = real_setup(*args, **kwargs)
        return bundle

    monkeypatch.setattr(train_mod, "setup_model", spy)
    run_entry(monkeypatch, [*base_argv, "--finetune_mode", "qlora", "--max_steps", "3"])
    model = captured["bundle"].model
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 14  # 2 layers x 7 projections
    assert quantized[0].weight.quant_type == "nf4"
    losses = logged(tmp_path / "run", "loss")
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(list(losses.values()))))
    model, tok, _ = load_for_inference(tmp_path / "run", device="cpu")  # adapter over a full-precision base
    assert model.get_input_embeddings().weight.shape[0] == len(tok)


def test_scratch_full_finetune_and_merge(monkeypatch, base_argv, tmp_path, item_tokenizer):
    from trainer import load_for_inference

    argv = [*base_argv, "--model_init", "scratch", "--finetune_mode", "full", "--scratch_layers", "1",
            "--scratch_hidden", "32", "--scratch_heads", "2", "--max_steps", "8", "--learning_rate", "3e-3",
            "--merge", "true"]
    run_entry(monkeypatch, argv)
    run = tmp_path / "run"
    losses = logged(run, "loss")
    assert losses[8] < losses[1]
    manifest = json.loads((run / "alignrec_train.json").read_text())
    assert manifest["kind"] == "full" and manifest["base_model"] == "scratch"
    model, tok, itok = load_for_inference(run, device="cpu")
    assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 32
    merged, _, _ = load_for_inference(run / "merged", device="cpu", item_tokenizer=item_tokenizer)
    ids = torch.tensor([tok(itok.item_to_string("i3"))["input_ids"]])
    torch.testing.assert_close(model(ids).logits, merged(ids).logits)

