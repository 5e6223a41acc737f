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

    With a disambiguation level, a candidate RQ code is free while some index of that level is unused (an item
    takes the lowest unused one). Raises when no candidate within ``beam`` is free: retrain the tokenizer then
    (the grid would have to grow).

    Vectorised (issue 34): "each item in order takes its first candidate with room left" (serial dictatorship)
    is what deferred acceptance gives when every code ranks the items the same way (their order), so it runs in
    rounds of numpy: each unplaced item proposes its next candidate, each code keeps its earliest proposers up to
    its room and sends the others on. Same codes as the per-item loop it replaced (tested against it).
    """
    x = _new_item_vectors(model, embeddings, len(item_ids))
    lq = model.num_levels
    has_extra = len(codebook_sizes) == lq + 1
    if len(codebook_sizes) not in (lq, lq + 1):
        raise ValueError(f"grid has {len(codebook_sizes)} levels but the RQ-VAE has {lq}")
    existing = np.asarray(existing_codes, dtype=np.int64)
    if existing.size == 0:
        existing = existing.reshape(0, len(codebook_sizes))
    if existing.ndim != 2 or existing.shape[1] != len(codebook_sizes):
        raise ValueError(f"existing codes must be [N, {len(codebook_sizes)}] (one column per grid level), got "
                         f"{existing.shape}")
    if not item_ids:
        return np.zeros((0, len(codebook_sizes)), dtype=np.int64)
    greedy = np.asarray(model.encode_codes(x).cpu(), dtype=np.int64)  # [M, Lq]: what training-time encoding gives
    beams = np.asarray(model.beam_codes(x, beam)[0].cpu(), dtype=np.int64)  # [M, K, Lq]
    m, lq = greedy.shape[0], greedy.shape[1]
    cands = np.concatenate([greedy[:, None, :], beams.reshape(m, -1, lq)], axis=1)  # [M, J=K+1, Lq] greedy first
    j = cands.shape[1]
    # one id per distinct RQ code among the candidates and the existing items' (first Lq levels)
    ids = _row_ids(np.concatenate([cands.reshape(-1, lq), existing[:, :lq]]))
    if len(ids) and int(ids.max()) >= max(1 << 24, 4 * len(ids)):  # packed keys of a huge grid: make them dense
        ids = np.unique(ids, return_inverse=True)[1].reshape(-1)
    cand_id, existing_id = ids[: m * j].reshape(m, j), ids[m * j :]
    num_codes = int(ids.max()) + 1 if len(ids) else 0
    if has_extra:  # room = unused indices of the last level under each RQ code
        extra_size = codebook_sizes[-1]
        inside = (existing[:, -1] >= 0) & (existing[:, -1] < extra_size)
        used = np.unique(existing_id[inside] * extra_size + existing[inside, -1])  # [U] (code, index) pairs, sorted
        used = np.stack([used // extra_size, used % extra_size], axis=1)  # [U, 2]
        room = extra_size - np.bincount(used[:, 0], minlength=num_codes)
    else:
        room = np.ones(num_codes, dtype=np.int64)
        room[existing_id] = 0
    # a repeated candidate changes nothing (a code that refused an item never takes it later), so only codes
    # without room are skipped
    choice = _deferred_acceptance(np.where(room[cand_id] > 0, cand_id, -1), room)  # [M] column, or J: none
    unplaced = np.flatnonzero(choice == j)
    if len(unplaced):
        item = int(unplaced[0])  # the loop stopped at the first item it could not place
        raise ValueError(
            f"no free code for cold-start item {item_ids[item]!r} among its {len(set(cand_id[item].tolist()))} "
            "nearest codes; raise cold_start_beam or retrain the tokenizer (alignrec tokenize) to grow the code space"
        )
    rows = np.arange(m)
    out = cands[rows, choice]  # [M, Lq]
    if has_extra:
        code = cand_id[rows, choice]
        order = np.lexsort((rows, code))  # each code's items in item order take its unused indices in order
        starts = np.searchsorted(code[order], code[order])
        rank = np.empty(m, dtype=np.int64)
        rank[order] = np.arange(m) - starts
        out = np.concatenate([out, _nth_unused(used, code, rank)[:, None]], axis=1)
    return out


def _deferred_acceptance(prefs: np.ndarray, room: np.ndarray) -> np.ndarray:
    """[M] column of ``prefs`` ``[M, J]`` (code ids in preference order, -1 = skip) each item ends up with, or J if
    none: items propose in order of preference; a code keeps its lowest-indexed proposers up to ``room``."""
    m, j = prefs.shape
    valid = prefs >= 0
    # next_valid[i, c] = first column >= c with a candidate (J when none): where a rejected item proposes next
    cols = np.where(valid, np.arange(j), j)
    next_valid = np.minimum.accumulate(np.concatenate([cols, np.full((m, 1), j)], axis=1)[:, ::-1], axis=1)[:, ::-1]
    choice = next_valid[:, 0].copy()  # [M] current proposal (J: out of candidates)
    held = np.zeros(m, dtype=bool)  # [M] kept by its code so far
    while True:
        proposing = np.flatnonzero(~held & (choice < j))
        if not len(proposing):
            return choice
        codes = prefs[proposing, choice[proposing]]
        holders = np.flatnonzero(held)
        holders = holders[np.isin(prefs[holders, choice[holders]], codes)]  # only codes with a new proposal
        items = np.concatenate([holders, proposing])
        item_codes = prefs[items, choice[items]]
        order = np.lexsort((items, item_codes))  # each code's items, lowest index first
        items, item_codes = items[order], item_codes[order]
        rank = np.arange(len(items)) - np.searchsorted(item_codes, item_codes)
        keep = rank < room[item_codes]
        held[items[keep]] = True
        out = items[~keep]
        held[out] = False
        choice[out] = next_valid[out, choice[out] + 1]


def _nth_unused(used: np.ndarray, code: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """[M] the ``rank[i]``-th (0-based) index not in ``used`` (sorted unique ``(code, index)`` pairs) under
    ``code[i]``: ``rank`` plus the number of used indices ``u_t`` (t-th of its code) with ``u_t - t <= rank``."""
    if not len(used):
        return rank.copy()
    ucode, uidx = used[:, 0], used[:, 1]
    t = np.arange(len(used)) - np.searchsorted(ucode, ucode)  # position of each used index within its code
    gap = uidx - t  # unused indices below u_t: non-decreasing within a code
    width = int(max(gap.max(), rank.max())) + 2
    keys = ucode * width + gap  # sorted: by code, then gap
    below = np.searchsorted(keys, code * width + rank, side="right") - np.searchsorted(keys, code * width)
    return rank + below
