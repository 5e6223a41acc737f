"""LoRA through the real entry point: loss falls, adapters and code rows train, the base stays frozen."""

from __future__ import annotations

import json

import pytest
import torch

from tests.trainer.conftest import logged, run_entry


def _initial_model(model_dir, item_tokenizer):
    """The exact pre-training model: set-up is deterministic for a given seed."""
    from trainer.config import ModelArguments
    from trainer.model_setup import setup_model

    return setup_model(ModelArguments(model_name_or_path=str(model_dir)), item_tokenizer, torch.float32, seed=0)


def test_lora_trains_code_rows_and_adapters_only(monkeypatch, base_argv, tmp_path, tiny_model_dir, item_tokenizer):
    from trainer import load_for_inference

    run_entry(monkeypatch, [*base_argv, "--max_steps", "12", "--eval_strategy", "steps", "--eval_steps", "6",
                            "--loss_curve", "true", "--tensorboard", "true", "--merge", "true"])
    run = tmp_path / "run"
    losses = logged(run, "loss")
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(list(losses.values()))))
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (10, 11, 12)) / 3
    assert last < 0.85 * first, losses
    assert sorted(logged(run, "eval_seqrec_loss")) == [6, 12]  # held-out seqrec loss every eval_steps
    for name in ("adapter_model.safetensors", "resolved_config.json", "loss_curve.png", "alignrec_train.json",
                 "item_tokenizer/manifest.json", "tokenizer.json"):
        assert (run / name).is_file(), name
    resolved = json.loads((run / "resolved_config.json").read_text())
    # new_rows_init auto on a pretrained model without item vectors: the mean row (never the codebook rows)
    assert resolved["item_tokenizer_hash"] == item_tokenizer.content_hash and resolved["rows_init"] == "mean"
    assert resolved["SFTConfig"]["max_steps"] == 12 and resolved["SFTConfig"]["bf16"] is False

    init = _initial_model(tiny_model_dir, item_tokenizer).model
    model, tok, itok = load_for_inference(run, device="cpu")
    assert itok.content_hash == item_tokenizer.content_hash
    ids = itok.code_token_ids(tok)
    merged = model.merge_and_unload()
    emb, emb0 = merged.get_input_embeddings().weight, init.get_input_embeddings().weight
    assert not torch.allclose(emb[ids], emb0[ids]), "code-token rows did not train"
    torch.testing.assert_close(emb[: ids[0]], emb0[: ids[0]], rtol=0, atol=0)  # old rows frozen
    q, q0 = merged.model.layers[0].self_attn.q_proj.weight, init.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q, q0), "LoRA update is zero"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    norm, norm0 = base.model.norm.weight, init.model.norm.weight  # not a LoRA target: frozen
    torch.testing.assert_close(norm, norm0, rtol=0, atol=0)
    assert any(run.rglob("events.out.tfevents*")), "no TensorBoard events"

    full, _, _ = load_for_inference(run / "merged", device="cpu")  # --merge: a self-contained model
    ids_in = torch.tensor([tok("History: " + itok.item_to_string("i2"))["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(full(ids_in).logits, merged(ids_in).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rows", ["trainable_tokens", "modules_to_save"])
def test_untied_output_rows_train(monkeypatch, base_argv, tmp_path, tiny_chat_tokenizer, item_tokenizer, rows):
    from tests.trainer.conftest import build_tiny_llama
    from trainer import load_for_inference

    model_dir = tmp_path / "untied"
    build_tiny_llama(len(tiny_chat_tokenizer), tie_word_embeddings=False).save_pretrained(model_dir)
    tiny_chat_tokenizer.save_pretrained(model_dir)
    argv = [*base_argv, "--model_name_or_path", str(model_dir), "--max_steps", "3", "--new_rows_training", rows]
    run_entry(monkeypatch, argv)
    init = _initial_model(model_dir, item_tokenizer).model
    model, tok, itok = load_for_inference(tmp_path / "run", device="cpu")
    merged = model.merge_and_unload()
    ids = itok.code_token_ids(tok)
    head, head0 = merged.get_output_embeddings().weight, init.get_output_embeddings().weight
    assert not torch.allclose(head[ids], head0[ids]), "output rows of the code tokens did not train"
    if rows == "trainable_tokens":
        torch.testing.assert_close(head[: ids[0]], head0[: ids[0]], rtol=0, atol=0)
