"""Vocab export/validate and the `alignrec tokenize` / `alignrec vocab` entry points, end to end on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from alignrec.cli import main
from tokenization import ItemTokenizer, export_vocab, validate_vocab


@pytest.fixture
def item_tok() -> ItemTokenizer:
    codes = np.array([[0, 1, 0], [2, 0, 0], [1, 1, 1], [0, 1, 1]])
    return ItemTokenizer.from_codes(["i1", "i2", "i3", "i4"], codes, [3, 2, 2])


def test_export_contents_and_validate(tmp_path, item_tok, tiny_hf_tokenizer):
    ids = item_tok.add_to_tokenizer(tiny_hf_tokenizer)
    out = export_vocab(item_tok, tmp_path / "v", tiny_hf_tokenizer, {"llm": "tiny"})
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert rows[2] == {"item_id": "i3", "codes": [1, 1, 1], "string": "<a_1><b_1><c_1>"}
    tokens = json.loads((out / "tokens.json").read_text())
    assert list(tokens) == item_tok.code_tokens() and list(tokens.values()) == ids
    table = pq.read_table(out / "items.parquet").to_pydict()
    assert table["item_id"] == ["i1", "i2", "i3", "i4"] and table["code_c"] == [0, 0, 1, 1]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["content_hash"] == item_tok.content_hash and manifest["num_code_tokens"] == 7
    assert manifest["aligned_with"]["llm"] == "tiny" and manifest["aligned_with"]["tokenizer"]["first_code_token_id"] == ids[0]
    summary = validate_vocab(out, expected_item_ids=["i4", "i3", "i2", "i1"])
    assert summary["ok"] and summary["num_items"] == 4
    with pytest.raises(ValueError, match=r"1 catalogue items have no code \(e.g. \['i9'\]\)"):
        validate_vocab(out, expected_item_ids=["i1", "i2", "i3", "i4", "i9"])
    # an export made for another (bigger) catalogue is not ok for this dataset either (issue 11)
    with pytest.raises(ValueError, match=r"2 exported items are not in the given dataset \(e.g. \['i2', 'i3'\]\)"):
        validate_vocab(out, expected_item_ids=["i1", "i4"])


def _rewrite(out, name, text):
    """Edit a file and re-sign it in the manifest, so only the semantic checks can catch it."""
    from recdata.io import sha256_file

    (out / name).write_text(text)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(out / name)
    (out / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace('"codes": [2, 0, 0]', '"codes": [0, 1, 0]'), "not one-to-one"),
        (lambda t: t.replace('"string": "<a_1><b_1><c_1>"', '"string": "<a_1><b_1><c_0>"'), "does not spell"),
        (lambda t: "\n".join(t.splitlines()[:-1]) + "\n", "3 items, manifest says 4"),
        (lambda t: t.replace('"codes": [2, 0, 0], "string": "<a_2><b_0><c_0>"',
                             '"codes": [2, 1, 0], "string": "<a_2><b_1><c_0>"'), "content hash"),
    ],
)
def test_validate_catches_semantic_corruption(tmp_path, item_tok, edit, match):
    out = export_vocab(item_tok, tmp_path / "v")
    _rewrite(out, "items.jsonl", edit((out / "items.jsonl").read_text()))
    with pytest.raises(ValueError, match=match):
        validate_vocab(out)


def test_validate_catches_unsigned_edit_and_bad_token_ids(tmp_path, item_tok):
    out = export_vocab(item_tok, tmp_path / "v")
    tokens = json.loads((out / "tokens.json").read_text())
    tokens["<a_1>"] = 99
    _rewrite(out, "tokens.json", json.dumps(tokens))
    with pytest.raises(ValueError, match="not contiguous"):
        validate_vocab(out)
    (out / "items.parquet").write_bytes(b"junk")
    with pytest.raises(ValueError, match="items.parquet: sha256 differs"):
        validate_vocab(out)


def test_tokenize_export_validate_cli_end_to_end(tmp_path, tiny_split, tiny_model_dir, capsys):
    split_dir = tmp_path / "split"
    tiny_split.save(split_dir)
    item_ids = tiny_split.dataset.item_ids()
    rng = np.random.default_rng(0)
    np.save(tmp_path / "vec.npy", rng.normal(size=(len(item_ids), 12)).astype(np.float32))
    (tmp_path / "ids.txt").write_text("\n".join(item_ids) + "\n")
    (tmp_path / "tok.yaml").write_text(
        "num_levels: 2\ncodebook_size: 4\nhidden_dims: [16]\nlatent_dim: 4\nrq_epochs: 20\nalign_weight: 1.0\n"
    )
    tok_dir = tmp_path / "tok"
    argv = ["tokenize", "--config", str(tmp_path / "tok.yaml"), "--split_dir", str(split_dir), "--output_dir",
            str(tok_dir), "--source", "file", "--file_path", str(tmp_path / "vec.npy"), "--file_ids_path",
            str(tmp_path / "ids.txt"), "--llm_dir", str(tiny_model_dir), "--cache_dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    report = json.loads((tok_dir / "report.json").read_text())
    assert report["collisions_after"] == 0 and report["num_items"] == 8 and report["codebook_sizes"][:2] == [4, 4]
    assert (tok_dir / "code_usage.png").read_bytes()[:4] == b"\x89PNG"
    resolved = json.loads((tok_dir / "resolved_config.json").read_text())
    assert resolved["TokenizerConfig"]["rq_epochs"] == 20
    tok = ItemTokenizer.from_pretrained(tok_dir)
    assert sorted(tok.item_ids) == sorted(item_ids)
    emb = tok.code_token_embeddings()
    assert emb is not None and emb.shape == (len(tok.code_tokens()), 64)  # tiny llama hidden size
    # same command, same codes
    assert main([*argv[:6], str(tmp_path / "tok2"), *argv[7:]]) == 0
    assert ItemTokenizer.from_pretrained(tmp_path / "tok2").content_hash == tok.content_hash

    vocab = tmp_path / "vocab"
    assert main(["vocab", "export", "--tokenizer_dir", str(tok_dir), "--output_dir", str(vocab),
                 "--hf_tokenizer_dir", str(tiny_model_dir)]) == 0
    capsys.readouterr()
    assert main(["vocab", "validate", str(vocab), "--dataset_dir", str(split_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["content_hash"] == tok.content_hash
    (vocab / "tokens.json").write_text("{}")
    assert main(["vocab", "validate", str(vocab)]) == 1
    assert "tokens.json: sha256 differs" in capsys.readouterr().err
