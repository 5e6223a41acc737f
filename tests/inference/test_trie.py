"""ItemTrie layout (exact CSR values), lookups, subtree exclusion, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.trie import ItemTrie

# items a..d; sorted order is a (5,1,7), d (5,1,8), b (5,2,7), c (6,1,7)
IDS = np.array([[5, 1, 7], [5, 2, 7], [6, 1, 7], [5, 1, 8]])
NAMES = ["a", "b", "c", "d"]


def test_csr_layout_is_exact():
    t = ItemTrie(IDS, NAMES)
    assert t.num_nodes == [1, 2, 3, 4]
    assert [o.tolist() for o in t.offsets] == [[0, 2], [0, 2, 3], [0, 2, 3, 4]]
    assert [c.tolist() for c in t.child_tokens] == [[5, 6], [1, 2, 1], [7, 8, 7, 7]]
    assert t.leaf_item.tolist() == [0, 3, 1, 2]
    assert t.item_nodes[:, 3].tolist() == [0, 0, 0, 1]  # d: root, (5), (5,1), leaf 1
    assert [c.tolist() for c in t.leaf_count] == [[4], [3, 1], [2, 1, 1], [1, 1, 1, 1]]
    assert t.max_children == [2, 2, 2]


def test_children_pads_with_invalid_slots():
    t = ItemTrie(IDS, NAMES)
    child, tokens, valid = t.children(1, torch.tensor([0, 1]))
    assert child[valid].tolist() == [0, 1, 2]
    assert tokens[valid].tolist() == [1, 2, 1]
    assert valid.tolist() == [[True, True], [True, False]]


def test_walk_follows_whole_sequences_only():
    t = ItemTrie(IDS, NAMES)
    # (6, 2) uses tokens valid at each position but is no item's prefix: a per-position check would accept it
    prefixes = torch.tensor([[5, 1, 8], [6, 1, 7], [6, 2, 7], [9, 1, 7], [5, 2, 8]])
    leaves = t.walk(prefixes)
    assert leaves.tolist() == [1, 3, -1, -1, -1]
    assert [NAMES[t.leaf_item[n]] for n in leaves.tolist() if n >= 0] == ["d", "c"]
    assert t.walk(torch.zeros(3, 0, dtype=torch.long)).tolist() == [0, 0, 0]


def test_excluded_nodes_prunes_only_fully_excluded_subtrees():
    t = ItemTrie(IDS, NAMES)
    # row 0 excludes a and d (the whole (5,1) subtree, but not (5)); row 1 excludes c (its whole (6) branch)
    out = t.excluded_nodes([[0, 3, 3], [2], []])
    assert [o.tolist() for o in out] == [[], [1 * 2 + 1], [0 * 3 + 0, 1 * 3 + 2], [0, 1, 1 * 4 + 3]]
    with pytest.raises(ValueError, match="out of range"):
        t.excluded_nodes([[4]])


@pytest.mark.parametrize(
    "ids, names, match",
    [
        (np.array([[1, 2], [1, 2]]), ["x", "y"], "items 'x' \\(row 0\\) and 'y' \\(row 1\\) share"),
        (np.array([1, 2, 3]), None, "non-empty \\[num_items, code_len\\]"),
        (np.zeros((0, 3), dtype=np.int64), None, "non-empty"),
        (np.array([[1.0, 2.0]]), None, "integers"),
        (np.array([[1, 2], [3, -1]]), ["x", "y"], "item 'y' \\(row 1\\) hold a negative"),
        (np.array([[1, 2]]), ["x", "y"], "2 item ids for 1 token-id rows"),
    ],
)
def test_bad_input_raises_naming_the_problem(ids, names, match):
    with pytest.raises(ValueError, match=match):
        ItemTrie(ids, names)


def test_memory_is_linear_in_edges():
    rng = np.random.default_rng(0)
    ids = np.unique(rng.integers(0, 256, size=(50_000, 4)), axis=0)
    t = ItemTrie(ids)
    edges = sum(t.num_nodes[1:])
    # per edge: offset + token + key (int64) + leaf count; per item: leaf_item + 5 ancestors
    assert t.nbytes() <= 8 * (4 * edges + 8 * t.num_items + 8)
    sample = torch.from_numpy(ids[rng.choice(len(ids), 100)])
    assert bool((t.walk(sample) >= 0).all())
    assert sorted(t.leaf_item[t.walk(torch.from_numpy(ids))].tolist()) == list(range(len(ids)))


def test_popularity_bias_is_exact_and_telescopes_to_the_item_log_prior():
    t = ItemTrie(IDS, NAMES)
    weights = np.array([1.0, 2.0, 3.0, 4.0])  # a, b, c, d; prefix (5) holds a+b+d = 7, (5,1) holds a+d = 5
    bias = t.popularity_bias(weights, 0.5)
    assert [b.numel() for b in bias] == t.num_nodes[1:]
    # depth 1 nodes: (5), (6) under a root of weight 10
    assert np.allclose(bias[0].numpy(), [-0.5 * np.log(7 / 10), -0.5 * np.log(3 / 10)])
    # depth 2 nodes: (5,1), (5,2), (6,1)
    assert np.allclose(bias[1].numpy(), [-0.5 * np.log(5 / 7), -0.5 * np.log(2 / 7), 0.0])
    path = sum(bias[d][t.item_nodes[d + 1]] for d in range(t.code_len))  # [items] sum along each path
    assert np.allclose(path.numpy(), -0.5 * np.log(weights / weights.sum()), atol=1e-6)
    assert all(float(b.abs().sum()) == 0 for b in t.popularity_bias(weights, 0.0))


def test_popularity_bias_rejects_bad_weights():
    t = ItemTrie(IDS, NAMES)
    with pytest.raises(ValueError, match="positive"):
        t.popularity_bias(np.array([1.0, 0.0, 1.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match=r"\[4\]"):
        t.popularity_bias(np.ones(3), 1.0)
