"""``scripts/bench_cache.py --engine ray``: whether two builds stored the same rows, and the ray mode's table.

Apart from the benchmark so each file keeps one job: the builds themselves are in ``bench_cache.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def compare_chunks(reference: Path, other: Path) -> dict:
    """``identical_chunks``: the same chunk files byte for byte; ``same_items``: the same users, ranks and items;
    ``max_score_diff``: the largest score gap (None: not the same items). Why both: torch with 2 threads splits
    float32 reductions differently from 1, so a 2-thread build's scores may differ in their last bits; and a build
    in another shard layout stores the same rows in other files, so rows are compared sorted by (user, rank)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ref = {p.relative_to(reference): p for p in reference.rglob("chunk-*.parquet")}
    out = {p.relative_to(other): p for p in other.rglob("chunk-*.parquet")}
    if ref.keys() == out.keys() and all(path.read_bytes() == out[name].read_bytes() for name, path in ref.items()):
        return {"identical_chunks": True, "same_items": True, "max_score_diff": 0.0}
    if not ref or not out:  # one build stored nothing
        return {"identical_chunks": False, "same_items": False, "max_score_diff": None}

    def rows(paths: list[Path]) -> pa.Table:
        return pa.concat_tables([pq.read_table(p) for p in paths]).sort_by([("user_id", "ascending"),
                                                                             ("rank", "ascending")])

    a, b = rows(list(ref.values())), rows(list(out.values()))
    keys = [c for c in a.column_names if c != "score"]
    if a.column_names != b.column_names or a.num_rows != b.num_rows or not a.select(keys).equals(b.select(keys)):
        return {"identical_chunks": False, "same_items": False, "max_score_diff": None}
    return {"identical_chunks": False, "same_items": True,
            "max_score_diff": float(np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max(initial=0.0))}


def print_ray(cfg: Any, results: dict) -> None:
    m = results["model"]
    print(f"cache build, random {m['arch']} ({m['layers']} layers x {m['hidden']} wide, MLP {m['intermediate']}, "
          f"{m['num_items']:,} items, {cfg.num_beams or cfg.k} beams): {cfg.num_users:,} users x K={cfg.k}, "
          f"chunks of {cfg.chunk_size}, {results['cpus']} CPUs")
    print(f"  {'run':<36} {'wall s':>8} {'users/s':>9} {'threads':>8}")
    for key, name in (("local", "local engine (1 torch thread)"),
                      ("local2", "local engine, 2 shards at once (no ray)"), ("ray1", "ray, 1 actor x 1 torch thread"),
                      ("ray2", "ray, 2 actors x 1 torch thread"), ("ray1x2", "ray, 1 actor x 2 torch threads")):
        extra = "" if key == "local" else f"  identical chunks: {results[key + '_identical_chunks']}"
        if key != "local" and not results[key + "_identical_chunks"]:
            extra += (f" (same items, max score diff {results[key + '_max_score_diff']:.1e})"
                      if results[key + "_same_items"] else " (different items)")
        threads = ",".join(map(str, results[key + "_torch_threads"])) or "?"
        print(f"  {name:<36} {results[key + '_s']:>8.1f} {results[key + '_users_per_s']:>9.1f} {threads:>8}{extra}")
    print(f"  {'ray cluster start (ray.init)':<36} {results['ray_init_s']:>8.1f}")
    print(f"  {'ray build, recommender doing no work':<36} {results['ray_no_work_s']:>8.1f}")
    print(f"  speedup (users/s): 2 actors / 1 actor x 1 thread {results['speedup_ray2_over_ray1']:.2f}, "
          f"2 actors / 1 actor x 2 threads {results['speedup_ray2_over_ray1x2']:.2f}")
    shards = ", ".join(f"{s:.1f}" for s in results["local2_shard_s"])
    print(f"  control without ray: 2 local shards at once / 1 local build {results['speedup_local2_over_local']:.2f} "
          f"(start-up included), {results['speedup_local2_build_over_local']:.2f} (build seconds only: {shards})")
