"""NegativeSampler: negatives are never the positive or a training item of the user; hard ones share prefixes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sft_tasks import NegativeSampler


def grid(n_a: int, n_b: int, n_c: int) -> np.ndarray:
    return np.array([(a, b, c) for a in range(n_a) for b in range(n_b) for c in range(n_c)])


@pytest.mark.parametrize("strategy", ["random", "popular", "hard"])
def test_negatives_avoid_positive_history_and_duplicates(strategy):
    codes = grid(4, 4, 8)  # 128 items
    ids = [f"x{k}" for k in range(len(codes))]
    popularity = Counter({f"x{k}": (k % 9) + 1 for k in range(len(codes))})
    sampler = NegativeSampler(ids, codes, strategy, popularity, hard_prefix_levels=2)
    rng = np.random.default_rng(0)
    for trial in range(300):
        positive = ids[int(rng.integers(len(ids)))]
        # the history deliberately includes items sharing the positive's prefix
        row = ids.index(positive)
        history = {ids[(row + d) % len(ids)] for d in (1, 2, 3, 40)}
        negatives = sampler.sample(positive, history, 6, rng)
        assert len(negatives) == 6 and len(set(negatives)) == 6, trial
        assert positive not in negatives and not history & set(negatives), trial


def test_hard_negatives_share_the_prefix_when_possible():
    codes = grid(4, 4, 8)
    ids = [f"x{k}" for k in range(len(codes))]
    sampler = NegativeSampler(ids, codes, "hard", hard_prefix_levels=2)
    rng = np.random.default_rng(1)
    for positive in ids[::7]:
        prefix = tuple(codes[ids.index(positive)][:2])
        negatives = sampler.sample(positive, set(), 5, rng)
        assert all(tuple(codes[ids.index(n)][:2]) == prefix for n in negatives)
    assert set(sampler.level_counts) == {2}
    # asking for more than the 7 siblings falls back to a 1-level prefix, then random
    negatives = sampler.sample("x0", set(), 7 + 24 + 3, rng)
    assert len(set(negatives)) == 34 and "x0" not in negatives
    assert sampler.level_counts[1] == 24 and sampler.level_counts[0] == 3


def test_popular_negatives_follow_train_counts():
    codes = grid(2, 2, 5)
    ids = [f"x{k}" for k in range(20)]
    popularity = Counter({"x1": 100, "x2": 100, "x3": 1})  # every other item was never trained on
    sampler = NegativeSampler(ids, codes, "popular", popularity, alpha=1.0)
    rng = np.random.default_rng(0)
    drawn = Counter(n for _ in range(200) for n in sampler.sample("x0", set(), 1, rng))
    assert set(drawn) <= {"x1", "x2", "x3"}
    assert drawn["x1"] > drawn["x3"] and drawn["x2"] > drawn["x3"]


def test_small_catalogue_returns_what_is_left_and_counts_the_shortfall():
    codes = grid(1, 2, 2)
    ids = ["a", "b", "c", "d"]
    sampler = NegativeSampler(ids, codes, "random")
    negatives = sampler.sample("a", {"b"}, 5, np.random.default_rng(0))
    assert sorted(negatives) == ["c", "d"]
    assert sampler.shortfall == 3
