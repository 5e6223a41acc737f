"""scripts/bench_decode_scale.py: the one-level catalogue is built exactly as before ``levels`` existed (old numbers
stay reproducible), deeper codes are well formed, and a tiny run end to end reports every (levels, mode) cell."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference.trie import ItemTrie
from tests.scripts import loaded_script
from tokenization import auto_codebook_size


@pytest.fixture(scope="module")
def bench():
    yield from loaded_script("bench_decode_scale")


def old_token_ids(num_items: int, rng: np.random.Generator, words: int) -> np.ndarray:
    """The construction before ``levels``: one random cluster per item, then the item-id token."""
    codebook = auto_codebook_size(num_items)
    clusters = rng.integers(0, codebook, size=num_items)
    return np.stack([words + clusters, words + codebook + np.arange(num_items)], 1)


@pytest.mark.parametrize("num_items", [300, 5000])
def test_one_level_token_ids_and_rng_stream_are_the_old_ones(bench, num_items):
    old_rng, new_rng = np.random.default_rng(7), np.random.default_rng(7)
    old = old_token_ids(num_items, old_rng, bench.WORD_TOKENS)
    codebook, new = bench.item_token_ids(num_items, 1, new_rng)
    assert codebook == auto_codebook_size(num_items)
    assert new.dtype == old.dtype and np.array_equal(new, old)
    assert new_rng.bit_generator.state == old_rng.bit_generator.state  # the histories drawn next are the old ones


def test_two_level_token_ids_are_per_level_codes_then_a_unique_item_id(bench):
    n, words = 5000, bench.WORD_TOKENS
    codebook, ids = bench.item_token_ids(n, 2, np.random.default_rng(0))
    assert codebook == auto_codebook_size(n, 2) == 32
    assert ids.shape == (n, 3)
    vocab = words + 2 * codebook + n
    assert ids.min() >= words and ids.max() < vocab
    for level in range(2):  # level l's codes at WORD_TOKENS + l * C, all C of them used at this size
        assert set(np.unique(ids[:, level] - words - level * codebook)) == set(range(codebook))
    assert np.array_equal(ids[:, 2], words + 2 * codebook + np.arange(n))  # the item-id column: unique, in order
    trie = ItemTrie(ids)  # colliding 2-code prefixes are told apart by the id
    assert trie.code_len == 3 and trie.num_nodes[3] == n and trie.unique_last_tokens


def test_one_level_catalogue_prompts_and_model_are_the_old_ones(bench):
    cfg = bench.BenchDecodeScaleConfig(items=[400], users=3, prompt_len=7, warmup=1, batches=2, seed=3)
    cat = bench.build_catalogue(400, cfg)  # levels=1 by default
    rng = np.random.default_rng(cfg.seed)
    ids = old_token_ids(400, rng, bench.WORD_TOKENS)
    history_len = (cfg.prompt_len + 1) // 2
    for prompt, exclude in zip(cat.prompts, cat.exclude, strict=True):
        history = rng.integers(0, 400, size=(cfg.users, history_len))
        assert np.array_equal(prompt.numpy(), ids[history].reshape(cfg.users, -1)[:, -cfg.prompt_len:])
        assert exclude == history.tolist()
    assert cat.model.config.vocab_size == bench.WORD_TOKENS + cat.codebook + 400
    assert cat.model.config.max_position_embeddings == cfg.prompt_len + 8


def test_deeper_catalogue_prompts_hold_whole_items(bench):
    cfg = bench.BenchDecodeScaleConfig(items=[400], users=2, prompt_len=7, warmup=0, batches=1)
    cat = bench.build_catalogue(400, cfg, levels=2)
    assert cat.levels == 2 and cat.trie.code_len == 3 and cat.prompts[0].shape == (2, 7)
    assert len(cat.exclude[0][0]) == 3  # ceil(7 / 3) history items, the last 7 of their 9 code tokens
    assert cat.model.config.max_position_embeddings >= cfg.prompt_len + 3


def test_tiny_run_reports_each_levels_and_mode(bench, tmp_path):
    out = tmp_path / "ds.json"
    assert bench.main(["--items", "300", "600", "--levels", "1", "2", "--users", "2", "--num_beams", "4",
                       "--warmup", "0", "--batches", "1", "--isolate", "false", "--head_weights", "0",
                       "--normalisers", "children", "--out_json", str(out)]) == 0
    result = json.loads(out.read_text())
    cells = {(c["items"], c["levels"]): c for c in result["cells"]}
    assert set(cells) == {(300, 1), (600, 1), (300, 2), (600, 2)}
    for (n, levels), cell in cells.items():
        assert "error" not in cell and cell["codebook"] == auto_codebook_size(n, levels)
        assert len(cell["edges_per_user_step"]) == levels + 1 and cell["edges_per_user"] > 0
    assert set(result["growth"]) == {"children, no head, 1 RQ level", "children, no head, 2 RQ levels"}
    with pytest.raises(ValueError, match="levels"):
        bench.BenchDecodeScaleConfig(levels=[0])
