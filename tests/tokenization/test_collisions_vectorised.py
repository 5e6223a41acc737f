"""Vectorised collision-free assignment (issue 34): the same codes as the one-item-at-a-time implementation it
replaced (copied below as the reference), on random inputs with heavy collisions, ties and saturated prefixes."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from tokenization.collisions import assign_unique_codes, count_collisions


def reference_assign(codes: np.ndarray, last_dists: np.ndarray, codebook_sizes: list[int]):
    """``assign_unique_codes`` before issue 34, verbatim but for the result type: Python loops over items."""
    codes = np.asarray(codes, dtype=np.int64)
    n, levels = codes.shape
    c_last = codebook_sizes[-1]
    own = last_dists[np.arange(n), codes[:, -1]]
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, row in enumerate(map(tuple, codes.tolist())):
        groups[row].append(i)
    used: dict[tuple[int, ...], set[int]] = defaultdict(set)  # prefix -> used last-level codes
    movers: list[int] = []
    for code, members in groups.items():
        members.sort(key=lambda i: (own[i], i))
        used[code[:-1]].add(code[-1])
        movers.extend(members[1:])
    collisions_before = len(movers)
    out = codes.copy()
    overflow: list[int] = []
    movers.sort(key=lambda i: (tuple(codes[i, :-1]), own[i], i))
    for i in movers:
        prefix = tuple(codes[i, :-1].tolist())
        taken = used[prefix]
        if len(taken) >= c_last:
            overflow.append(i)
            continue
        order = np.lexsort((np.arange(c_last), last_dists[i]))  # nearest first, ties by code index
        code = next(int(c) for c in order if int(c) not in taken)
        taken.add(code)
        out[i, -1] = code
    sizes = list(codebook_sizes)
    if overflow:
        occupants: dict[tuple[int, ...], int] = defaultdict(int)
        for row in map(tuple, out.tolist()):
            occupants[row] += 1
        for i in overflow:
            occupants[tuple(out[i].tolist())] -= 1
        extra = np.zeros((n, 1), dtype=np.int64)
        for i in overflow:
            prefix = tuple(codes[i, :-1].tolist())
            counts = np.array([occupants[(*prefix, c)] for c in range(c_last)])
            code = int(np.lexsort((np.arange(c_last), last_dists[i], counts))[0])
            full = (*prefix, code)
            extra[i, 0] = occupants[full]
            occupants[full] += 1
            out[i, -1] = code
        out = np.concatenate([out, extra], axis=1)
        sizes.append(int(extra.max()) + 1)
    moved = int(((out[:, :levels] != codes).any(axis=1) | (out[:, levels:] != 0).any(axis=1)).sum())
    return out, sizes, collisions_before, moved, bool(overflow)


def _random_case(rng: np.random.Generator, n: int, sizes: list[int], ties: bool):
    """Codes from a small grid (so many collide) and distances that are integers in 0..2 when ``ties``."""
    codes = np.stack([rng.integers(0, s, n) for s in sizes], axis=1) if n else np.zeros((0, len(sizes)), np.int64)
    shape = (n, sizes[-1])
    dists = rng.integers(0, 3, shape).astype(np.float32) if ties else rng.random(shape).astype(np.float32)
    return codes, dists


def _check_same(codes, dists, sizes):
    res = assign_unique_codes(codes, dists, sizes)
    ref_codes, ref_sizes, before, moved, extra = reference_assign(codes, dists, sizes)
    np.testing.assert_array_equal(res.codes, ref_codes)
    assert (res.codebook_sizes, res.collisions_before, res.items_moved, res.disambiguation_level) == (
        ref_sizes, before, moved, extra)
    assert count_collisions(res.codes) == 0


@pytest.mark.parametrize(("n", "sizes", "ties"), [
    (0, [3, 4], False),  # empty catalogue
    (1, [4], False),
    (30, [4], False),  # one level: every item shares the empty prefix, several overflow blocks
    (30, [5], True),
    (200, [2, 3, 4], False),  # saturated prefixes, a disambiguation level
    (200, [2, 3, 4], True),  # ties broken by distance, then code index, then item index
    (500, [8, 16], False),  # collisions without saturation
    (64, [1, 1, 2], True),  # 64 items on 2 codes: 31 blocks of overflow
])
def test_same_codes_as_the_loop_implementation(n, sizes, ties):
    codes, dists = _random_case(np.random.default_rng(n), n, sizes, ties)
    _check_same(codes, dists, sizes)


def test_same_codes_on_many_random_grids():
    rng = np.random.default_rng(7)
    for _ in range(300):
        levels = int(rng.integers(1, 4))
        sizes = [int(rng.integers(1, 4)) for _ in range(levels - 1)] + [int(rng.integers(1, 6))]
        codes, dists = _random_case(rng, int(rng.integers(0, 60)), sizes, ties=bool(rng.integers(0, 2)))
        _check_same(codes, dists, sizes)


def test_identical_items_fill_each_code_once_per_block():
    """40 items on one code of a 4-code last level: keeper + 3 moved fill the codes, then 9 blocks of 4 overflow."""
    codes = np.zeros((40, 2), dtype=np.int64)
    dists = np.tile(np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32), (40, 1))
    res = assign_unique_codes(codes, dists, [1, 4])
    assert res.codebook_sizes == [1, 4, 10] and res.collisions_before == 39
    assert np.bincount(res.codes[:, 1]).tolist() == [10, 10, 10, 10]
    assert sorted(np.bincount(res.codes[:, 2]).tolist()) == [4] * 10
    _check_same(codes, dists, [1, 4])


def test_non_finite_distance_is_refused():
    codes = np.zeros((3, 2), dtype=np.int64)
    dists = np.zeros((3, 4), dtype=np.float32)
    dists[1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        assign_unique_codes(codes, dists, [1, 4])
    dists[1] = [np.inf, 0, 0, 0]
    with pytest.raises(ValueError, match="non-finite distance for item 1"):
        assign_unique_codes(codes, dists, [1, 4])


def test_200k_items_with_heavy_collisions():
    """O(N log N) + O(movers x C): 200k items on a 64 x 16 grid (1,024 codes) resolve in well under a second on a
    free core (the loop implementation needs minutes); checked for the invariants, not timed."""
    rng = np.random.default_rng(0)
    n = 200_000
    codes = np.stack([rng.integers(0, 64, n), rng.integers(0, 16, n)], axis=1)
    dists = rng.random((n, 16)).astype(np.float32)
    res = assign_unique_codes(codes, dists, [64, 16])
    assert res.codes.shape == (n, 3) and count_collisions(res.codes) == 0
    assert res.collisions_before == n - len(np.unique(codes, axis=0))
    np.testing.assert_array_equal(res.codes[:, 0], codes[:, 0])  # prefixes never change
    # every (prefix, last code) holds the same number of items up to one: blocks spread overflow evenly
    per_code = np.bincount(res.codes[:, 0] * 16 + res.codes[:, 1], minlength=64 * 16).reshape(64, 16)
    assert (per_code.max(axis=1) - per_code.min(axis=1) <= 1).all()
    assert res.codebook_sizes[-1] == int(per_code.max())
