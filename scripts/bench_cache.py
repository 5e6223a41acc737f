"""Benchmark the offline top-K cache: build throughput (our overhead), resume scan, publish, lookup latency.

    .venv/bin/python scripts/bench_cache.py --num_users 100000 --k 20 --out bench_cache.json
    .venv/bin/python scripts/bench_cache.py --engine ray --num_users 2000 --k 10 --chunk_size 100

``--engine ray``: the same users and the same random LLM (real trie beam search) built by the local engine, then
by Ray Data with 1 actor x 1 torch thread, 2 actors x 1 thread and 1 actor x 2 threads (a Ray actor's torch
threads follow its CPUs, ``RayOptions.cpus_per_actor``; the local engine gets 1 torch thread), on a local
cluster; plus Ray's fixed costs: cluster start, and a build whose recommender does no work (planning, shuffle,
actor start, commit). The 1-thread runs' chunk files must be byte-identical to the local engine's; with 2 threads
torch splits float32 reductions differently, so that run's scores may differ in their last bits: each run also
reports whether users, ranks and items match and the largest score gap. A control without Ray: the local engine's
own sharding, shards 0 and 1 of 2 built at once by two spawned processes of 1 torch thread each (``local2``;
its wall time includes the two processes' start, and each shard's own build seconds are recorded): what this
machine gives for a second process doing the same work, the ceiling the Ray speed-up is to be read against. The default model is the test suite's tiny
Llama (2 layers, hidden 64, <= 512 items): so cheap per user that Ray's fixed costs dominate. The shipped scratch
model's shape (configs/ml100k_scratch.yaml: a Phi decoder 256 wide, 2 layers, MLP 1024, the codes-only tokenizer,
one level of 64 clusters + an item-id level over ML-100K's 1,349 items, histories of 1-50 items; random weights,
no item head or popularity penalty), where the per-user cost dominates (30 beams as evaluate decodes; the cache
stage uses num_beams = k = 20, batch 64)::

    .venv/bin/python scripts/bench_cache.py --engine ray --model_arch phi --model_hidden 256 --model_layers 2 \
        --model_intermediate 1024 --model_items 1349 --max_history 50 --k 20 --num_beams 30 \
        --beam_batch_size 64 --num_users 4000 --chunk_size 128

(~15-30 ms a user on one thread: a 1-thread run computes for 1-2 min against Ray's ~15 s fixed cost a build;
~4-7 min in all on 2 cores.)

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
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # a spawned shard process imports this file by name

from bench_cache_ray_report import compare_chunks, print_ray  # noqa: E402,F401 (compare_chunks: run_ray, tests)

from inference.cache import CacheReader, build_cache, publish_cache  # noqa: E402
from recdata import atomic_write_json, parse_config  # noqa: E402

logger = logging.getLogger("bench_cache")

MODEL_ARCHS = ("llama", "phi")
GRID_ITEMS = 512  # the tiny Llama recipe's codes: 3 levels of 8
SCRATCH_CLUSTERS = 64  # ml100k_scratch: tokenizer.codebook_size auto -> 64 clusters for 1.3k items
RAY_RUNS = (("ray1", 1, 1), ("ray2", 2, 1), ("ray1x2", 1, 2))  # (key, actors, CPUs = torch threads per actor)


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
    # --engine ray: the random LLM. Its per-user cost grows with width (~quadratically), depth, beams and history.
    model_arch: str = field(default="llama", metadata={
        "help": "--engine ray: 'llama': the test suite's tiny recipe (its ~400-token BPE tokenizer, 3 code levels of "
                "8: <= 512 items); 'phi': the scratch recipe (codes-only tokenizer, 64 clusters + an item-id level)."})
    model_hidden: int = field(default=64, metadata={"help": "--engine ray: hidden size (4 heads; a multiple of 8)."})
    model_layers: int = field(default=2, metadata={"help": "--engine ray: decoder layers."})
    model_intermediate: int = field(default=128, metadata={"help": "--engine ray: MLP width."})
    model_items: int = field(default=0, metadata={"help": "--engine ray: catalogue size; 0 = min(num_items, 512)."})
    num_beams: int = field(default=0, metadata={"help": "--engine ray: beam width (>= k); 0 = k."})
    beam_batch_size: int = field(default=8, metadata={"help": "--engine ray: users per beam-search batch."})
    max_history: int = field(default=20, metadata={"help": "--engine ray: user n has 1 + n % max_history items."})

    def __post_init__(self) -> None:
        if min(self.num_users, self.k, self.num_items, self.chunk_size, self.lookups) < 1:
            raise ValueError("num_users, k, num_items, chunk_size and lookups must be >= 1")
        if not 0.0 <= self.miss_rate <= 1.0:
            raise ValueError(f"miss_rate must be in [0, 1], got {self.miss_rate}")
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.model_arch not in MODEL_ARCHS:
            raise ValueError(f"model_arch must be one of {MODEL_ARCHS}, got {self.model_arch!r}")
        if self.model_hidden < 8 or self.model_hidden % 8 or min(self.model_layers, self.model_intermediate) < 1:
            raise ValueError(f"model_hidden must be a positive multiple of 8 (4 heads of an even size for RoPE) and "
                             f"model_layers, model_intermediate >= 1; got {self.model_hidden}, {self.model_layers}, "
                             f"{self.model_intermediate}")
        if min(self.model_items, self.num_beams) < 0 or min(self.beam_batch_size, self.max_history) < 1:
            raise ValueError("model_items and num_beams must be >= 0 (0: the default), beam_batch_size and "
                             "max_history >= 1")
        if self.model_arch == "llama" and self.ray_num_items > GRID_ITEMS:
            raise ValueError(f"model_arch llama codes items on a 3 x 8 grid ({GRID_ITEMS} items), got model_items "
                             f"{self.model_items}: use --model_arch phi (an item-id level) for a larger catalogue")
        if self.num_beams and self.num_beams < self.k:
            raise ValueError(f"num_beams ({self.num_beams}) must be >= k ({self.k}); raise --num_beams")

    @property
    def ray_num_items(self) -> int:
        """The ray mode's catalogue: ``model_items``, else ``num_items`` capped at the tiny Llama's grid."""
        return self.model_items or min(self.num_items, GRID_ITEMS)


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


@dataclass(frozen=True)
class ModelShape:
    """The ray mode's random decoder over ``num_items`` coded items (defaults: the test suite's tiny Llama)."""

    arch: str = "llama"
    hidden: int = 64
    layers: int = 2
    intermediate: int = 128
    num_items: int = GRID_ITEMS

    @classmethod
    def of(cls, cfg: BenchCacheConfig) -> ModelShape:
        return cls(cfg.model_arch, cfg.model_hidden, cfg.model_layers, cfg.model_intermediate, cfg.ray_num_items)


def tiny_llm_recommender_parts(shape: ModelShape, seed: int = 0):
    """(model, hf_tokenizer, item_tokenizer), random weights (seeded), in eval mode.

    llama: ``tests.conftest.build_tiny_llama``'s config at this shape (identical at the default one) with its BPE
    tokenizer, items on a 3 x 8 code grid. phi: ``trainer.model_setup.build_scratch_model``'s Phi at this shape
    (mirrored, not imported: trainer pulls in trl, seconds of start-up in every actor) with the codes-only
    tokenizer, each item one of 64 clusters + its own id token, as configs/ml100k_scratch.yaml trains.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM

    from tokenization import ItemTokenizer

    rng = np.random.default_rng(seed)
    if shape.arch == "phi":
        from alignrec.llm.hf_tokenizer import build_codes_only_tokenizer

        sizes = [SCRATCH_CLUSTERS, shape.num_items]
        codes = np.stack([rng.integers(SCRATCH_CLUSTERS, size=shape.num_items), np.arange(shape.num_items)], -1)
        hf_tok = build_codes_only_tokenizer()
    else:
        from tests.conftest import build_tiny_hf_tokenizer

        sizes = [8, 8, 8]
        grid = np.stack(np.meshgrid(*[np.arange(c) for c in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
        codes = grid[np.sort(rng.choice(len(grid), size=shape.num_items, replace=False))]
        hf_tok = build_tiny_hf_tokenizer()
    item_tok = ItemTokenizer.from_codes([f"i{n}" for n in range(shape.num_items)], codes.astype(np.int64), sizes)
    item_tok.add_to_tokenizer(hf_tok)
    common = dict(vocab_size=len(hf_tok), hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                  num_hidden_layers=shape.layers, num_attention_heads=4, tie_word_embeddings=True)
    torch.manual_seed(seed)
    if shape.arch == "phi":
        config = PhiConfig(**common, num_key_value_heads=4, max_position_embeddings=128, resid_pdrop=0.0,
                           embd_pdrop=0.0, attention_dropout=0.0, bos_token_id=hf_tok.bos_token_id,
                           eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
        return PhiForCausalLM(config).eval(), hf_tok, item_tok
    config = LlamaConfig(**common, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=0, eos_token_id=0,
                         pad_token_id=3)
    return LlamaForCausalLM(config).eval(), hf_tok, item_tok


class _TinyLLMFactory:
    """Picklable: each Ray actor rebuilds the same model (seeded) instead of receiving its weights; with
    ``threads_log``, it appends the torch threads it runs with (the report's proof of each run's threads)."""

    def __init__(self, shape: ModelShape, k: int, num_beams: int = 0, batch_size: int = 8,
                 threads_log: str | None = None):
        self.shape, self.k, self.num_beams, self.batch_size = shape, k, num_beams or k, batch_size
        self.threads_log = threads_log

    def __call__(self):
        import torch

        from inference import llm_recommender

        if self.threads_log:
            with open(self.threads_log, "a") as f:
                f.write(f"{torch.get_num_threads()}\n")
        model, hf_tok, item_tok = tiny_llm_recommender_parts(self.shape)
        return llm_recommender(model, hf_tok, item_tok, k=self.k, num_beams=self.num_beams, exclude_history=True,
                               batch_size=self.batch_size)


def _build_shard(factory: _TinyLLMFactory, histories: dict, out: str, k: int, shard: int, num_shards: int,
                 chunk_size: int, seconds: Any) -> None:
    """One shard of the no-Ray control, in its own spawned process with 1 torch thread."""
    import torch

    torch.set_num_threads(1)
    fn = factory()
    t0 = time.perf_counter()
    build_cache(fn, histories, out, k, shard, num_shards, chunk_size=chunk_size, progress=False)
    seconds[shard] = time.perf_counter() - t0


def run_local_shards(factory: _TinyLLMFactory, histories: dict, out: Path, k: int, chunk_size: int,
                     num_shards: int = 2) -> tuple[float, list[float]]:
    """Wall seconds of ``num_shards`` local-engine shards built at once in spawned processes, and each shard's own
    build seconds (model built, start-up excluded)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    seconds = ctx.Array("d", num_shards)
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_build_shard, args=(factory, histories, str(out), k, shard, num_shards, chunk_size,
                                                    seconds)) for shard in range(num_shards)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    wall = time.perf_counter() - t0
    failed = [proc.exitcode for proc in procs if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"local shard processes failed with exit codes {failed}")
    return wall, list(seconds)


class _NoWorkFactory:
    def __init__(self, num_items: int, k: int):
        self.num_items, self.k = num_items, k

    def __call__(self):
        return trivial_recommender(self.num_items, self.k)


def run_ray(cfg: BenchCacheConfig, work: Path) -> dict:
    """Local engine vs Ray (``RAY_RUNS``) on the same users and random LLM; Ray's start-up and fixed costs."""
    import os

    import torch

    from inference.cache.ray_build import RayOptions, build_cache_ray

    shape = ModelShape.of(cfg)
    rng = random.Random(0)
    histories = {f"u{n}": [f"i{rng.randrange(shape.num_items)}" for _ in range(1 + n % cfg.max_history)]
                 for n in range(cfg.num_users)}
    results: dict = {"config": vars(cfg), "engine": "ray", "python": platform.python_version(),
                     "machine": platform.machine(), "cpus": os.cpu_count(), "num_items": shape.num_items,
                     "model": vars(shape), "torch": torch.__version__}

    def factory(key: str) -> _TinyLLMFactory:
        return _TinyLLMFactory(shape, cfg.k, cfg.num_beams, cfg.beam_batch_size, str(work / f"{key}.threads"))

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    build_cache(factory("local")(), histories, work / "local", cfg.k, 0, 1, chunk_size=cfg.chunk_size, progress=False)
    results["local_s"] = time.perf_counter() - t0
    results["local2_s"], results["local2_shard_s"] = run_local_shards(factory("local2"), histories, work / "local2",
                                                                      cfg.k, cfg.chunk_size)

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}})
    results["ray_init_s"] = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        build_cache_ray(_NoWorkFactory(shape.num_items, cfg.k), histories, work / "nowork", cfg.k,
                        chunk_size=cfg.chunk_size, options=RayOptions(num_actors=1, progress=False))
        results["ray_no_work_s"] = time.perf_counter() - t0
        for key, actors, cpus in RAY_RUNS:
            t0 = time.perf_counter()
            build_cache_ray(factory(key), histories, work / key, cfg.k, chunk_size=cfg.chunk_size,
                            options=RayOptions(num_actors=actors, cpus_per_actor=float(cpus), progress=False))
            results[f"{key}_s"] = time.perf_counter() - t0
    finally:
        ray.shutdown()
    for key in ("local2", *(run[0] for run in RAY_RUNS)):
        results.update({f"{key}_{name}": value for name, value in compare_chunks(work / "local", work / key).items()})
    for key in ("local", "local2", *(run[0] for run in RAY_RUNS)):
        results[f"{key}_users_per_s"] = cfg.num_users / results[f"{key}_s"]
        log = work / f"{key}.threads"  # one line per model built (a retried actor adds one)
        results[f"{key}_torch_threads"] = sorted({int(n) for n in log.read_text().split()}) if log.exists() else []
    results["speedup_ray2_over_ray1"] = results["ray2_users_per_s"] / results["ray1_users_per_s"]
    results["speedup_ray2_over_ray1x2"] = results["ray2_users_per_s"] / results["ray1x2_users_per_s"]
    results["speedup_local2_over_local"] = results["local2_users_per_s"] / results["local_users_per_s"]
    # start-up excluded: the users of the slower shard's build against the 1-process build's users/s
    results["speedup_local2_build_over_local"] = results["local_s"] / max(results["local2_shard_s"])
    return results


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_config([BenchCacheConfig], argv)
    work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="bench_cache."))
    work.mkdir(parents=True, exist_ok=True)
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
