"""DPO on top of SFT (trainer/dpo.py): the reference is the SFT model exactly and stays frozen, the chosen-minus-
rejected margin rises, parameters move, and a resumed run reproduces an uninterrupted one."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.conftest import logged, run_entry

DPO_FLAGS = ["--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--lr_scheduler_type", "constant",
             "--max_length", "512", "--logging_steps", "1", "--save_strategy", "no", "--eval_strategy", "no",
             "--seed", "0", "--data_seed", "0", "--tensorboard", "false", "--loss_curve", "false",
             "--dataloader_num_workers", "0", "--warmup_steps", "0", "--beta", "0.1", "--report_to", "none"]
SCRATCH = ["--model_init", "scratch", "--finetune_mode", "full", "--scratch_layers", "1", "--scratch_hidden", "32",
           "--scratch_heads", "2", "--learning_rate", "3e-3"]


@pytest.fixture
def pairs_dir(tmp_path, tiny_split, item_tokenizer, tiny_chat_tokenizer):
    from sft_tasks import TaskConfig
    from sft_tasks.preference import build_preference_pairs, save_preference_pairs

    cfg = TaskConfig(weights='{"seqrec": 1.0}', preference_negatives=2, negative_strategy="hard", seed=0)
    pairs, info = build_preference_pairs(cfg, tiny_split, item_tokenizer, tiny_chat_tokenizer)
    assert info["train_pairs"] == 2 * info["train_prompts"]  # two negatives per prompt -> the prompt repeats
    return save_preference_pairs(pairs, info, tmp_path / "pairs")


@pytest.fixture
def ranking_dir(tmp_path, tiny_split, item_tokenizer):
    """A task DatasetDict whose validation rows carry prompt/history/target, as ranking validation reads them."""
    import datasets

    rows = tiny_split.eval_examples("valid")
    prompts = ["Recommend the next item. History: " + " ".join(item_tokenizer.item_to_string(i) for i in h) + " Next:"
               for h in rows["history"]]
    valid = datasets.Dataset.from_dict({"prompt": prompts, "history": rows["history"], "target": rows["target"]})
    path = tmp_path / "ranking"
    datasets.DatasetDict({"validation": valid}).save_to_disk(str(path))
    return path


def _sft_run(monkeypatch, base_argv, tmp_path, mode: str):
    extra = SCRATCH if mode == "full" else []
    run_entry(monkeypatch, [*base_argv, *extra, "--output_dir", str(tmp_path / f"sft-{mode}"), "--max_steps", "6"])
    return tmp_path / f"sft-{mode}"


def _dpo_args(sft_dir, pairs_dir, out, *flags):
    from trainer.dpo_config import parse_dpo_config

    return parse_dpo_config(["--sft_run_dir", str(sft_dir), "--pairs_dir", str(pairs_dir), "--output_dir", str(out),
                             *DPO_FLAGS, *flags])


def _batch(trainer) -> dict:
    return next(iter(trainer.get_train_dataloader()))


@torch.no_grad()
def _reference_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute force: sum of log p(token) over the completion tokens, from the model's plain logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]  # [B, T-1, V]
    token = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)  # [B, T-1]
    logps = (token * batch["completion_mask"][:, 1:]).sum(1)  # [B]
    return logps.chunk(2)  # the batch is [chosen..., rejected...]


def _trainer_logps(trainer, batch, reference: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if reference:
        return trainer.compute_ref_log_probs(trainer.model, batch)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        out = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                            fused_lm_head=True)
    return out.log_probs.sum(1).chunk(2)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_reference_is_the_sft_model_at_step_zero(monkeypatch, base_argv, tmp_path, pairs_dir, item_tokenizer, mode):
    from trainer import load_for_inference
    from trainer.config import ModelArguments
    from trainer.dpo_run import build_dpo_trainer
    from trainer.model_setup import setup_model

    sft_dir = _sft_run(monkeypatch, base_argv, tmp_path, mode)
    trainer, start = build_dpo_trainer(*_dpo_args(sft_dir, pairs_dir, tmp_path / "dpo"))
    sft_model, tok, itok = load_for_inference(sft_dir, device="cpu")
    batch = _batch(trainer)
    expected = _reference_logps(sft_model, batch)
    for reference in (True, False):  # the reference, and the policy before its first update
        got = _trainer_logps(trainer, batch, reference)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-4)
    if mode == "lora":
        # non-trivial: the SFT code rows moved away from their initial values, and the reference holds them
        ids = itok.code_token_ids(tok)
        init = setup_model(ModelArguments(model_name_or_path=base_argv[1]), item_tokenizer, torch.float32, 0).model
        sft_rows = sft_model.merge_and_unload().get_input_embeddings().weight[ids]
        assert not torch.allclose(sft_rows, init.get_input_embeddings().weight[ids], atol=1e-4)
        deltas = {n: p for n, p in trainer.model.named_parameters() if "trainable_tokens_delta" in n}
        torch.testing.assert_close(deltas[next(n for n in deltas if n.endswith(".ref"))], sft_rows, rtol=0, atol=0)


def test_dpo_raises_margin_moves_policy_and_keeps_reference(monkeypatch, base_argv, tmp_path, pairs_dir):
    from trainer import load_for_inference
    from trainer.dpo_run import build_dpo_trainer

    sft_dir = _sft_run(monkeypatch, base_argv, tmp_path, "lora")
    trainer, _ = build_dpo_trainer(*_dpo_args(sft_dir, pairs_dir, tmp_path / "dpo", "--max_steps", "12"))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    sft_model, _, _ = load_for_inference(sft_dir, device="cpu")
    batches = [b for b in trainer.get_train_dataloader()]
    margin0 = torch.cat([c - r for c, r in (_reference_logps(sft_model, b) for b in batches)])
    trainer.train()
    after = dict(trainer.model.named_parameters())
    moved = [n for n in before if ".default" in n and not torch.equal(before[n], after[n].detach())]
    assert any("lora_B" in n for n in moved) and any("trainable_tokens_delta" in n for n in moved), moved
    frozen = [n for n in before if ".default" not in n]
    assert frozen and all(torch.equal(before[n], after[n].detach()) for n in frozen)  # base and 'ref' untouched
    margin1 = torch.cat([c - r for c, r in (_trainer_logps(trainer, b, False) for b in batches)])
    assert margin1.mean() > margin0.mean() + 0.5, (margin0.mean(), margin1.mean())
    for b in batches[:1]:  # the reference still scores exactly like the SFT run on disk
        for g, e in zip(_trainer_logps(trainer, b, True), _reference_logps(sft_model, b), strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-4)
    saved = load_file(str(sft_dir / "adapter_model.safetensors"))
    assert any("trainable_tokens" in k for k in saved)


def test_entry_writes_run_folder_and_resumes_exactly(monkeypatch, base_argv, tmp_path, pairs_dir, ranking_dir):
    from trainer import load_for_inference
    from trainer.dpo import main

    sft_dir = _sft_run(monkeypatch, base_argv, tmp_path, "lora")
    out = tmp_path / "dpo"
    argv = ["--sft_run_dir", str(sft_dir), "--pairs_dir", str(pairs_dir), "--output_dir", str(out), *DPO_FLAGS,
            "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--loss_curve", "true",
            "--eval_strategy", "steps", "--eval_steps", "3", "--per_device_eval_batch_size", "4",
            "--ranking_dataset_dir", str(ranking_dir), "--ranking_eval_users", "4", "--ranking_eval_beams", "10"]
    monkeypatch.setattr(sys, "argv", ["trainer/dpo.py", *argv])
    assert main() == 0
    full = logged(out, "loss")
    assert sorted(full) == [1, 2, 3, 4, 5, 6]
    assert sorted(logged(out, "eval_rewards/accuracies")) == [3, 6]  # held-out pairs on the valid targets
    assert sorted(logged(out, "eval_ranking_ndcg@10")) == [3, 6]  # SFT's ranking validation (valid users only)
    manifest = json.loads((out / "alignrec_train.json").read_text())
    assert manifest["kind"] == "adapter" and manifest["preference"]["beta"] == 0.1
    assert (out / "loss_curve.png").is_file() and not (out / "ref").exists()  # one adapter in the run folder
    model, tok, itok = load_for_inference(out, device="cpu")
    assert list(model.peft_config) == ["default"]

    shutil.rmtree(out / "checkpoint-6")  # as if the job died after step 5
    (out / "alignrec_train.json").unlink()
    monkeypatch.setattr(sys, "argv", ["trainer/dpo.py", *argv, "--resume_from_checkpoint", "last"])
    assert main() == 0
    resumed = logged(out, "loss")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert abs(resumed[step] - full[step]) <= 1e-5, (step, resumed[step], full[step])


@pytest.mark.slow
def test_deepspeed_launcher_cpu(monkeypatch, base_argv, tmp_path, pairs_dir):
    """Same entry under the deepspeed launcher (ZeRO-2, CPU gloo), as trainer/sft.py."""
    from pathlib import Path

    from tests.trainer.conftest import REPO_ROOT
    from tests.trainer.test_deepspeed import _run

    sft_dir = _sft_run(monkeypatch, base_argv, tmp_path, "lora")
    deepspeed = str(Path(sys.executable).with_name("deepspeed"))
    entry = str(Path(REPO_ROOT) / "trainer" / "dpo.py")
    _run([deepspeed, "--num_gpus", "1", entry, "--sft_run_dir", str(sft_dir), "--pairs_dir", str(pairs_dir),
          "--output_dir", str(tmp_path / "dpo"), *DPO_FLAGS, "--max_steps", "3",
          "--deepspeed", str(Path(REPO_ROOT) / "ds_configs" / "zero2.json")], tmp_path)
    assert sorted(logged(tmp_path / "dpo", "loss")) == [1, 2, 3]
    assert json.loads((tmp_path / "dpo" / "alignrec_train.json").read_text())["kind"] == "adapter"
