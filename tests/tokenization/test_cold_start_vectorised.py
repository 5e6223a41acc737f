"""Vectorised cold-start assignment (issue 34): the same codes (and the same error) as the per-item loop it replaced,
copied below as the reference, on seeded random grids with collisions, repeated candidates and full codes."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tokenization.collisions import assign_cold_start, count_collisions


@torch.no_grad()
def reference_cold_start(model, existing_codes, codebook_sizes, embeddings, item_ids, beam=64) -> np.ndarray:
    """``assign_cold_start`` before issue 34, verbatim but for the input check: a Python loop over new items."""
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    lq = model.num_levels
    has_extra = len(codebook_sizes) == lq + 1
    taken = {tuple(r) for r in np.asarray(existing_codes).tolist()}
    used_extra: dict[tuple[int, ...], set[int]] = defaultdict(set)
    if has_extra:
        for row in taken:
            used_extra[row[:-1]].add(row[-1])
    greedy = model.encode_codes(x).cpu().tolist()  # [M, Lq]: what training-time encoding would give
    cands = model.beam_codes(x, beam)[0].cpu().tolist()  # [M, K, Lq]
    out = np.zeros((len(item_ids), len(codebook_sizes)), dtype=np.int64)
    for m, item in enumerate(item_ids):
        ranked = dict.fromkeys([tuple(greedy[m]), *map(tuple, cands[m])])  # greedy first, then beam order
        for cand in ranked:
            if has_extra:
                free = [k for k in range(codebook_sizes[-1]) if k not in used_extra[cand]]
                if free:
                    full = (*cand, free[0])
                    used_extra[cand].add(free[0])
                    break
            elif cand not in taken:
                full = cand
                break
        else:
            raise ValueError(
                f"no free code for cold-start item {item!r} among its {len(ranked)} nearest codes; raise "
                "cold_start_beam or retrain the tokenizer (alignrec tokenize) to grow the code space"
            )
        taken.add(full)
        out[m] = full
    return out


class ScriptedRQ(torch.nn.Module):
    """An RQ-VAE stand-in whose greedy and beam codes are given (row ``i`` of the embeddings = item ``i``)."""

    def __init__(self, greedy: np.ndarray, beams: np.ndarray):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the device
        self.greedy, self.beams = torch.from_numpy(greedy), torch.from_numpy(beams)
        self.num_levels, self.cfg = greedy.shape[1], SimpleNamespace(in_dim=1)

    def encode_codes(self, x):
        return self.greedy[x[:, 0].long()]

    def beam_codes(self, x, beam):
        return self.beams[x[:, 0].long(), :beam], None


def _random_case(rng: np.random.Generator):
    """A small grid (so candidates collide and codes fill up), existing items on part of it, candidates drawn from
    the grid with repeats (a beam list may repeat the greedy code), sometimes more new items than free codes."""
    lq = int(rng.integers(1, 4))
    sizes = [int(rng.integers(1, 6)) for _ in range(lq)]
    extra = int(rng.integers(1, 5)) if rng.random() < 0.5 else 0
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, lq)
    if extra:
        grid = np.concatenate([np.repeat(grid, extra, axis=0), np.tile(np.arange(extra), len(grid))[:, None]], axis=1)
    existing = grid[rng.random(len(grid)) < rng.random()]
    free = len(grid) - len(existing)
    m, k = int(rng.integers(1, max(2, free + 2))), int(rng.integers(1, 9))
    greedy = np.stack([rng.integers(0, s, m) for s in sizes], axis=1)
    beams = np.stack([rng.integers(0, s, (m, k)) for s in sizes], axis=2)
    sizes = [*sizes, extra] if extra else sizes
    return ScriptedRQ(greedy, beams), existing, sizes, np.arange(m, dtype=np.float32)[:, None], k


def _outcome(fn, *args):
    try:
        return fn(*args)
    except ValueError as exc:
        return str(exc)


def test_same_codes_and_errors_as_the_loop_on_random_grids():
    rng = np.random.default_rng(0)
    failed = placed = placed_extra = 0
    for case in range(300):
        model, existing, sizes, x, k = _random_case(rng)
        ids = [f"n{case}_{i}" for i in range(len(x))]
        for beam in (1, k):
            want = _outcome(reference_cold_start, model, existing, sizes, x, ids, beam)
            got = _outcome(assign_cold_start, model, existing, sizes, x, ids, beam)
            if isinstance(want, str):
                assert got == want
                failed += 1
            else:
                np.testing.assert_array_equal(got, want)
                assert count_collisions(np.concatenate([existing, got])) == 0
                placed += 1
                placed_extra += len(sizes) > model.num_levels
    assert failed > 100 and placed > 200 and placed_extra > 50  # both outcomes, both grid kinds


@pytest.mark.parametrize("extra", [0, 2])
def test_real_rqvae_beams_same_codes_as_the_loop(extra):
    """An (untrained) RQ-VAE's real greedy codes and beam lists; existing items on part of an 8 x 8 grid."""
    from tokenization.rqvae import RQVAE, RQVAEConfig

    torch.manual_seed(0)
    model = RQVAE(RQVAEConfig(in_dim=10, codebook_sizes=[8, 8], hidden_dims=[16], latent_dim=6)).eval()
    rng = np.random.default_rng(extra)
    x = (rng.normal(0, 2, (4, 10))[rng.integers(0, 4, 300)] + rng.normal(0, 0.3, (300, 10))).astype(np.float32)
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8), *([np.arange(extra)] if extra else []), indexing="ij"),
                    -1).reshape(-1, 3 if extra else 2)
    existing = grid[rng.random(len(grid)) < 0.4]
    sizes = [8, 8, extra] if extra else [8, 8]
    for n, beam in ((10, 8), (30, 16), (len(grid) - len(existing), 64), (300, 64)):
        ids = [f"n{i}" for i in range(n)]
        want = _outcome(reference_cold_start, model, existing, sizes, x[:n], ids, beam)
        got = _outcome(assign_cold_start, model, existing, sizes, x[:n], ids, beam)
        assert not isinstance(want, str) or got == want
        np.testing.assert_array_equal(got, want)


