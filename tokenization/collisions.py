"""Collision-free code assignment, after training and for cold-start items.

After training (``assign_unique_codes``), items sharing a full code are resolved deterministically:

1. In each group of items with the same code, the item nearest to the code (smallest last-level distance,
   then lowest index) keeps it; the others are *movers*.
2. Movers, in order (prefix, distance, index), take the nearest unused code at the last level under the
   same prefix (levels 0..L-2 unchanged).
3. Only if a prefix is saturated (more items than last-level codes) is a disambiguation level appended,
   for ALL items (0 for everyone else, so codes keep one length): each overflow item joins the last-level
   code under its prefix with the fewest occupants (then the nearest) and takes the next free index there.

With an item-id level (``with_item_id_level``) nothing is moved: each item's greedy RQ code is kept and a last
level holding the item's own index makes the code unique.

Cold-start items (``assign_cold_start``) take their greedy RQ code when free, else walk their beam-ranked
candidate codes (by final residual) and take the first free one, never touching existing items or the grid.
With an item-id level (``assign_cold_start_with_ids``) they keep their greedy RQ code and extend the id level.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class AssignmentResult:
    codes: np.ndarray  # [N, L] or [N, L + 1] with a disambiguation level
    codebook_sizes: list[int]
    collisions_before: int  # items sharing a full code with an earlier-kept item
    items_moved: int  # items whose code changed
    disambiguation_level: bool

    def summary(self) -> dict[str, Any]:
        return {
            "collisions_before": self.collisions_before,
            "collisions_after": count_collisions(self.codes),
            "items_moved": self.items_moved,
            "disambiguation_level": self.disambiguation_level,
            "disambiguation_size": self.codebook_sizes[-1] if self.disambiguation_level else 0,
        }


def count_collisions(codes: np.ndarray) -> int:
    """Items that share their full code with another item, counting each group's first item as fine."""
    if len(codes) == 0:
        return 0
    keys = np.sort(_row_ids(np.asarray(codes, dtype=np.int64)))  # a sort: np.unique's hashing is slower here
    return int((keys[1:] == keys[:-1]).sum())


def assign_unique_codes(codes: np.ndarray, last_dists: np.ndarray, codebook_sizes: list[int]) -> AssignmentResult:
    """Make ``codes`` ``[N, L]`` one-to-one; ``last_dists`` ``[N, C_last]`` are last-level residual distances.

    Vectorised (sorts and group-by in numpy, O(N log N) plus O(movers x C_last)): the greedy steps 2 and 3 are
    sequential only within one prefix, so they run in rounds, round ``j`` placing the ``j``-th item of every
    prefix at once; at most ``C_last`` rounds, whatever ``N``. Same codes as the one-item-at-a-time definition.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n, levels = codes.shape
    c_last = codebook_sizes[-1]
    last_dists = np.asarray(last_dists)
    if last_dists.shape != (n, c_last):
        raise ValueError(f"last_dists must be [N={n}, C_last={c_last}], got {last_dists.shape}")
    out = codes.copy()
    if n == 0:
        return AssignmentResult(out, list(codebook_sizes), 0, 0, False)
    own = last_dists[np.arange(n), codes[:, -1]]  # [N] distance to the item's own code
    if not np.isfinite(own).all():
        raise ValueError(f"last_dists has a non-finite distance for item {int(np.flatnonzero(~np.isfinite(own))[0])}")
    full_id, prefix_id = _row_ids(codes), _row_ids(codes[:, :-1])
    order = np.lexsort((np.arange(n), own, full_id))  # each code's items, nearest (then lowest index) first
    first = np.r_[True, full_id[order][1:] != full_id[order][:-1]]
    keepers, movers = order[first], order[~first]
    movers = movers[np.lexsort((movers, own[movers], prefix_id[movers]))]  # step 2's order: prefix, distance, index
    prefixes, rows, counts = np.unique(prefix_id[movers], return_inverse=True, return_counts=True)
    rows = rows.reshape(-1)  # [M] the row of each mover's prefix in ``taken``
    taken = np.zeros((len(prefixes), c_last), dtype=bool)  # [P, C_last] last-level codes used under each prefix
    keep_rows = np.searchsorted(prefixes, prefix_id[keepers])
    hit = keep_rows < len(prefixes)
    hit[hit] = prefixes[keep_rows[hit]] == prefix_id[keepers[hit]]
    taken[keep_rows[hit], codes[keepers[hit], -1]] = True
    rank = np.arange(len(movers)) - np.repeat(np.cumsum(counts) - counts, counts)  # [M] position within its prefix
    free = c_last - taken.sum(axis=1)  # [P] codes left for the movers of each prefix
    placed = rank < free[rows]
    _greedy_rounds(movers[placed], rows[placed], rank[placed], taken, last_dists, out)
    over = ~placed  # saturated prefixes: blocks of C_last items, each block spread over all codes once more
    q = rank[over] - free[rows[over]]  # [O] position among its prefix's overflow items
    block = q // c_last
    if len(q):
        group = np.unique(rows[over] * (int(block.max()) + 1) + block, return_inverse=True)[1].reshape(-1)
        _greedy_rounds(movers[over], group, q % c_last, np.zeros((int(group.max()) + 1, c_last), dtype=bool),
                       last_dists, out)
        extra = np.zeros((n, 1), dtype=np.int64)
        extra[movers[over], 0] = block + 1  # every code already holds one item per earlier block
        out = np.concatenate([out, extra], axis=1)
    sizes = list(codebook_sizes) + ([int(out[:, -1].max()) + 1] if len(q) else [])
    moved = int(((out[:, :levels] != codes).any(axis=1) | (out[:, levels:] != 0).any(axis=1)).sum())
    if count_collisions(out):
        raise AssertionError("collision-free assignment left collisions")  # internal invariant
    return AssignmentResult(out, sizes, len(movers), moved, bool(len(q)))


def _row_ids(rows: np.ndarray) -> np.ndarray:
    """[N] an id per distinct row of ``rows`` ``[N, L]`` (0 for all when ``L == 0``), ordered like the rows."""
    n, width = rows.shape
    if width == 0:
        return np.zeros(n, dtype=np.int64)
    radix = rows.max(axis=0) + 1
    if rows.min() >= 0 and float(np.prod(radix.astype(np.float64))) < 2.0**62:  # pack into one int64 key
        key = np.zeros(n, dtype=np.int64)
        for level in range(width):
            key = key * radix[level] + rows[:, level]
        return key
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


def _greedy_rounds(items: np.ndarray, groups: np.ndarray, position: np.ndarray, taken: np.ndarray,
                   last_dists: np.ndarray, out: np.ndarray) -> None:
    """Each item, in ``position`` order within its group, takes its nearest code not ``taken`` in its group (ties:
    lowest code), written to ``out[item, -1]``; round ``j`` serves every group's ``j``-th item at once."""
    order = np.argsort(position, kind="stable")
    items, groups, position = items[order], groups[order], position[order]
    bounds = np.searchsorted(position, np.arange(int(position.max()) + 2)) if len(position) else [0]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        sel, g = items[start:stop], groups[start:stop]
        d = last_dists[sel].astype(np.float64)  # [G_j, C_last]
        if not np.isfinite(d).all():
            raise ValueError("last_dists must be finite (squared distances); got NaN/inf for a colliding item")
        d[taken[g]] = np.inf
        choice = d.argmin(axis=1)  # first minimum: nearest, then lowest code index
        taken[g, choice] = True
        out[sel, -1] = choice


