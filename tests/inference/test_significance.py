"""Seeds summary and the paired bootstrap: exact values on tiny inputs and invariants."""

import numpy as np
import pytest

from inference.significance import (
    paired_bootstrap,
    per_user_metric,
    resample_means,
    seed_pooled_bootstrap,
    seed_summary,
)


def _old_means(diff: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The bootstrap's resample means before issue 34 (256 x users index matrices), verbatim."""
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 256):
        n = min(256, resamples - start)
        means[start:start + n] = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    return means


class _SpyRng:
    """A seeded Generator that records the shape of every index draw (the bootstrap's memory)."""

    def __init__(self, seed: int) -> None:
        self.rng, self.sizes = np.random.default_rng(seed), []

    def integers(self, low, high, size):
        self.sizes.append(size)
        return self.rng.integers(low, high, size=size)


def test_seed_summary_exact():
    assert seed_summary([0.1, 0.2, 0.3]) == {"mean": pytest.approx(0.2), "std": pytest.approx(0.1), "n": 3}
    assert seed_summary([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    with pytest.raises(ValueError, match="at least one"):
        seed_summary([])


def test_paired_bootstrap_constant_difference_is_exact():
    ours = {f"u{i}": 0.5 for i in range(50)}
    theirs = {f"u{i}": 0.25 for i in range(50)}
    out = paired_bootstrap(ours, theirs, resamples=300)
    assert out["mean_diff"] == pytest.approx(0.25) and out["low"] == pytest.approx(0.25)
    assert out["high"] == pytest.approx(0.25) and out["p_not_better"] == 0.0 and out["users"] == 50


def test_paired_bootstrap_pairs_by_user_and_covers_the_mean():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    ours = {f"u{i}": float(v + 0.05) for i, v in enumerate(base)}
    theirs = {f"u{i}": float(v) for i, v in reversed(list(enumerate(base)))}  # other order, same users
    out = paired_bootstrap(ours, theirs, resamples=500, seed=1)
    assert out["low"] == pytest.approx(0.05) and out["high"] == pytest.approx(0.05)  # paired: noise cancels
    noisy = {u: v + float(rng.normal(0, 0.2)) for u, v in theirs.items()}
    wide = paired_bootstrap(ours, noisy, resamples=500, seed=1)
    assert wide["low"] < wide["mean_diff"] < wide["high"]
    assert paired_bootstrap(ours, noisy, resamples=500, seed=1) == wide  # seeded: reproducible


def test_paired_bootstrap_refuses_unpaired_rows():
    with pytest.raises(ValueError, match="share no user"):
        paired_bootstrap({"a": 1.0}, {"b": 0.0})
    with pytest.raises(ValueError, match="different users"):
        paired_bootstrap({"a": 1.0, "b": 1.0}, {"a": 0.0})


def test_per_user_metric_reads_a_report():
    report = {"per_user": {"user_id": ["u1", "u2"], "ndcg@10": [1.0, 0.0]}}
    assert per_user_metric(report, "ndcg@10") == {"u1": 1.0, "u2": 0.0}
    with pytest.raises(ValueError, match="no per-user"):
        per_user_metric({}, "ndcg@10")


def test_seed_pooled_bootstrap_averages_each_users_difference_over_seeds():
    # u0 gains 0.3 then 0.1 (mean 0.2), u1 loses 0.1 then gains 0.3 (mean 0.1): pooled mean 0.15, one row per user
    ours = [{"u0": 0.5, "u1": 0.1}, {"u0": 0.4, "u1": 0.6}]
    theirs = [{"u0": 0.2, "u1": 0.2}, {"u0": 0.3, "u1": 0.3}]
    out = seed_pooled_bootstrap(ours, theirs, resamples=400, seed=3)
    assert out["users"] == 2 and out["mean_diff"] == pytest.approx(0.15)
    assert out["low"] == pytest.approx(0.1) and out["high"] == pytest.approx(0.2)  # resamples of {0.2, 0.1}
    same = seed_pooled_bootstrap([{"u": 0.4}] * 3, [{"u": 0.1}] * 3, resamples=50)
    assert same["low"] == pytest.approx(0.3) == same["high"]
    with pytest.raises(ValueError, match="same users"):
        seed_pooled_bootstrap(ours, [{"u0": 0.2}, {"u0": 0.3, "u1": 0.3}])
    with pytest.raises(ValueError, match="one dict per seed"):
        seed_pooled_bootstrap(ours, theirs[:1])


@pytest.mark.parametrize("users", [1, 7, 1000, 5003])
def test_bootstrap_is_bit_identical_to_the_old_index_matrices(users):
    diff = np.random.default_rng(users).normal(0.01, 0.3, users)
    ids = [f"u{i:05d}" for i in range(users)]  # sorted as the bootstrap sorts users
    old = _old_means(diff, 600, seed=4)  # 600 resamples: three old blocks of 256, 256, 88
    assert np.array_equal(resample_means(diff, 600, np.random.default_rng(4)), old)
    out = paired_bootstrap(dict(zip(ids, diff.tolist(), strict=True)), dict.fromkeys(ids, 0.0), resamples=600, seed=4)
    alpha = (1 - 0.95) / 2  # as paired_bootstrap computes it (not exactly 0.025)
    low, high = np.quantile(old, [alpha, 1 - alpha])
    assert (out["low"], out["high"], out["p_not_better"]) == (float(low), float(high), float((old <= 0).mean()))


def test_bootstrap_memory_is_bounded_by_the_block_whatever_the_users():
    diff = np.random.default_rng(0).random(1000)
    whole = _SpyRng(5)  # 1000 users, blocks of 2500 indices: 2 resamples per draw
    assert np.array_equal(resample_means(diff, 9, whole, max_block=2500), _old_means(diff, 9, seed=5))
    assert whole.sizes == [(2, 1000)] * 4 + [(1, 1000)]
    chunked = _SpyRng(5)  # blocks under one resample: each resample drawn 300 + 300 + 300 + 100 users at a time
    means = resample_means(diff, 9, chunked, max_block=300)
    assert chunked.sizes == [300, 300, 300, 100] * 9
    assert np.allclose(means, _old_means(diff, 9, seed=5), rtol=0, atol=1e-14)  # same users, chunked sums
