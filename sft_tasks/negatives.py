"""Negative sampling (the paper's addition): ``binary`` yes/no, ``choice`` among candidates, DPO pairs.

Negatives never equal the positive or any item of the user's training part (so never an item of the
history either). Valid/test targets are *not* excluded: excluding them would leak held-out labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator, Mapping

import datasets
import numpy as np

from sft_tasks.base import ListTask, rows_to_dataset
from sft_tasks.context import TaskContext
from sft_tasks.sequential import seqrec_window_prompt
from sft_tasks.templates import NO, YES

PREFERENCE_FEATURES = datasets.Features(
    {c: datasets.Value("string") for c in ("prompt", "chosen", "rejected", "user_id", "strategy")}
)


class NegativeSampler:
    """Draws ``n`` distinct negatives for a positive, randomly, by popularity, or hard (shared code prefix).

    Hard negatives share the positive's first ``hard_prefix_levels`` levels; when fewer such items are
    allowed, the prefix is shortened level by level, then random items fill the rest. ``level_counts``
    records how many negatives came from each prefix length (0 = random) for the stats.
    """

    def __init__(
        self,
        item_ids: list[str],
        codes: np.ndarray,
        strategy: str = "random",
        popularity: Mapping[str, int] | None = None,  # split.train_popularity()
        alpha: float = 0.75,
        hard_prefix_levels: int = 2,
    ) -> None:
        self.item_ids = list(item_ids)
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.codes = np.asarray(codes)  # [N, L]
        self.strategy = strategy
        self.level_counts: Counter = Counter()
        self.shortfall = 0
        if strategy == "popular":
            counts = np.array([(popularity or {}).get(i, 0) for i in self.item_ids], dtype=np.float64)
            weights = counts**alpha
            if weights.sum() == 0:
                raise ValueError("popular negatives need training interactions; no item has a train count")
            self.cdf = np.cumsum(weights / weights.sum())
        self.max_level = min(hard_prefix_levels, self.codes.shape[1] - 1)
        self.groups: list[dict[tuple[int, ...], list[int]]] = [{} for _ in range(self.max_level + 1)]
        if strategy == "hard":
            for level in range(1, self.max_level + 1):
                for row, prefix in enumerate(map(tuple, self.codes[:, :level].tolist())):
                    self.groups[level].setdefault(prefix, []).append(row)

    def _draw(self, rng: np.random.Generator, k: int) -> np.ndarray:
        if self.strategy == "popular":
            return np.minimum(np.searchsorted(self.cdf, rng.random(k), side="right"), len(self.item_ids) - 1)
        return rng.integers(0, len(self.item_ids), size=k)

    def sample(self, positive: str, exclude: Collection[str], n: int, rng: np.random.Generator) -> list[str]:
        """``n`` distinct negatives (fewer only when the catalogue has fewer allowed items; counted)."""
        banned = set(exclude) | {positive}
        out: list[str] = []
        if self.strategy == "hard":
            prefix = tuple(self.codes[self.index[positive]].tolist())
            for level in range(self.max_level, 0, -1):
                pool = [r for r in self.groups[level].get(prefix[:level], []) if self.item_ids[r] not in banned]
                if not pool:
                    continue
                take = rng.choice(len(pool), min(n - len(out), len(pool)), replace=False)
                for j in take:
                    out.append(self.item_ids[pool[j]])
                    banned.add(out[-1])
                self.level_counts[level] += len(take)
                if len(out) == n:
                    return out
        start = len(out)
        allowed = len(self.item_ids) - len(banned & self.index.keys())
        for _ in range(20):  # rejection sampling; the banned set is tiny next to the catalogue
            if len(out) == n or len(out) - start >= allowed:
                break
            for r in self._draw(rng, 2 * (n - len(out)) + 4):
                item = self.item_ids[r]
                if item not in banned:
                    out.append(item)
                    banned.add(item)
                    if len(out) == n:
                        break
        if len(out) < n:  # near-exhausted catalogue: take what is left, in a random order
            rest = [i for i in self.item_ids if i not in banned]
            rest = [rest[j] for j in rng.permutation(len(rest))[: n - len(out)]]
            out.extend(rest)
        self.level_counts[0] += len(out) - start
        self.shortfall += n - len(out)
        return out


def make_sampler(ctx: TaskContext) -> NegativeSampler:
    codes = np.stack([np.asarray(ctx.item_tokenizer.item_to_codes(i)) for i in ctx.item_ids])
    cfg = ctx.cfg
    return NegativeSampler(ctx.item_ids, codes, cfg.negative_strategy, ctx.popularity, cfg.popularity_alpha,
                           cfg.hard_prefix_levels)


def build_binary(ctx: TaskContext, sampler: NegativeSampler) -> ListTask:
    """Per window: the true next item -> "yes", then ``binary_negatives`` negatives -> "no"."""
    rng = ctx.rng("binary")
    templates = ctx.templates("binary")
    prompts, completions, users = [], [], []
    for w in ctx.windows:
        history = ctx.codes_text(w.history)
        negatives = sampler.sample(w.target, ctx.user_train_items[w.user_id], ctx.cfg.binary_negatives, rng)
        for candidate, answer in [(w.target, YES)] + [(n, NO) for n in negatives]:
            t = templates[int(rng.integers(len(templates)))]
            prompts.append(ctx.format(t.format(history=history, candidate=ctx.code[candidate])))
            completions.append(answer)
            users.append(w.user_id)
    return ListTask("binary", prompts, completions, users)


def build_choice(ctx: TaskContext, sampler: NegativeSampler) -> ListTask:
    """Per window: history + shuffled candidates (1 positive, the rest negatives) -> the positive's code."""
    rng = ctx.rng("choice")
    templates = ctx.templates("choice")
    prompts, completions, users = [], [], []
    for w in ctx.windows:
        negatives = sampler.sample(w.target, ctx.user_train_items[w.user_id], ctx.cfg.choice_candidates - 1, rng)
        if not negatives:
            continue
        candidates = [w.target, *negatives]
        candidates = [candidates[j] for j in rng.permutation(len(candidates))]
        t = templates[int(rng.integers(len(templates)))]
        prompts.append(ctx.format(t.format(history=ctx.codes_text(w.history), candidates=ctx.codes_text(candidates))))
        completions.append(ctx.code[w.target])
        users.append(w.user_id)
    return ListTask("choice", prompts, completions, users)


def iter_preference_rows(ctx: TaskContext, sampler: NegativeSampler) -> Iterator[dict[str, str]]:
    """The DPO pairs (``PREFERENCE_FEATURES``), one at a time: per window the seqrec prompt, chosen = the true next
    code, rejected = a negative's code, ``preference_negatives`` pairs."""
    rng = ctx.rng("preference")
    n_templates = len(ctx.templates("seqrec"))
    for w in ctx.windows:
        prompt = seqrec_window_prompt(ctx, w.history, int(rng.integers(n_templates)), ctx.knowledge(w.user_id, w.position))
        for negative in sampler.sample(w.target, ctx.user_train_items[w.user_id], ctx.cfg.preference_negatives, rng):
            yield {"prompt": prompt, "chosen": ctx.code[w.target], "rejected": ctx.code[negative],
                   "user_id": w.user_id, "strategy": sampler.strategy}


def build_preference(ctx: TaskContext, sampler: NegativeSampler) -> datasets.Dataset:
    """TRL DPO format: the seqrec prompt, chosen = true next code, rejected = a negative's code."""
    return rows_to_dataset(iter_preference_rows(ctx, sampler), PREFERENCE_FEATURES)
