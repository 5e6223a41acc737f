"""``alignrec add-items``: a trained LoRA run grows by two items without retraining. The output loads and decodes
them; every trained token keeps its id and its rows exactly; the new own-token rows are the ridge map of their
vectors fitted on the trained items' rows; bad inputs are refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recdata.errors import OutputFolderError, UserError

NEW = ["n1", "n2"]


@pytest.fixture
def trained(monkeypatch, tmp_path, tiny_model_dir, tiny_split):
    """A 2-step LoRA run over a fitted one-level tokenizer with an item-id level, and vectors for it + 2 new items."""
    from tests.trainer.conftest import build_task_dataset_dict, run_entry
    from tokenization.config import TokenizerConfig
    from tokenization.pipeline import fit_item_tokenizer

    items = tiny_split.dataset.item_ids()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(items) + len(NEW), 6)).astype(np.float32)
    tok, _ = fit_item_tokenizer(items, vectors[:len(items)], TokenizerConfig(
        num_levels=1, codebook_size=2, hidden_dims=[8], latent_dim=4, align_weight=0.0, rq_epochs=2, rq_batch_size=8,
        item_id_level=True))
    build_task_dataset_dict(tiny_split, tok).save_to_disk(str(tmp_path / "tasks"))
    run_entry(monkeypatch, [
        "--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(tmp_path / "tasks"),
        "--item_tokenizer_dir", str(tok.save_pretrained(tmp_path / "item_tokenizer")),
        "--output_dir", str(tmp_path / "run"), "--finetune_mode", "lora", "--new_rows_init", "mean",
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--max_length", "64",
        "--save_strategy", "no", "--eval_strategy", "no", "--seed", "0", "--tensorboard", "false",
        "--loss_curve", "false", "--dataloader_num_workers", "0"])
    vectors_dir = tmp_path / "vectors"
    vectors_dir.mkdir()
    order = [NEW[0], *items[::-1], NEW[1]]  # any order: rows are matched by id, new items added in file order
    rows = {i: n for n, i in enumerate([*items, *NEW])}
    np.save(vectors_dir / "vectors.npy", vectors[[rows[i] for i in order]])
    (vectors_dir / "item_ids.json").write_text(json.dumps(order))
    return {"model_dir": tmp_path / "run", "vectors_dir": vectors_dir, "items": items, "vectors": vectors}


def _args(trained, out, **kw):
    from trainer.add_items import AddItemsArgs

    return AddItemsArgs(**{"model_dir": str(trained["model_dir"]), "vectors_dir": str(trained["vectors_dir"]),
                           "output_dir": str(out), **kw})


def test_grown_model_keeps_the_trained_rows_and_fits_the_new_ones(trained, tmp_path):
    from alignrec.cli import main
    from inference.trained_run import TrainedRun
    from recdata.ridge_fill import ridge_fill
    from trainer import load_for_inference

    before = {p.name: p.read_bytes() for p in trained["model_dir"].iterdir() if p.is_file()}
    source, source_hf, source_tok = load_for_inference(trained["model_dir"], device="cpu")
    source_rows = source.merge_and_unload().get_input_embeddings().weight.detach().clone()
    out = tmp_path / "grown"
    assert main(["add-items", "--model_dir", str(trained["model_dir"]), "--vectors_dir", str(trained["vectors_dir"]),
                 "--output_dir", str(out)]) == 0
    model, hf, tok = load_for_inference(out, device="cpu")  # the manifest's checks pass
    items = trained["items"]
    assert list(tok.item_ids) == [*items, *NEW]
    np.testing.assert_array_equal(tok.codes[:len(items)], source_tok.codes)
    old = len(source_hf)
    assert hf.convert_ids_to_tokens(list(range(old))) == source_hf.convert_ids_to_tokens(list(range(old)))
    rows = model.get_input_embeddings().weight.detach()
    assert rows.shape[0] == old + len(NEW) and torch.equal(rows[:old], source_rows)  # trained rows exactly
    own = np.asarray(tok.item_token_ids(hf))[:, -1]
    assert own[len(items):].tolist() == [old, old + 1]  # each new item's own token, after every trained one
    is_new = np.array([False] * len(items) + [True] * len(NEW))
    expected, _ = ridge_fill(trained["vectors"].astype(np.float64), rows[own].double().numpy(), is_new)
    assert np.allclose(rows[own[is_new]].double().numpy(), expected[is_new], atol=1e-5)
    manifest = json.loads((out / "alignrec_train.json").read_text())
    assert manifest["kind"] == "full" and manifest["added_items"]["items"] == 2
    run = TrainedRun.load(out, device="cpu")
    everything = len(tok.item_ids)
    listed = run.recommender(everything, everything, exclude_history=False)(["u"], [[items[0]]])[0]
    assert set(NEW) <= {item for item, _ in listed}  # the new items are in the decoder's catalogue
    assert {p.name: p.read_bytes() for p in trained["model_dir"].iterdir() if p.is_file()} == before  # untouched


def test_bad_inputs_are_refused_before_writing(trained, tmp_path):
    from trainer.add_items import add_items

    with pytest.raises(OutputFolderError, match="input"):
        add_items(_args(trained, trained["model_dir"]))
    only_old = tmp_path / "only_old"
    only_old.mkdir()
    ids = json.loads((trained["vectors_dir"] / "item_ids.json").read_text())
    vectors = np.load(trained["vectors_dir"] / "vectors.npy")
    keep = [n for n, i in enumerate(ids) if i not in NEW]
    np.save(only_old / "vectors.npy", vectors[keep])
    (only_old / "item_ids.json").write_text(json.dumps([ids[n] for n in keep]))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="nothing to add"):
        add_items(_args(trained, out, vectors_dir=str(only_old)))
    lacking = [n for n, i in enumerate(ids) if i != trained["items"][0]]
    np.save(only_old / "vectors.npy", vectors[lacking])
    (only_old / "item_ids.json").write_text(json.dumps([ids[n] for n in lacking]))
    with pytest.raises(UserError, match="lacks 1 trained item"):
        add_items(_args(trained, out, vectors_dir=str(only_old)))
    assert not out.exists()
