"""Content start of a from-scratch model's code rows (``scratch_code_rows: item_vectors``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recdata.errors import UserError


def test_projection_keeps_pairwise_distances_at_the_init_scale():
    from trainer.scratch_rows import project_to_width

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
    from trainer.scratch_rows import content_code_rows

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
    from trainer.model_setup import setup_model
    from trainer.scratch_rows import content_code_rows, project_to_width

    n = 6
    item_ids = [f"i{i}" for i in range(n)]
    codes = np.stack([np.arange(n) // 3, np.arange(n)], 1)  # 2 clusters + an item-id level
    itok = ItemTokenizer.from_codes(item_ids, codes, [2, n])
    vectors = np.random.default_rng(3).normal(size=(n, 5)).astype(np.float32)
    vectors[4] = vectors[1]  # two items with the same content
    order = [5, 2, 0, 4, 1, 3]  # the folder's row order differs from the tokenizer's
    folder = _vectors_dir(tmp_path, [item_ids[i] for i in order], vectors[order])

    plain = setup_model(_scratch_args(scratch_tie_embeddings=tied), itok, torch.float32, seed=0)
    bundle = setup_model(_scratch_args(scratch_tie_embeddings=tied, scratch_code_rows="item_vectors",
                                       item_vectors_dir=str(folder)), itok, torch.float32, seed=0)
    assert (plain.row_init, bundle.row_init) == ("random", "item_vectors")
    ids = bundle.code_token_ids
    random_rows = plain.model.get_input_embeddings().weight.detach()[ids]
    expected = content_code_rows(codes, [2, n], project_to_width(vectors, 16, float(random_rows.std())), random_rows)
    weight = bundle.model.get_input_embeddings().weight.detach()
    torch.testing.assert_close(weight[ids], expected)
    torch.testing.assert_close(weight[: ids[0]], plain.model.get_input_embeddings().weight.detach()[: ids[0]])
    torch.testing.assert_close(weight[ids[2 + 4]], weight[ids[2 + 1]])  # same content, same start
    head = bundle.model.get_output_embeddings().weight.detach()
    if tied:
        assert head.data_ptr() == weight.data_ptr()  # the tied head is the same storage
    else:  # an untied head gets the same content rows; its other rows stay the random ones
        torch.testing.assert_close(head[ids], expected)
        torch.testing.assert_close(head[: ids[0]], plain.model.get_output_embeddings().weight.detach()[: ids[0]])

    with pytest.raises(UserError, match="1 missing"):
        missing = tmp_path / "short"
        missing.mkdir()
        np.save(missing / "vectors.npy", vectors[:5])
        (missing / "item_ids.json").write_text(json.dumps(item_ids[:5]))
        setup_model(_scratch_args(scratch_code_rows="item_vectors", item_vectors_dir=str(missing)), itok,
                    torch.float32)
    with pytest.raises(UserError, match="needs item_vectors_dir"):
        setup_model(_scratch_args(scratch_code_rows="item_vectors"), itok, torch.float32)


def test_item_vector_rows_are_for_scratch_models_only():
    from trainer.config import ModelArguments

    with pytest.raises(ValueError, match="for model_init=scratch"):
        ModelArguments(scratch_code_rows="item_vectors")