def with_item_id_level(codes: np.ndarray, codebook_sizes: list[int], first_id: int = 0) -> AssignmentResult:
    """Append an item-id level to greedy RQ codes ``[N, L]``: item ``i`` gets index ``first_id + i`` there.

    Every code is unique through its last level, so no item is moved and RQ prefixes may be shared.
    """
    codes = np.asarray(codes, dtype=np.int64)
    ids = np.arange(first_id, first_id + len(codes), dtype=np.int64)[:, None]
    return AssignmentResult(np.concatenate([codes, ids], axis=1), [*codebook_sizes, first_id + len(codes)],
                            count_collisions(codes), 0, False)


def _new_item_vectors(model: Any, embeddings: np.ndarray, count: int) -> torch.Tensor:
    """``[count, in_dim]`` float32 vectors of new items on the RQ-VAE's device (``ValueError`` on a bad shape)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    in_dim = model.cfg.in_dim
    if embeddings.ndim != 2 or embeddings.shape != (count, in_dim):
        raise ValueError(f"cold-start embeddings must be [{count}, {in_dim}], got {embeddings.shape}")
    return torch.from_numpy(embeddings).to(next(model.parameters()).device)


@torch.no_grad()
def assign_cold_start_with_ids(model: Any, codebook_sizes: list[int], embeddings: np.ndarray,
                               item_ids: list[str]) -> AssignmentResult:
    """Item-id level: new items keep their greedy RQ code and take the ids after the last one; the id level
    grows by one per item (appended last in the vocabulary, so existing token ids stay valid)."""
    prefix = model.encode_codes(_new_item_vectors(model, embeddings, len(item_ids))).cpu().numpy()
    return with_item_id_level(prefix, list(codebook_sizes[:-1]), first_id=codebook_sizes[-1])


def assign_cold_start(
    model: Any,
    existing_codes: np.ndarray,
    codebook_sizes: list[int],
    embeddings: np.ndarray,
    item_ids: list[str],
    beam: int = 64,
) -> np.ndarray:
    """Codes ``[M, L]`` for new items: for each (in order) its greedy RQ code if free, else the best free one of its beam.

    With a disambiguation level, a candidate RQ code is free while some index of that level is unused.
    Raises when no candidate within ``beam`` is free: retrain the tokenizer then (the grid would have to grow).
    """
    x = _new_item_vectors(model, embeddings, len(item_ids))
    lq = model.num_levels
    has_extra = len(codebook_sizes) == lq + 1
    if len(codebook_sizes) not in (lq, lq + 1):
        raise ValueError(f"grid has {len(codebook_sizes)} levels but the RQ-VAE has {lq}")
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