def test_existing_codes_must_match_the_grid():
    model = ScriptedRQ(np.zeros((1, 2), np.int64), np.zeros((1, 1, 2), np.int64))
    with pytest.raises(ValueError, match=r"existing codes must be \[N, 2\]"):
        assign_cold_start(model, np.zeros((3, 3), np.int64), [2, 2], np.zeros((1, 1), np.float32), ["a"])
    assert assign_cold_start(model, [], [2, 2], np.zeros((0, 1), np.float32), []).shape == (0, 2)


def test_beam_codes_in_blocks_equal_one_block():
    """``RQVAE.beam_codes`` bounds its distance tensor by searching blocks of rows: every row as in one block."""
    from tokenization.rqvae import RQVAE, RQVAEConfig

    torch.manual_seed(0)
    model = RQVAE(RQVAEConfig(in_dim=12, codebook_sizes=[16, 8, 5], hidden_dims=[16], latent_dim=7)).eval()
    x = torch.randn(300, 12)
    codes, score = model.beam_codes(x, 32, max_elements=1 << 40)
    for max_elements in (1, 32 * 16 * 7 * 50):  # a row per block; 50 rows per block (the last one shorter)
        blocked = model.beam_codes(x, 32, max_elements=max_elements)
        assert torch.equal(blocked[0], codes) and torch.equal(blocked[1], score)


def test_a_large_grid_needs_no_memory_per_grid_code():
    """Code ids are dense over the codes seen: a 3 x 2^16-wide grid (2^48 codes, packed into one int64 key) is no
    array of that size."""
    greedy = np.array([[65535, 1, 2], [65535, 1, 2], [0, 0, 0]], dtype=np.int64)
    beams = np.stack([greedy, greedy + np.array([0, 0, 1])], axis=1)  # [3, 2, 3]
    existing = np.array([[0, 0, 0]], dtype=np.int64)
    got = assign_cold_start(ScriptedRQ(greedy, beams), existing, [65536] * 3, np.arange(3, dtype=np.float32)[:, None],
                            ["a", "b", "c"], beam=2)
    assert got.tolist() == [[65535, 1, 2], [65535, 1, 3], [0, 0, 1]]
