"""Benchmark the offline top-K cache: build throughput (our overhead), resume scan, publish, lookup latency.

    .venv/bin/python scripts/bench_cache.py --num_users 100000 --k 20 --out bench_cache.json

A trivial ``recommend_fn`` (arithmetic, no model) isolates the cache's own cost: validation, Parquet
writing, hashing, manifest. Lookups are random users with ``--miss_rate`` unknown ones (fallback path),
timed one by one in-process with the reader's default version check on every call.
"""

from __future__ import annotations

import logging
import platform
import random
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.cache import CacheReader, build_cache, publish_cache
from recdata import atomic_write_json, parse_config

logger = logging.getLogger("bench_cache")


@dataclass
class BenchCacheConfig:
    num_users: int = field(default=100_000, metadata={"help": "Synthetic users."})
    k: int = field(default=20, metadata={"help": "Items per user."})
    num_items: int = field(default=50_000, metadata={"help": "Synthetic catalogue size."})
    chunk_size: int = field(default=256, metadata={"help": "Users per Parquet chunk (build default)."})
    lookups: int = field(default=100_000, metadata={"help": "Timed random lookups."})
    miss_rate: float = field(default=0.05, metadata={"help": "Share of lookups for users not in the cache."})
    work_dir: str | None = field(default=None, metadata={"help": "Scratch folder (default: a temp dir, deleted)."})
    out: str = field(default="bench_results/bench_cache.json", metadata={"help": "JSON results file."})

    def __post_init__(self) -> None:
        if min(self.num_users, self.k, self.num_items, self.chunk_size, self.lookups) < 1:
            raise ValueError("num_users, k, num_items, chunk_size and lookups must be >= 1")
        if not 0.0 <= self.miss_rate <= 1.0:
            raise ValueError(f"miss_rate must be in [0, 1], got {self.miss_rate}")


def trivial_recommender(num_items: int, k: int):
    def recommend_fn(user_ids: list[str], histories: list[list[str]]) -> list[list[tuple[str, float]]]:
        out = []
        for user in user_ids:
            start = int(user[1:]) * 7919 % num_items
            out.append([(f"i{(start + r) % num_items}", -0.1 * r) for r in range(k)])
        return out

    return recommend_fn


def percentile_us(samples_ns: np.ndarray, q: float) -> float:
    return float(np.percentile(samples_ns, q) / 1e3)


def run(cfg: BenchCacheConfig, work: Path) -> dict:
    rng = random.Random(0)
    histories = {f"u{n}": [f"i{rng.randrange(cfg.num_items)}" for _ in range(1 + n % 20)] for n in range(cfg.num_users)}
    fn = trivial_recommender(cfg.num_items, cfg.k)
    results: dict = {"config": vars(cfg), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                     "machine": platform.machine(), "processor": platform.processor()}

    t0 = time.perf_counter()
    build_cache(fn, histories, work / "cache", cfg.k, 0, 1, chunk_size=cfg.chunk_size, progress=False)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    resumed = build_cache(fn, histories, work / "cache", cfg.k, 0, 1, chunk_size=cfg.chunk_size, progress=False)
    resume_s = time.perf_counter() - t0
    assert resumed.users_computed == 0
    results.update(build_s=build_s, build_users_per_s=cfg.num_users / build_s, resume_noop_s=resume_s)

    t0 = time.perf_counter()
    db = publish_cache(work / "cache", work / "store", progress=False)
    results.update(publish_s=time.perf_counter() - t0, store_mb=db.stat().st_size / 1e6)

    users = list(histories)
    queries = [rng.choice(users) if rng.random() >= cfg.miss_rate else f"missing-{i}" for i in range(cfg.lookups)]
    for refresh_interval_s, label in ((0.0, "lookup"), (1.0, "lookup_refresh_1s")):
        with CacheReader(work / "store", refresh_interval_s=refresh_interval_s) as reader:
            for q in queries[:1000]:  # warm the page cache
                reader.get(q)
            samples = np.empty(len(queries), dtype=np.int64)
            clock = time.perf_counter_ns
            for i, q in enumerate(queries):
                t = clock()
                reader.get(q)
                samples[i] = clock() - t
            results[f"{label}_p50_us"] = percentile_us(samples, 50)
            results[f"{label}_p99_us"] = percentile_us(samples, 99)
            results[f"{label}_p999_us"] = percentile_us(samples, 99.9)
            results[f"{label}_per_s"] = len(queries) / (samples.sum() / 1e9)
            results["misses"] = reader.stats.misses - sum(q.startswith("missing-") for q in queries[:1000])
    return results


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_config([BenchCacheConfig], argv)
    work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="bench_cache."))
    try:
        results = run(cfg, work)
    finally:
        if not cfg.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    atomic_write_json(cfg.out, results)
    rows = [
        ("build (1 process)", f"{results['build_users_per_s']:,.0f} users/s", f"{results['build_s']:.1f} s"),
        ("resume scan (complete)", "", f"{results['resume_noop_s']:.2f} s"),
        ("publish -> SQLite", f"{results['store_mb']:.0f} MB", f"{results['publish_s']:.1f} s"),
        ("lookup p50 / p99 / p99.9", f"{results['lookup_per_s']:,.0f} gets/s",
         f"{results['lookup_p50_us']:.1f} / {results['lookup_p99_us']:.1f} / {results['lookup_p999_us']:.1f} us"),
        ("lookup, check version 1/s", f"{results['lookup_refresh_1s_per_s']:,.0f} gets/s",
         f"{results['lookup_refresh_1s_p50_us']:.1f} / {results['lookup_refresh_1s_p99_us']:.1f} / "
         f"{results['lookup_refresh_1s_p999_us']:.1f} us"),
    ]
    print(f"cache benchmark: {cfg.num_users:,} users x K={cfg.k}, {cfg.lookups:,} lookups "
          f"({cfg.miss_rate:.0%} misses -> {results['misses']:,} fallbacks)")
    for name, a, b in rows:
        print(f"  {name:<28} {a:>18} {b:>26}")
    print(f"results written to {cfg.out}")
    return results


if __name__ == "__main__":
    main()
