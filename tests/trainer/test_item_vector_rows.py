"""Content start of the code rows (``new_rows_init: item_vectors``), for a scratch model and a pretrained LLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recdata.errors import UserError


def test_projection_keeps_pairwise_distances_at_the_init_scale():
    from trainer.item_vector_rows import project_to_width

    x = np.random.default_rng(0).normal(size=(7, 4))
    out = project_to_width(x, width=6, scale=0.02)
    assert out.shape == (7, 6) and np.allclose(out[:, 4:], 0)  # rank 4 < width: the rest stays zero
    assert out.std() == pytest.approx(0.02, rel=1e-5)
    d_in = np.linalg.norm(x[:, None] - x[None], axis=-1)
    d_out = np.linalg.norm(out[:, None] - out[None], axis=-1)
    ratio = d_out[~np.eye(7, dtype=bool)] / d_in[~np.eye(7, dtype=bool)]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # an isometry up to the one scale
    narrow = project_to_width(x, width=2, scale=1.0)  # truncated: the leading components, largest first
    assert narrow[:, 0].var() >= narrow[:, 1].var() > 0
    with pytest.raises(UserError, match="all identical"):
        project_to_width(np.ones((3, 2)), width=2, scale=1.0)


def test_each_code_row_is_the_mean_of_its_items_and_unused_codes_keep_theirs():
    from trainer.item_vector_rows import content_code_rows

    codes = np.array([[0, 0], [0, 1], [1, 2], [1, 3]])  # level 0 code 2 is used by no item
    projected = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [2.0, 6.0]], dtype=np.float32)
    fallback = torch.arange(14, dtype=torch.float32).reshape(7, 2)
    rows = content_code_rows(codes, [3, 4], projected, fallback)
    expected = torch.tensor([[2.0, 1.0], [1.0, 5.0], [4.0, 5.0], *projected.tolist()])
    torch.testing.assert_close(rows, expected)


def _vectors_dir(tmp_path, item_ids, vectors):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    np.save(folder / "vectors.npy", vectors)
    (folder / "item_ids.json").write_text(json.dumps(item_ids))
    return folder


def _scratch_args(**kw):
    from trainer.config import ModelArguments

    return ModelArguments(model_init="scratch", finetune_mode="full", tokenizer_name_or_path="codes_only",
                          scratch_architecture="phi", scratch_layers=1, scratch_hidden=16, scratch_heads=2,
                          scratch_max_positions=32, **kw)


@pytest.mark.parametrize("tied", [True, False])
def test_setup_model_starts_item_id_rows_at_the_item_vectors(tmp_path, tied):
    from tokenization import ItemTokenizer
    from trainer.item_vector_rows import content_code_rows, project_to_width
    from trainer.model_setup import setup_model

    n = 6
    item_ids = [f"i{i}" for i in range(n)]
    codes = np.stack([np.arange(n) // 3, np.arange(n)], 1)  # 2 clusters + an item-id level
    itok = ItemTokenizer.from_codes(item_ids, codes, [2, n])
    vectors = np.random.default_rng(3).normal(size=(n, 5)).astype(np.float32)
    vectors[4] = vectors[1]  # two items with the same content
    order = [5, 2, 0, 4, 1, 3]  # the folder's row order differs from the tokenizer's
    folder = _vectors_dir(tmp_path, [item_ids[i] for i in order], vectors[order])

    plain = setup_model(_scratch_args(scratch_tie_embeddings=tied), itok, torch.float32, seed=0)
    bundle = setup_model(_scratch_args(scratch_tie_embeddings=tied, new_rows_init="item_vectors",
                                       item_vectors_dir=str(folder)), itok, torch.float32, seed=0)
    assert (plain.row_init, bundle.row_init) == ("random", "item_vectors")
    ids = bundle.code_token_ids
    getters = ["get_input_embeddings"] + ([] if tied else ["get_output_embeddings"])
    for getter in getters:  # each matrix: its random rows give the scale and the unused codes' rows
        random_rows = getattr(plain.model, getter)().weight.detach()[ids]
        expected = content_code_rows(codes, [2, n], project_to_width(vectors, 16, float(random_rows.std())),
                                     random_rows)
        weight = getattr(bundle.model, getter)().weight.detach()
        torch.testing.assert_close(weight[ids], expected)
        torch.testing.assert_close(weight[: ids[0]], getattr(plain.model, getter)().weight.detach()[: ids[0]])
        torch.testing.assert_close(weight[ids[2 + 4]], weight[ids[2 + 1]])  # same content, same start
    if tied:  # the tied head is the same storage
        assert bundle.model.get_output_embeddings().weight.data_ptr() == weight.data_ptr()

    with pytest.raises(UserError, match="1 missing"):
        missing = tmp_path / "short"
        missing.mkdir()
        np.save(missing / "vectors.npy", vectors[:5])
        (missing / "item_ids.json").write_text(json.dumps(item_ids[:5]))
        setup_model(_scratch_args(new_rows_init="item_vectors", item_vectors_dir=str(missing)), itok,
                    torch.float32)
    with pytest.raises(UserError, match="needs item_vectors_dir"):
        setup_model(_scratch_args(new_rows_init="item_vectors"), itok, torch.float32)


@pytest.mark.parametrize("tied", [True, False])
def test_a_pretrained_llm_gets_the_rows_at_its_own_vocabulary_scale(tmp_path, tied, tiny_chat_tokenizer):
    from tests.trainer.conftest import build_tiny_llama
    from tokenization import ItemTokenizer
    from trainer.config import ModelArguments
    from trainer.item_vector_rows import project_to_width
    from trainer.model_setup import setup_model

    llm_dir = tmp_path / "llm"
    base = build_tiny_llama(len(tiny_chat_tokenizer), tie_word_embeddings=tied)
    base.save_pretrained(llm_dir)
    tiny_chat_tokenizer.save_pretrained(llm_dir)
    n = 6
    item_ids = [f"i{i}" for i in range(n)]
    codes = np.stack([np.arange(n) // 3, np.arange(n)], 1)  # level-0 code 2 is used by no item
    itok = ItemTokenizer.from_codes(item_ids, codes, [3, n])
    vectors = np.random.default_rng(5).normal(size=(n, 8)).astype(np.float32)
    folder = _vectors_dir(tmp_path, item_ids, vectors)

    args = ModelArguments(model_name_or_path=str(llm_dir), new_rows_init="item_vectors", item_vectors_dir=str(folder),
                          new_rows_noise=0.0)
    bundle = setup_model(args, itok, torch.float32, seed=0)
    assert bundle.row_init == "item_vectors"
    ids = bundle.code_token_ids
    getters = ["get_input_embeddings"] + ([] if tied else ["get_output_embeddings"])
    for getter in getters:
        old = getattr(base, getter)().weight.detach()  # the LLM's own vocabulary
        centre = old.mean(0)
        weight = getattr(bundle.model, getter)().weight.detach()
        projected = torch.from_numpy(project_to_width(vectors, 64, float((old - centre).std()))) + centre
        torch.testing.assert_close(weight[ids[3:]], projected)  # each item-id token at its own vector
        torch.testing.assert_close(weight[ids[0]], projected[:3].mean(0))  # a cluster token at its members' mean
        torch.testing.assert_close(weight[ids[2]], centre)  # an unused code: the mean row (noise 0)
        torch.testing.assert_close(weight[: ids[0]], old, rtol=0, atol=0)  # the LLM's rows are untouched


def test_scratch_models_take_only_the_row_inits_that_fit_them():
    from trainer.config import ModelArguments

    for mode in ("codebook", "mean"):
        with pytest.raises(ValueError, match="describes a pretrained vocabulary"):
            ModelArguments(model_init="scratch", finetune_mode="full", new_rows_init=mode)
    assert ModelArguments(model_init="scratch", finetune_mode="full", new_rows_init="random").new_rows_init == "random"
