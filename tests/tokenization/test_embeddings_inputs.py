"""Config validation, fusion, user-provided vectors and the ItemEmbeddings container."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recdata import parse_config
from tokenization.embeddings import EmbeddingConfig, ItemEmbeddings, fuse_embeddings, load_user_embeddings

CATALOGUE = ["a", "b", "c"]
VECTORS = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)


def test_fusion_exact():
    text = ItemEmbeddings(["a", "b"], np.array([[3.0, 4.0], [0.0, 2.0]]))
    cf = ItemEmbeddings(["b", "a"], np.array([[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]]))  # other row order
    fused = fuse_embeddings({"text": text, "cf": cf}, {"text": 1.0, "cf": 0.5})
    assert fused.item_ids == ["a", "b"]
    np.testing.assert_allclose(fused.vectors, [[0.6, 0.8, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.5]])
    assert fused.meta["dims"] == {"text": 2, "cf": 3} and fused.meta["weights"] == {"text": 1.0, "cf": 0.5}


def test_fusion_rejects_mismatched_ids():
    text = ItemEmbeddings(["a", "b"], np.ones((2, 2)))
    cf = ItemEmbeddings(["a", "c"], np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"fusion part 'cf'.*1 missing \(e.g. \['b'\]\), 1 extra \(e.g. \['c'\]\)"):
        fuse_embeddings({"text": text, "cf": cf}, {"text": 1.0, "cf": 1.0})


def test_item_embeddings_validation():
    with pytest.raises(ValueError, match="duplicate item id 'a'"):
        ItemEmbeddings(["a", "a"], np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"N = len\(item_ids\) = 3"):
        ItemEmbeddings(CATALOGUE, np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"item 'b' \(row 1\) has a non-finite"):
        ItemEmbeddings(["a", "b"], np.array([[1.0, 1.0], [np.nan, 1.0]]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"source": "bert"}, "source must be one of"),
        ({"text_encoder": "clip"}, "text_encoder must be one of"),
        ({"source": "fused", "fusion_weights": "text=1"}, "needs at least two parts"),
        ({"source": "fused", "fusion_weights": "text=1,collab=2"}, "entry 'collab=2' must look like"),
        ({"source": "fused", "fusion_weights": "text=1,cf=x"}, "weight 'x' is not a number"),
        ({"source": "fused", "fusion_weights": "text=1,cf=0"}, "weights must be > 0"),
        ({"source": "file"}, "needs --file_path"),
        ({"sasrec_dim": 30, "sasrec_heads": 4}, r"sasrec_heads \(4\) must divide sasrec_dim \(30\)"),
        ({"sasrec_loss": "bpr"}, "sasrec_loss must be one of"),
        ({"sasrec_dropout": 1.0}, "sasrec_dropout must be in"),
        ({"text_template": "  "}, "text_template is empty"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingConfig(**overrides)


def test_config_parses_from_cli_and_yaml(tmp_path):
    yaml_file = tmp_path / "emb.yaml"
    yaml_file.write_text("source: fused\nfusion_weights: text=2.0,cf=1.0\nsasrec_dim: 32\n")
    (cfg,) = parse_config([EmbeddingConfig], ["--config", str(yaml_file), "--sasrec_dim", "48", "--use_cache", "false"])
    assert cfg.fusion_weight_map() == {"text": 2.0, "cf": 1.0}
    assert cfg.sasrec_dim == 48 and cfg.use_cache is False
    assert cfg.sasrec_config().sasrec_dim == 48


def _write_npy(tmp_path, vectors=VECTORS, ids=("c", "a", "b")):
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    return tmp_path / "v.npy", tmp_path / "ids.txt"


def test_load_npy_reorders_to_catalogue(tmp_path):
    vec, ids = _write_npy(tmp_path)
    emb = load_user_embeddings(vec, ids, CATALOGUE)
    assert emb.item_ids == CATALOGUE
    np.testing.assert_array_equal(emb.vectors, VECTORS[[1, 2, 0]])


def test_load_safetensors_with_ids_in_metadata(tmp_path):
    from safetensors.numpy import save_file

    save_file({"embeddings": VECTORS}, str(tmp_path / "v.safetensors"), metadata={"item_ids": json.dumps(["b", "c", "a"])})
    emb = load_user_embeddings(tmp_path / "v.safetensors", None, CATALOGUE)
    np.testing.assert_array_equal(emb.vectors, VECTORS[[2, 0, 1]])
    (tmp_path / "ids.json").write_text(json.dumps(["a", "b", "c"]))  # an explicit id list wins
    emb = load_user_embeddings(tmp_path / "v.safetensors", tmp_path / "ids.json", CATALOGUE)
    np.testing.assert_array_equal(emb.vectors, VECTORS)


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (["c", "a"], VECTORS[:2], r"1 missing \(e.g. \['b'\]\), 0 extra"),
        (["c", "a", "b", "z"], np.ones((4, 2)), r"0 missing .* 1 extra \(e.g. \['z'\]\)"),
        (["c", "a", "c"], VECTORS, r"ids.txt: item id 'c' appears twice \(rows 0 and 2\)"),
        (["c", "a"], VECTORS, r"shape \(3, 2\) but .*ids.txt lists 2 ids"),
        (["c", "a", "b"], np.array([[1.0, 2.0], [np.inf, 0.0], [1.0, 1.0]]), r"row 1 \(item 'a'\) is not finite"),
    ],
)
def test_load_user_embeddings_errors(tmp_path, ids, vectors, message):
    vec, ids_file = _write_npy(tmp_path, vectors, ids)
    with pytest.raises(ValueError, match=message):
        load_user_embeddings(vec, ids_file, CATALOGUE)


def test_load_user_embeddings_file_errors(tmp_path):
    vec, _ = _write_npy(tmp_path)
    (tmp_path / "gap.txt").write_text("c\n\na\n")
    with pytest.raises(ValueError, match=r"gap.txt:2: empty line"):
        load_user_embeddings(vec, tmp_path / "gap.txt", CATALOGUE)
    with pytest.raises(ValueError, match="no id list"):
        load_user_embeddings(vec, None, CATALOGUE)
    with pytest.raises(FileNotFoundError, match="missing.npy does not exist"):
        load_user_embeddings(tmp_path / "missing.npy", tmp_path / "ids.txt", CATALOGUE)
    (tmp_path / "v.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"must end in .npy or .safetensors"):
        load_user_embeddings(tmp_path / "v.csv", tmp_path / "ids.txt", CATALOGUE)
