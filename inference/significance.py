"""Seeds and significance: mean +- std over seeds and a paired bootstrap over the same users.

A 5% difference on ~8k users is inside the noise, so a claimed win needs both: several seeds of each model
(``seed_summary``) and a paired bootstrap interval of the per-user metric difference (``paired_bootstrap``),
resampling users (not examples of one model), so both rows are judged on the same resampled users. One row's
own uncertainty on a slice of users (e.g. the cold targets) is ``bootstrap_interval``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BOOTSTRAP_BLOCK = 1 << 22  # indices drawn at once: 32 MB of int64 (was 256 x users: ~20 GB at 10M users)


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed) of one metric over seeds."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("seed_summary needs at least one value")
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)}


def paired_bootstrap(ours: Mapping[str, float], theirs: Mapping[str, float], *, resamples: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Bootstrap interval of ``mean(ours - theirs)`` over the users both dicts score (user_id -> metric).

    Users are resampled with replacement ``resamples`` times; the interval is the percentile interval.
    ``p_not_better`` is the share of resamples where ours is not above theirs (a one-sided bootstrap p).
    """
    users = sorted(set(ours) & set(theirs))
    if not users:
        raise ValueError("paired_bootstrap: the two rows share no user; evaluate them on the same split part")
    if len(users) < len(ours) or len(users) < len(theirs):
        raise ValueError(f"paired_bootstrap: the rows score different users ({len(ours)} vs {len(theirs)}, "
                         f"{len(users)} shared); evaluate them on the same examples")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"need 0 < confidence < 1 and resamples >= 1, got {confidence}, {resamples}")
    diff = np.array([ours[u] - theirs[u] for u in users], dtype=np.float64)  # [users]
    means = resample_means(diff, resamples, np.random.default_rng(seed))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {"users": len(users), "mean_diff": float(diff.mean()), "low": float(low), "high": float(high),
            "confidence": confidence, "resamples": resamples, "p_not_better": float((means <= 0).mean())}


def bootstrap_interval(values: Sequence[float], *, resamples: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap interval of ``mean(values)`` (one row's per-user metric over a slice of users).

    Users are resampled with replacement as in ``paired_bootstrap`` (``resample_means``); an empty slice gives
    ``n`` 0 and None for the mean and the bounds (a table shows it as missing).
    """
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"need 0 < confidence < 1 and resamples >= 1, got {confidence}, {resamples}")
    arr = np.asarray(values, dtype=np.float64)  # [users]
    out: dict[str, Any] = {"n": int(arr.size), "mean": None, "low": None, "high": None, "confidence": confidence,
                           "resamples": resamples}
    if arr.size == 0:
        return out
    means = resample_means(arr, resamples, np.random.default_rng(seed))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {**out, "mean": float(arr.mean()), "low": float(low), "high": float(high)}


def resample_means(values: np.ndarray, resamples: int, rng: np.random.Generator,
                   max_block: int = BOOTSTRAP_BLOCK) -> np.ndarray:
    """``[resamples]`` means of ``values [n]`` resampled with replacement, drawing at most ``max_block`` indices at
    a time (memory O(max_block + resamples), whatever ``n``).

    Indices are drawn in the order of one ``rng.integers(0, n, size=(resamples, n))`` call (a resample's users,
    then the next resample's): numpy's bounded integers are the same stream however the draw is split, so the
    result is the one-matrix result for the same seed. While ``n <= max_block`` each block is whole resamples
    and the means are bit-identical to before issue 34; above it a resample is summed chunk by chunk, which can
    differ from one pairwise sum in the last bits (float64 rounding, ~1e-16 relative).
    """
    n = len(values)
    means = np.empty(resamples)
    if n <= max_block:
        per = max(1, max_block // n)  # whole resamples per block: [per, n] indices
        for start in range(0, resamples, per):
            rows = min(per, resamples - start)
            means[start:start + rows] = values[rng.integers(0, n, size=(rows, n))].mean(axis=1)
        return means
    for r in range(resamples):  # one resample in chunks of users: [max_block] indices at a time
        total = 0.0
        for start in range(0, n, max_block):
            total += float(values[rng.integers(0, n, size=min(max_block, n - start))].sum())
        means[r] = total / n
    return means


def seed_pooled_bootstrap(ours: Sequence[Mapping[str, float]], theirs: Sequence[Mapping[str, float]], *,
                          resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Bootstrap over users of the per-user mean over seeds of ``ours_i - theirs_i`` (seed i pairs with seed i).

    One row per user, so users (not seed x user pairs) are resampled: the interval of a claim over all seeds.
    """
    if not ours or len(ours) != len(theirs):
        raise ValueError(f"seed_pooled_bootstrap needs one dict per seed on each side, got {len(ours)} and {len(theirs)}")
    users = sorted(ours[0])
    if any(set(o) != set(users) or set(t) != set(users) for o, t in zip(ours, theirs, strict=True)):
        raise ValueError("seed_pooled_bootstrap: every seed of both rows must score the same users")
    diff = np.mean([[o[u] - t[u] for u in users] for o, t in zip(ours, theirs, strict=True)], axis=0)  # [users]
    return paired_bootstrap(dict(zip(users, diff.tolist(), strict=True)), dict.fromkeys(users, 0.0),
                            resamples=resamples, seed=seed, confidence=confidence)


def per_user_metric(report: Mapping[str, Any], metric: str) -> dict[str, float]:
    """``user_id -> metric`` from an ``evaluate_recommender`` report (its ``per_user`` table)."""
    per_user = report.get("per_user")
    if not per_user or metric not in per_user:
        raise ValueError(f"the report has no per-user {metric!r}; re-run the evaluation with this version")
    return dict(zip(per_user["user_id"], per_user[metric], strict=True))
