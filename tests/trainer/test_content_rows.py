"""Content in the item-id rows (``content_rows: adaptor``): exact effective rows, gradients, training, baking, and
a whole run whose checkpoints reload into the parametrized model and whose export is a plain HF model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from recdata.errors import ConfigError, UserError
from tests.trainer.conftest import build_tiny_llama, logged, run_entry

VOCAB, FIRST_ITEM, N_ITEMS, DIM = 40, 30, 8, 5  # tokens 30..37 are the items' own (item-id) tokens


def _vectors(n: int = N_ITEMS, dim: int = DIM, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32))


def _randomise(rows) -> None:
    """Adaptors start at zero (the model without them); give them weights so their rows are visible."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for adaptor in rows:
            for p in adaptor.adaptor.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))


def _with_rows(tied: bool = True, hidden: int = 0, dropout: float = 0.0, randomise: bool = True):
    from trainer.content_rows import attach_content_rows

    model = build_tiny_llama(VOCAB, tie_word_embeddings=tied)
    free = {"input": model.get_input_embeddings().weight.detach().clone(),
            "output": model.get_output_embeddings().weight.detach().clone()}
    rows = attach_content_rows(model, torch.arange(FIRST_ITEM, FIRST_ITEM + N_ITEMS), _vectors(), hidden, dropout)
    if randomise:
        _randomise(rows)
    return model, rows, free


def _ids() -> torch.Tensor:
    return torch.tensor([[1, 30, 5, 33, 37, 2, 31], [36, 4, 35, 30, 3, 34, 32]])


@pytest.mark.parametrize("tied, hidden", [(True, 0), (True, 6), (False, 0)])
def test_each_item_row_is_its_free_row_plus_the_adaptor_of_its_vector(tied, hidden):
    model, rows, free = _with_rows(tied, hidden)
    model.eval()
    assert len(rows) == (1 if tied else 2)  # a tied head shares the input's adaptor, an untied one has its own
    vectors = rows[0].vectors
    for side, module, adaptor in [("input", model.get_input_embeddings(), rows[0]),
                                  ("output", model.get_output_embeddings(), rows[-1])]:
        weight = module.weight.detach()
        for i in range(N_ITEMS):  # brute force: one item at a time through the adaptor
            expected = free[side][FIRST_ITEM + i] + adaptor.adaptor(vectors[i:i + 1])[0].detach()
            torch.testing.assert_close(weight[FIRST_ITEM + i], expected, rtol=0, atol=1e-6)
        assert torch.equal(weight[:FIRST_ITEM], free[side][:FIRST_ITEM])  # every other row untouched, exactly
        assert torch.equal(weight[FIRST_ITEM + N_ITEMS:], free[side][FIRST_ITEM + N_ITEMS:])
    if not tied:  # the two adaptors differ, so do the two sides' offsets
        assert not torch.equal(rows[0].delta(), rows[1].delta())


def test_a_fresh_adaptor_leaves_the_model_as_it_was():
    plain = build_tiny_llama(VOCAB).eval()
    model, _, _ = _with_rows(randomise=False)
    torch.testing.assert_close(model.eval()(_ids()).logits, plain(_ids()).logits, rtol=0, atol=0)


@pytest.mark.parametrize("hidden", [0, 6])
def test_gradients_reach_the_adaptor_and_the_free_rows(hidden):
    model, rows, _ = _with_rows(hidden=hidden, randomise=False)
    model(_ids(), labels=_ids()).loss.backward()
    last = rows[0].adaptor[-1]  # zero at the start: the only adaptor layer with a gradient at step 0
    assert last.weight.grad.abs().sum() > 0 and last.bias.grad.abs().sum() > 0
    original = model.get_input_embeddings().parametrizations.weight.original
    assert original is model.get_output_embeddings().parametrizations.weight.original  # still tied
    assert original.grad[FIRST_ITEM:FIRST_ITEM + N_ITEMS].abs().sum() > 0
    trainable = [n for n, p in model.named_parameters() if "adaptor" in n]
    assert len(trainable) == (2 if hidden == 0 else 4)  # listed once although two modules hold it


