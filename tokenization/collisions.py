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
    return int(len(codes) - len(np.unique(codes, axis=0)))


def assign_unique_codes(codes: np.ndarray, last_dists: np.ndarray, codebook_sizes: list[int]) -> AssignmentResult:
    """Make ``codes`` ``[N, L]`` one-to-one; ``last_dists`` ``[N, C_last]`` are last-level residual distances."""
    codes = np.asarray(codes, dtype=np.int64)
    n, levels = codes.shape
    c_last = codebook_sizes[-1]
    if last_dists.shape != (n, c_last):
        raise ValueError(f"last_dists must be [N={n}, C_last={c_last}], got {last_dists.shape}")
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
            occupants[row] += 1  # every non-overflow row is unique here; overflow rows are reassigned below
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
    if count_collisions(out):
        raise AssertionError("collision-free assignment left collisions")  # internal invariant
    return AssignmentResult(out, sizes, collisions_before, moved, bool(overflow))


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
