"""Benchmark the offline top-K cache: build throughput (our overhead), resume scan, publish, lookup latency.

    .venv/bin/python scripts/bench_cache.py --num_users 100000 --k 20 --out bench_cache.json
    .venv/bin/python scripts/bench_cache.py --engine ray --num_users 2000 --k 10 --chunk_size 100

``--engine ray``: the same users and the same tiny random LLM (2 layers, hidden 64, real trie beam search) built
by the local engine, then by Ray Data with 1 and 2 actors (1 CPU / torch thread each; the local engine gets 1
torch thread too), on a local cluster; plus Ray's fixed costs: cluster start, and a build whose recommender does
no work (planning, shuffle, actor start, commit). Chunk files of every run must be byte-identical.

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
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.cache import CacheReader, build_cache, publish_cache  # noqa: E402
from recdata import atomic_write_json, parse_config  # noqa: E402

logger = logging.getLogger("bench_cache")


@dataclass
class BenchCacheConfig:
    engine: str = field(default="local", metadata={"help": "'local': the cache's own overhead (trivial recommender); "
                                                           "'ray': local engine vs Ray with 1 and 2 actors, tiny LLM."})
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
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', got {self.engine!r}")


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


def tiny_llm_recommender_parts(num_items: int, seed: int = 0):
    """(model, hf_tokenizer, item_tokenizer): the test suite's tiny random Llama over ``num_items`` coded items."""
    import torch

    from tests.conftest import build_tiny_hf_tokenizer, build_tiny_llama
    from tokenization import ItemTokenizer

    sizes = [8, 8, 8]
    grid = np.stack(np.meshgrid(*[np.arange(c) for c in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
    codes = grid[np.sort(np.random.default_rng(seed).choice(len(grid), size=num_items, replace=False))]
    item_tok = ItemTokenizer.from_codes([f"i{n}" for n in range(num_items)], codes.astype(np.int64), sizes)
    hf_tok = build_tiny_hf_tokenizer()
    item_tok.add_to_tokenizer(hf_tok)
    torch.manual_seed(seed)
    return build_tiny_llama(len(hf_tok), seed=seed).eval(), hf_tok, item_tok


class _TinyLLMFactory:
    """Picklable: each Ray actor rebuilds the same tiny model (seeded) instead of receiving its weights."""

    def __init__(self, num_items: int, k: int):
        self.num_items, self.k = num_items, k

    def __call__(self):
        from inference import llm_recommender

        model, hf_tok, item_tok = tiny_llm_recommender_parts(self.num_items)
        return llm_recommender(model, hf_tok, item_tok, k=self.k, num_beams=self.k, exclude_history=True,
                               batch_size=8)


class _NoWorkFactory:
    def __init__(self, num_items: int, k: int):
        self.num_items, self.k = num_items, k

    def __call__(self):
        return trivial_recommender(self.num_items, self.k)


def run_ray(cfg: BenchCacheConfig, work: Path) -> dict:
    """Local engine vs Ray (1 and 2 actors) on the same users and tiny LLM; Ray's start-up and fixed costs."""
    import os

    import torch

    from inference.cache.ray_build import RayOptions, build_cache_ray

    num_items = min(cfg.num_items, 512)
    rng = random.Random(0)
    histories = {f"u{n}": [f"i{rng.randrange(num_items)}" for _ in range(1 + n % 20)] for n in range(cfg.num_users)}
    results: dict = {"config": vars(cfg), "engine": "ray", "python": platform.python_version(),
                     "machine": platform.machine(), "cpus": os.cpu_count(), "num_items": num_items,
                     "torch": torch.__version__}
    torch.set_num_threads(1)
    factory = _TinyLLMFactory(num_items, cfg.k)
    t0 = time.perf_counter()
    build_cache(factory(), histories, work / "local", cfg.k, 0, 1, chunk_size=cfg.chunk_size, progress=False)
    results["local_s"] = time.perf_counter() - t0

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}})
    results["ray_init_s"] = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        build_cache_ray(_NoWorkFactory(num_items, cfg.k), histories, work / "nowork", cfg.k, chunk_size=cfg.chunk_size,
                        options=RayOptions(num_actors=1, progress=False))
        results["ray_no_work_s"] = time.perf_counter() - t0
        for actors in (1, 2):
            t0 = time.perf_counter()
            build_cache_ray(factory, histories, work / f"ray{actors}", cfg.k, chunk_size=cfg.chunk_size,
                            options=RayOptions(num_actors=actors, progress=False))
            results[f"ray{actors}_s"] = time.perf_counter() - t0
    finally:
        ray.shutdown()
    local = {p.relative_to(work / "local"): p.read_bytes() for p in (work / "local").rglob("chunk-*.parquet")}
    for actors in (1, 2):
        other = {p.relative_to(work / f"ray{actors}"): p.read_bytes()
                 for p in (work / f"ray{actors}").rglob("chunk-*.parquet")}
        results[f"ray{actors}_identical_chunks"] = other == local
    for key in ("local", "ray1", "ray2"):
        results[f"{key}_users_per_s"] = cfg.num_users / results[f"{key}_s"]
    return results


def print_ray(cfg: BenchCacheConfig, results: dict) -> None:
    print(f"cache build, tiny LLM: {cfg.num_users:,} users x K={cfg.k}, chunks of {cfg.chunk_size}, "
          f"{results['cpus']} CPUs")
    print(f"  {'run':<36} {'wall s':>8} {'users/s':>9}")
    for key, name in (("local", "local engine (1 torch thread)"), ("ray1", "ray, 1 actor"), ("ray2", "ray, 2 actors")):
        extra = "" if key == "local" else f"  identical chunks: {results[key + '_identical_chunks']}"
        print(f"  {name:<36} {results[key + '_s']:>8.1f} {results[key + '_users_per_s']:>9.1f}{extra}")
    print(f"  {'ray cluster start (ray.init)':<36} {results['ray_init_s']:>8.1f}")
    print(f"  {'ray build, recommender doing no work':<36} {results['ray_no_work_s']:>8.1f}")


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_config([BenchCacheConfig], argv)
    work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="bench_cache."))
    try:
        results = run_ray(cfg, work) if cfg.engine == "ray" else run(cfg, work)
    finally:
        if not cfg.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    atomic_write_json(cfg.out, results)
    if cfg.engine == "ray":
        print_ray(cfg, results)
        print(f"results written to {cfg.out}")
        return results
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
