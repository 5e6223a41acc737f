"""Issue 34: the CSR beam search equals the padded one it replaced (items exactly, scores to 1e-5) on tries of
very different shapes, and its per-step memory is the live beams' real children (checked by shapes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.beam_search import constrained_beam_search, row_logsumexp, segmented_topk
from inference.recommender import left_pad, tokenize_prompts
from inference.trie import ItemTrie
from tests.inference.conftest import PROMPTS, random_codes, tiny_decoder
from tests.inference.reference_beam_search import padded_beam_search

UNEQUAL = [30, 1, 2, 1]  # level-1 cluster sizes of the item-id-level trie: one huge cluster, three tiny


def _shape(name: str) -> tuple[np.ndarray, list[int]]:
    """(codes [N, L], codebook sizes) of one trie shape."""
    if name == "grid":  # 14 of the 27 cells of a 3 x 3 x 3 grid
        return random_codes(14, [3, 3, 3]), [3, 3, 3]
    if name == "unequal_id_level":  # a cluster then the item's own token (the shipped layout), clusters 30/1/2/1
        n = sum(UNEQUAL)
        return np.stack([np.repeat(np.arange(len(UNEQUAL)), UNEQUAL), np.arange(n)], 1), [len(UNEQUAL), n]
    if name == "unequal_deep":  # prefix (0,) holds 24 leaves over 4 x 6, (1,) one leaf, (2,) two
        rows = [(0, a, b) for a in range(4) for b in range(6)] + [(1, 0, 0), (2, 0, 0), (2, 0, 1)]
        return np.array(rows), [3, 4, 6]
    assert name == "singletons"  # every cluster holds one item: a width-1 id step
    return np.stack([np.arange(6), np.arange(6)], 1), [6, 6]


def _setup(name: str, architecture: str = "llama"):
    from tests.conftest import build_tiny_hf_tokenizer, build_tiny_llama
    from tokenization import ItemTokenizer

    codes, sizes = _shape(name)
    hf_tok = build_tiny_hf_tokenizer()
    item_tok = ItemTokenizer.from_codes([f"item{i}" for i in range(len(codes))], codes, sizes)
    item_tok.add_to_tokenizer(hf_tok)
    model = tiny_decoder(architecture, len(hf_tok), build_tiny_llama(len(hf_tok)))
    with torch.no_grad():  # sharper than a random init: rankings have clear gaps, beams really prune
        model.lm_head.weight.mul_(8.0)
    input_ids, mask = left_pad(tokenize_prompts(hf_tok, PROMPTS))
    return model.eval(), ItemTrie(item_tok.item_token_ids(hf_tok), item_tok.item_ids), input_ids, mask


def _options(trie: ItemTrie) -> dict[str, dict]:
    n = trie.num_items
    weights = np.arange(1, n + 1, dtype=np.float64) ** 2
    out = {
        "plain": {},
        "exclude": {"exclude": [[0, 1, 2], [], list(range(0, n, 2))]},
        "allowed": {"allowed": [None, list(range(n // 2)), [n - 1]], "exclude": [[], [0], []]},
        "popularity": {"node_bias": trie.popularity_bias(weights, 0.7)},
    }
    if trie.unique_last_tokens:
        out["item_head"] = {"item_head_weight": 0.6, "exclude": [[0], [], [1, 2]]}
    return out


@pytest.mark.parametrize(("name", "architecture"), [
    ("grid", "llama"), ("unequal_id_level", "llama"), ("unequal_id_level", "phi"), ("unequal_deep", "gpt2"),
    ("singletons", "llama"),
])
def test_csr_search_equals_the_padded_search_it_replaced(name, architecture):
    model, trie, input_ids, mask = _setup(name, architecture)
    for option, kwargs in _options(trie).items():
        for beams in (1, 4, 9, trie.num_items + 2):  # +2: more beams than items, dead beams padded
            new = constrained_beam_search(model, input_ids, mask, trie, num_beams=beams, **kwargs)
            old = padded_beam_search(model, input_ids, mask, trie, num_beams=beams, **kwargs)
            assert new.items.tolist() == old.items.tolist(), (option, beams)
            assert torch.allclose(new.scores, old.scores, atol=1e-5, rtol=0), (option, beams)
            assert bool((new.items >= 0).eq(torch.isfinite(new.scores)).all())


def test_step_memory_is_the_live_beams_children_not_the_widest_cluster(monkeypatch):
    model, trie, input_ids, mask = _setup("unequal_id_level")
    assert trie.max_children == [len(UNEQUAL), max(UNEQUAL)]
    edges: list[tuple[int, int, int]] = []  # (depth, states, edges)
    csr = ItemTrie.children_csr

    def spy(self, depth, nodes):
        out = csr(self, depth, nodes)
        edges.append((depth, nodes.numel(), out[0].numel()))
        return out

    def padded(*_a, **_k):
        raise AssertionError("the beam search must not pad children to the largest cluster")

    monkeypatch.setattr(ItemTrie, "children_csr", spy)
    monkeypatch.setattr(ItemTrie, "children", padded)
    out = constrained_beam_search(model, input_ids, mask, trie, num_beams=4)
    batch = len(PROMPTS)
    # depth 0: one root per row, 4 clusters each; depth 1: the 4 beams are the 4 clusters, 30 + 1 + 2 + 1 edges
    assert edges == [(0, batch, batch * len(UNEQUAL)), (1, batch * 4, batch * sum(UNEQUAL))]
    assert batch * sum(UNEQUAL) < batch * 4 * max(UNEQUAL)  # what padding to the largest cluster held
    assert out.items.shape == (batch, 4) and bool((out.items >= 0).all())


def test_children_csr_is_exact_and_skips_negative_nodes():
    t = ItemTrie(np.array([[5, 1, 7], [5, 2, 7], [6, 1, 7], [5, 1, 8]]))  # depth-1 nodes: (5) -> 2 kids, (6) -> 1
    owner, child, tokens = t.children_csr(1, torch.tensor([1, -1, 0, 0]))
    assert owner.tolist() == [0, 2, 2, 3, 3]
    assert child.tolist() == [2, 0, 1, 0, 1]
    assert tokens.tolist() == [1, 1, 2, 1, 2]
    empty = t.children_csr(0, torch.tensor([-1, -1]))
    assert [e.numel() for e in empty] == [0, 0, 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_logsumexp_is_log_softmax_normaliser_in_bounded_chunks(dtype, monkeypatch):
    logits = (torch.randn(37, 1000, generator=torch.Generator().manual_seed(0)) * 5).to(dtype)
    reference = logits.float() - torch.log_softmax(logits.float(), dim=-1)  # [rows, vocab], every column equal
    chunks: list[tuple[int, ...]] = []
    full = torch.logsumexp
    monkeypatch.setattr(torch, "logsumexp", lambda x, dim: chunks.append(tuple(x.shape)) or full(x, dim=dim))
    norm = row_logsumexp(logits, max_elements=3000)
    assert norm.dtype == torch.float32
    assert torch.allclose(norm, reference[:, 0], atol=1e-5, rtol=0)
    assert chunks == [(3, 1000)] * 12 + [(1, 1000)]  # 3000 elements per chunk, never [37, 1000] in float32
    chunks.clear()
    row_logsumexp(logits, max_elements=10)  # a budget under one row: one row at a time
    assert chunks == [(1, 1000)] * 37


def test_segmented_topk_matches_a_per_segment_sort():
    gen = torch.Generator().manual_seed(1)
    sizes = [0, 7, 1, 30, 12, 0]
    segment = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    values = torch.randn(int(segment.numel()), generator=gen)
    values[3] = float("-inf")
    pos, found = segmented_topk(values, segment, len(sizes), 5)
    assert pos.shape == found.shape == (len(sizes), 5)
    start = 0
    for s, size in enumerate(sizes):
        ref = values[start:start + size].sort(descending=True, stable=True)
        assert found[s].tolist() == [i < size for i in range(5)]
        assert (pos[s][found[s]] - start).tolist() == ref.indices[:5].tolist()
        start += size
    ties = segmented_topk(torch.tensor([1.0, 2.0, 2.0, 1.0, 3.0]), torch.tensor([0, 0, 0, 1, 1]), 2, 2)
    assert ties[0].tolist() == [[1, 2], [4, 3]]  # equal values keep their input order
