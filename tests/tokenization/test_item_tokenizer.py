"""ItemTokenizer: grid order, lookups, HF tokenizer extension, embeddings and the saved form."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tokenization import ItemTokenizer

ITEMS = ["i1", "i2", "i3", "i4"]
CODES = np.array([[0, 1, 2], [0, 1, 0], [2, 0, 1], [1, 2, 2]])
SIZES = [3, 3, 4]


@pytest.fixture
def item_tok() -> ItemTokenizer:
    return ItemTokenizer.from_codes(ITEMS, CODES, SIZES)


def test_grid_is_level_major_and_independent_of_used_codes(item_tok):
    grid = item_tok.code_tokens()
    assert grid[:4] == ["<a_0>", "<a_1>", "<a_2>", "<b_0>"]
    assert grid[-1] == "<c_3>" and len(grid) == 10
    sparse = ItemTokenizer.from_codes(["x"], np.array([[0, 0, 0]]), SIZES)
    assert sparse.code_tokens() == grid


def test_lookups_round_trip(item_tok):
    assert item_tok.item_to_codes("i3") == (2, 0, 1)
    assert item_tok.codes_to_item((2, 0, 1)) == "i3"
    assert item_tok.codes_to_item((2, 2, 2)) is None
    assert item_tok.item_to_tokens("i1") == ["<a_0>", "<b_1>", "<c_2>"]
    assert item_tok.item_to_string("i4") == "<a_1><b_2><c_2>"
    for item in ITEMS:
        assert item_tok.string_to_item(item_tok.item_to_string(item)) == item
    assert item_tok.string_to_item("<a_1> <b_2>\n<c_2>") == "i4"
    with pytest.raises(KeyError, match="'nope'"):
        item_tok.item_to_codes("nope")


@pytest.mark.parametrize(
    "text",
    ["<a_1><b_2>", "<a_1><b_2><c_2><a_0>", "<b_1><a_2><c_2>", "x<a_1><b_2><c_2>", "<a_1><b_2><c_3>", "<a_1><b_02><c_x>", ""],
)
def test_string_to_item_rejects_invalid(item_tok, text):
    assert item_tok.string_to_item(text) is None


@pytest.mark.parametrize(
    ("item_ids", "codes", "sizes", "match"),
    [
        (["a", "b"], np.array([[0, 1], [0, 1]]), [2, 2], "not one-to-one"),
        (["a", "a"], np.array([[0, 1], [1, 1]]), [2, 2], "appears more than once"),
        (["a", "b"], np.array([[0, 2], [1, 1]]), [2, 2], "item 'a' has code 2 at level 1"),
        (["a", "b"], np.array([[0, 1], [1, 1]]), [2], "codebook_sizes has 1"),
        (["a"], np.array([0, 1]), [2, 2], "shape"),
    ],
)
def test_invalid_tables_raise(item_ids, codes, sizes, match):
    with pytest.raises(ValueError, match=match):
        ItemTokenizer.from_codes(item_ids, codes, sizes)


def test_add_to_tokenizer_contiguous_stable_idempotent(item_tok, tiny_hf_tokenizer, tiny_chat_tokenizer):
    tok1, tok2 = tiny_hf_tokenizer, tiny_chat_tokenizer  # two independently built tokenizers
    base = len(tok1)
    ids = item_tok.add_to_tokenizer(tok1)
    assert ids == list(range(base, base + 10))
    assert item_tok.add_to_tokenizer(tok2) == ids  # identical across runs
    assert item_tok.add_to_tokenizer(tok1) == ids and len(tok1) == base + 10  # idempotent
    assert item_tok.code_token_ids(tok1) == ids
    # each code token is one token, never merged with or split by text around it
    text = "buy " + item_tok.item_to_string("i1") + " next"
    enc = tok1(text, add_special_tokens=False)["input_ids"]
    assert [i for i in enc if i >= base] == [base + 0, base + 3 + 1, base + 6 + 2]
    assert tok1.convert_ids_to_tokens(ids) == item_tok.code_tokens()
    assert "<a_0>" not in tok1.all_special_tokens


def test_item_token_ids(item_tok, tiny_hf_tokenizer):
    tok = tiny_hf_tokenizer
    ids = item_tok.add_to_tokenizer(tok)
    table = item_tok.item_token_ids(tok)
    assert table.shape == (4, 3)
    for row, item in zip(table, ITEMS, strict=True):
        assert tok.convert_ids_to_tokens(row.tolist()) == item_tok.item_to_tokens(item)
    assert table.min() >= ids[0] and table.max() <= ids[-1]


def test_mismatch_guards(item_tok, tiny_hf_tokenizer, tiny_chat_tokenizer):
    tok = tiny_hf_tokenizer
    with pytest.raises(ValueError, match="lacks 10 of 10"):
        item_tok.code_token_ids(tok)
    other = ItemTokenizer.from_codes(["x"], np.array([[0, 0]]), [3, 5])  # shares <a_*>, <b_0..2> only
    other.add_to_tokenizer(tok)
    with pytest.raises(ValueError, match="different grid"):
        item_tok.add_to_tokenizer(tok)
    shuffled = tiny_chat_tokenizer
    shuffled.add_tokens(["<a_1>", "<a_0>"])
    shuffled.add_tokens(item_tok.code_tokens()[2:])
    with pytest.raises(ValueError, match="not contiguous"):
        item_tok.code_token_ids(shuffled)


def _tensors(latent=5, llm_dim=7, sizes=(3, 3)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {f"codebooks.{i}": torch.randn(c, latent, generator=g) for i, c in enumerate(sizes)}
    out["align_proj.weight"] = torch.randn(llm_dim, latent, generator=g)
    out["align_proj.bias"] = torch.randn(llm_dim, generator=g)
    return out


def test_code_token_embeddings_sum_to_projected_quantised_vector():
    # two quantised levels plus a disambiguation level of size 2
    tensors = _tensors()
    tok = ItemTokenizer.from_codes(["p", "q"], np.array([[0, 2, 0], [0, 2, 1]]), [3, 3, 2], tensors=tensors)
    emb = tok.code_token_embeddings()
    assert emb.shape == (8, 7)
    z_q = tensors["codebooks.0"][0] + tensors["codebooks.1"][2]
    expected = tensors["align_proj.weight"] @ z_q + tensors["align_proj.bias"]
    offsets = tok.level_offsets()
    total = sum(emb[offsets[level] + c] for level, c in enumerate(tok.item_to_codes("q")))
    torch.testing.assert_close(total, expected)
    assert torch.count_nonzero(emb[6:]) == 0
    assert ItemTokenizer.from_codes(ITEMS, CODES, SIZES).code_token_embeddings() is None


def test_save_load_round_trip_is_exact(tmp_path):
    tensors = _tensors(sizes=(3, 3))
    tok = ItemTokenizer.from_codes(
        ["é1", "i/2", "3"], np.array([[0, 2], [1, 1], [2, 0]]), [3, 3], tensors=tensors, meta={"source": "test"}
    )
    tok.save_pretrained(tmp_path / "tok")
    back = ItemTokenizer.from_pretrained(tmp_path / "tok")
    assert back.item_ids == tok.item_ids
    np.testing.assert_array_equal(back.codes, tok.codes)
    assert back.codebook_sizes == tok.codebook_sizes and back.content_hash == tok.content_hash
    assert back.meta == {"source": "test"}
    assert set(back.tensors) == set(tensors)
    for key, value in tensors.items():
        assert torch.equal(back.tensors[key], value)
    torch.testing.assert_close(back.code_token_embeddings(), tok.code_token_embeddings())


def test_content_hash_depends_on_table_only():
    a = ItemTokenizer.from_codes(ITEMS, CODES, SIZES)
    assert a.content_hash == ItemTokenizer.from_codes(ITEMS, CODES.copy(), SIZES).content_hash
    assert a.content_hash != ItemTokenizer.from_codes(ITEMS, CODES[[1, 0, 2, 3]], SIZES).content_hash
    assert a.content_hash != ItemTokenizer.from_codes(ITEMS, CODES, [3, 3, 5]).content_hash


def test_load_detects_tampering_and_partial_saves(tmp_path, item_tok):
    path = item_tok.save_pretrained(tmp_path / "tok")
    lines = (path / "item_codes.jsonl").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (path / "item_codes.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="item_codes.jsonl does not match its sha256"):
        ItemTokenizer.from_pretrained(path)
    (path / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        ItemTokenizer.from_pretrained(path)


def test_load_reports_bad_line(tmp_path, item_tok):
    path = item_tok.save_pretrained(tmp_path / "tok")
    (path / "item_codes.jsonl").write_text('{"item_id": "i1", "codes": [0, 1, 2]}\n{"item_id": "i2"}\n')
    manifest = json.loads((path / "manifest.json").read_text())
    from recdata.io import sha256_file

    manifest["files"]["item_codes.jsonl"] = sha256_file(path / "item_codes.jsonl")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="item_codes.jsonl:2"):
        ItemTokenizer.from_pretrained(path)