def test_a_few_steps_lower_the_loss_and_move_the_adaptor():
    model, rows, _ = _with_rows(hidden=6, dropout=0.1, randomise=False)
    start = {n: p.detach().clone() for n, p in rows[0].adaptor.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = model(_ids(), labels=_ids()).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8, losses
    moved = {n: float((p.detach() - start[n]).abs().max()) for n, p in rows[0].adaptor.named_parameters()}
    assert all(v > 0 for v in moved.values()), moved  # every layer, the first once the last is non-zero


@pytest.mark.parametrize("tied", [True, False])
def test_baked_export_is_a_plain_hf_model_with_the_same_logits(tmp_path, tied):
    from transformers import AutoModelForCausalLM

    from trainer.content_rows import bake_content_rows, content_rows_of

    model, _, _ = _with_rows(tied, hidden=6, dropout=0.5)
    model.train()  # baking must not apply the adaptor's dropout
    expected = model.eval()(_ids()).logits.detach()
    model.train()
    assert bake_content_rows(model) == (1 if tied else 2)
    assert content_rows_of(model.get_input_embeddings()) is None
    assert type(model.get_input_embeddings()) is torch.nn.Embedding  # the parametrized class is gone
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    torch.testing.assert_close(model.eval()(_ids()).logits, expected, rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path / "export")
    keys = load_file(str(tmp_path / "export" / "model.safetensors")).keys()
    assert not [k for k in keys if "parametrizations" in k or "adaptor" in k]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    torch.testing.assert_close(loaded(_ids()).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("tied", [True, False])
def test_a_checkpoint_reloads_exactly_into_the_parametrized_model(tmp_path, tied):
    model, _, _ = _with_rows(tied, hidden=6)
    model.save_pretrained(tmp_path / "ckpt")  # as the Trainer writes a checkpoint (HF refuses unknown shared tensors)
    state = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert ("lm_head.parametrizations.weight.original" in state) == (not tied)  # a tied head's copy is dropped
    fresh, _, _ = _with_rows(tied, hidden=6, randomise=False)
    fresh.load_state_dict(state, strict=True)  # the head's copies come back from the input's keys
    torch.testing.assert_close(fresh.eval()(_ids()).logits, model.eval()(_ids()).logits, rtol=0, atol=0)


def test_standardise_centres_and_scales_to_unit_std():
    from trainer.content_rows import standardise

    out = standardise(np.array([[1.0, 2.0], [3.0, 6.0]]))  # centred [[-1, -2], [1, 2]]: entry std sqrt(2.5)
    np.testing.assert_allclose(out, np.array([[-1.0, -2.0], [1.0, 2.0]]) / 2.5**0.5, rtol=1e-6)
    with pytest.raises(UserError, match="all identical"):
        standardise(np.ones((3, 2)))


def _vectors_dir(tmp_path, item_ids, seed: int = 3):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    vectors = np.random.default_rng(seed).normal(size=(len(item_ids), DIM)).astype(np.float32)
    np.save(folder / "vectors.npy", vectors[::-1].copy())  # the folder's row order differs from the tokenizer's
    (folder / "item_ids.json").write_text(json.dumps(item_ids[::-1]))
    return folder, vectors


def _id_level_tokenizer(item_ids):
    from tokenization import ItemTokenizer

    n = len(item_ids)
    return ItemTokenizer.from_codes(item_ids, np.stack([np.arange(n) // 4, np.arange(n)], 1), [2, n])


def _scratch_args(**kw):
    from trainer.config import ModelArguments

    return ModelArguments(model_init="scratch", finetune_mode="full", tokenizer_name_or_path="codes_only",
                          scratch_architecture="phi", scratch_layers=1, scratch_hidden=16, scratch_heads=2,
                          scratch_max_positions=32, **{"new_rows_init": "item_vectors", **kw})


def test_setup_model_adds_the_adaptor_on_top_of_the_item_vector_start(tmp_path):
    from trainer.content_rows import content_rows_of, standardise
    from trainer.model_setup import setup_model

    item_ids = [f"i{i}" for i in range(6)]
    itok = _id_level_tokenizer(item_ids)
    folder, vectors = _vectors_dir(tmp_path, item_ids)
    plain = setup_model(_scratch_args(item_vectors_dir=str(folder)), itok, torch.float32, seed=0)
    bundle = setup_model(_scratch_args(item_vectors_dir=str(folder), content_rows="adaptor"), itok, torch.float32,
                         seed=0)
    rows = content_rows_of(bundle.model.get_input_embeddings())
    own = itok.item_token_ids(bundle.tokenizer)[:, -1]
    assert rows.token_ids.tolist() == own.tolist()  # the items' own tokens, in the tokenizer's item order
    torch.testing.assert_close(rows.vectors, torch.from_numpy(standardise(vectors)))  # reordered to the tokenizer
    # step 0: exactly the shipped model (item-vector start, zero adaptor); tied head follows
    assert torch.equal(bundle.model.get_input_embeddings().weight, plain.model.get_input_embeddings().weight)
    assert content_rows_of(bundle.model.get_output_embeddings()) is rows

    with pytest.raises(UserError, match="content_rows=adaptor needs item_vectors_dir"):
        setup_model(_scratch_args(content_rows="adaptor", new_rows_init="random"), itok, torch.float32)
    shared = _shared_last_level_tokenizer(item_ids)
    with pytest.raises(UserError, match="unique to every item"):
        setup_model(_scratch_args(item_vectors_dir=str(folder), content_rows="adaptor"), shared, torch.float32)


def _shared_last_level_tokenizer(item_ids):
    """Two plain RQ levels: the last-level codes are shared by several items (no item-id level)."""
    from tokenization import ItemTokenizer

    n = len(item_ids)
    return ItemTokenizer.from_codes(item_ids, np.stack([np.arange(n) // 2, np.arange(n) % 2], 1), [3, 2])


@pytest.mark.parametrize("kw, match", [
    ({"finetune_mode": "lora"}, "needs finetune_mode=full"),
    ({"finetune_mode": "full", "content_rows_dropout": 1.0}, "content_rows_dropout"),
    ({"finetune_mode": "full", "content_rows_hidden": -1}, "content_rows_hidden"),
    ({"finetune_mode": "full", "content_rows": "mlp"}, "not one of"),
])
def test_config_refuses_what_content_rows_cannot_do(kw, match):
    from trainer.config import ModelArguments

    with pytest.raises(ValueError, match=match):
        ModelArguments(**{"content_rows": "adaptor", **kw})


# ---- a whole run: checkpoints, best-model reload, export -------------------------------------------------------

@pytest.fixture
def item_tokenizer(tiny_dataset):  # overrides the trainer fixture: the runs below need an item-id level
    return _id_level_tokenizer(tiny_dataset.item_ids())


def test_a_run_trains_the_adaptor_and_exports_the_rows_baked(monkeypatch, base_argv, tmp_path, tiny_dataset,
                                                             item_tokenizer):
    from transformers import AutoModelForCausalLM

    from trainer.config import ModelArguments
    from trainer.model_setup import setup_model

    folder, _ = _vectors_dir(tmp_path, tiny_dataset.item_ids())
    model_flags = ["--model_init", "scratch", "--finetune_mode", "full", "--scratch_architecture", "phi",
                   "--scratch_layers", "1", "--scratch_hidden", "32", "--scratch_heads", "2",
                   "--new_rows_init", "item_vectors", "--item_vectors_dir", str(folder),
                   "--content_rows", "adaptor", "--content_rows_hidden", "8"]
    with pytest.raises(ConfigError, match="code_rows_learning_rate"):
        run_entry(monkeypatch, [*base_argv, *model_flags, "--max_steps", "1", "--code_rows_learning_rate", "0.1"])
    argv = [*base_argv, *model_flags, "--max_steps", "8", "--learning_rate", "3e-3", "--eval_strategy", "steps",
            "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2", "--load_best_model_at_end", "true",
            # "best" = the highest held-out loss: an early checkpoint, so the end really reloads one
            "--metric_for_best_model", "eval_seqrec_loss", "--greater_is_better", "true"]
    run_entry(monkeypatch, argv)
    run = tmp_path / "run"
    losses = logged(run, "loss")
    assert losses[8] < losses[1]
    shutil.rmtree(run / "checkpoint-8")  # as if the job died after step 7: resume into the parametrized model
    run_entry(monkeypatch, [*argv, "--resume_from_checkpoint", "last"])
    resumed = logged(run, "loss")
    for step in (7, 8):  # same weights, adaptor and optimizer state as the uninterrupted run
        assert abs(resumed[step] - losses[step]) <= 1e-5, (step, resumed[step], losses[step])
    manifest = json.loads((run / "alignrec_train.json").read_text())
    assert manifest["content_rows"] == {"mode": "adaptor", "hidden": 8, "dropout": 0.0,
                                        "item_vectors_dir": str(folder), "baked": True}
    exported = load_file(str(run / "model.safetensors"))
    assert not [k for k in exported if "parametrizations" in k or "adaptor" in k]  # a plain HF model folder

    best = json.loads(sorted(run.glob("checkpoint-*/trainer_state.json"))[-1].read_text())["best_model_checkpoint"]
    assert Path(best).name != "checkpoint-8", best  # the exported model is a reloaded checkpoint, not the last step
    state = load_file(str(Path(best) / "model.safetensors"))
    adaptor = {k: v for k, v in state.items() if "adaptor" in k}
    assert adaptor and all(v.abs().sum() > 0 for v in adaptor.values())  # trained (the last layer started at 0)
    args = ModelArguments(model_init="scratch", finetune_mode="full", scratch_architecture="phi", scratch_layers=1,
                          scratch_hidden=32, scratch_heads=2, model_name_or_path=str(base_argv[1]),
                          new_rows_init="item_vectors", item_vectors_dir=str(folder), content_rows="adaptor",
                          content_rows_hidden=8)
    parametrized = setup_model(args, item_tokenizer, torch.float32).model
    parametrized.load_state_dict(state, strict=True)  # the best checkpoint reloads into the same model, every key
    loaded = AutoModelForCausalLM.from_pretrained(run).eval()
    vocab = loaded.get_input_embeddings().num_embeddings
    ids = torch.tensor([[5, 9, *range(vocab - 10, vocab)]])  # text tokens and the code tokens (items' own last)
    torch.testing.assert_close(loaded(ids).logits, parametrized.eval()(ids).logits, rtol=0, atol=1e-5)


def test_alignrec_run_feeds_the_vectors_and_evaluates_the_baked_model(tmp_path, tiny_chat_tokenizer):
    """The pipeline hands the run's embeddings to the adaptor and every consumer (evaluate) loads the export as is."""
    import yaml

    from alignrec.cli import main as alignrec_main
    from tests.pipeline.test_run_end_to_end import NUM_USERS
    from tests.pipeline.test_run_item_vector_rows import _scratch_config

    config = _scratch_config(tmp_path, tiny_chat_tokenizer)
    config["train"].update(content_rows="adaptor", content_rows_hidden=8, content_rows_dropout=0.1)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert alignrec_main(["run", "--config", str(path), "--until", "evaluate"]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    manifest = json.loads((run_dir / "train" / "model" / "alignrec_train.json").read_text())
    assert manifest["content_rows"]["item_vectors_dir"] == str(run_dir / "embeddings")  # the vectors the tokenizer read
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]["alignrec"]
    assert metrics["n_examples"] == NUM_USERS and metrics["invalid_rate"] == 0.0
