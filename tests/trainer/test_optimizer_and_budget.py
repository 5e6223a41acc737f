"""Run-level trainer options: ``code_rows_learning_rate`` (own optimizer group) and ``max_train_seconds``."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.conftest import run_entry


def test_split_param_group_moves_params_and_keeps_settings():
    from trainer.trl_trainer import split_param_group

    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    opt = torch.optim.AdamW([{"params": [a, b], "weight_decay": 0.1}, {"params": [c], "weight_decay": 0.0}], lr=1e-3)
    assert split_param_group(opt, [b, c], 5e-2) == 2
    groups = [([id(p) for p in g["params"]], g["lr"], g["weight_decay"]) for g in opt.param_groups]
    assert groups == [([id(a)], 1e-3, 0.1), ([id(b)], 5e-2, 0.1), ([id(c)], 5e-2, 0.0)]  # emptied group dropped
    a.grad = torch.ones(2)
    opt.step()
    with pytest.raises(RuntimeError, match="before the first optimizer step"):
        split_param_group(opt, [a], 1.0)


def test_code_row_parameters_full_finetune_is_the_embedding(tiny_llama):
    from trainer.trl_trainer import code_row_parameters

    rows = code_row_parameters(tiny_llama)  # tied: one matrix, listed once
    assert [id(p) for p in rows] == [id(tiny_llama.get_input_embeddings().weight)]


def _max_moves(run_dir, init_model, code_ids):
    """Largest element change of the code rows and of the LoRA B matrices after training (B starts at zero)."""
    state = load_file(str(run_dir / "adapter_model.safetensors"))
    rows = next(v for k, v in state.items() if "trainable_tokens_delta" in k)  # [n_codes, d]
    init_rows = init_model.get_input_embeddings().weight[code_ids].detach()
    lora_b = max(float(v.abs().max()) for k, v in state.items() if "lora_B" in k)
    return float((rows - init_rows).abs().max()), lora_b


@pytest.mark.parametrize("rows_lr", [0.0, 0.05])
def test_one_adam_step_moves_rows_at_their_own_rate(monkeypatch, base_argv, tmp_path, tiny_model_dir, item_tokenizer,
                                                     rows_lr):
    """Adam's first step moves every element with a gradient by ~lr (sign of the gradient), so the largest code-row
    change is the rows' rate and the largest LoRA-B value is learning_rate."""
    from tests.trainer.test_train_lora import _initial_model

    lr = 1e-3
    run_entry(monkeypatch, [*base_argv, "--max_steps", "1", "--learning_rate", str(lr),
                            "--code_rows_learning_rate", str(rows_lr)])
    init = _initial_model(tiny_model_dir, item_tokenizer)
    rows_move, lora_b = _max_moves(tmp_path / "run", init.model, init.code_token_ids)
    expected = rows_lr or lr
    assert expected * 0.9 < rows_move <= expected * 1.001, (rows_move, expected)
    assert lr * 0.9 < lora_b <= lr * 1.001, lora_b


def test_negative_rate_is_rejected():
    from trainer.config import AlignRecTrainArguments

    with pytest.raises(ValueError, match="code_rows_learning_rate"):
        AlignRecTrainArguments(code_rows_learning_rate=-1.0)


def test_max_train_seconds_stops_after_the_first_step_and_saves(monkeypatch, base_argv, tmp_path):
    from tests.trainer.conftest import logged

    run_entry(monkeypatch, [*base_argv, "--max_steps", "5", "--max_train_seconds", "1e-9"])
    assert sorted(logged(tmp_path / "run", "loss")) == [1]  # stopped after step 1 of 5
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
