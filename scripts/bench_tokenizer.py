"""Benchmark the RQ-VAE item tokenizer on synthetic item embeddings (CPU): time and peak memory per phase.

    .venv/bin/python scripts/bench_tokenizer.py --num_items 10000 --dim 384 --threads 1 --out bench_results/bench_tokenizer.json

Items are drawn from a Gaussian mixture on the unit sphere (like sentence embeddings). Phases: RQ-VAE training
(k-means init included), encoding + collision-free assignment, save/reload. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recdata.io import atomic_write_json
from tokenization import ItemTokenizer, TokenizerConfig, assign_unique_codes, build_report, train_rqvae
from tokenization.pipeline import encode_with_distances


def synthetic_embeddings(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num_items", type=int, default=10000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch default)")
    p.add_argument("--epochs", type=int, default=None, help="override TokenizerConfig.rq_epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_results/bench_tokenizer.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    x = synthetic_embeddings(args.num_items, args.dim, args.clusters, args.seed)
    cfg_kwargs = {"align_weight": 0.0, "rq_num_threads": args.threads}
    if args.epochs:
        cfg_kwargs["rq_epochs"] = args.epochs
    cfg = TokenizerConfig(**cfg_kwargs)
    rows = []

    t0 = time.perf_counter()
    result = train_rqvae(x, cfg)
    rows.append(("train (k-means init + epochs)", time.perf_counter() - t0, _rss_mib()))
    t0 = time.perf_counter()
    raw, dists = encode_with_distances(result.model, x)
    assignment = assign_unique_codes(raw, dists, result.model.cfg.codebook_sizes)
    ids = [f"item{i}" for i in range(len(x))]
    tok = ItemTokenizer.from_codes(ids, assignment.codes, assignment.codebook_sizes,
                                   tensors=dict(result.model.state_dict()), model_config=result.model.cfg.to_dict())
    rows.append(("encode + collision-free assignment", time.perf_counter() - t0, _rss_mib()))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        back = ItemTokenizer.from_pretrained(tmp)
    assert back.content_hash == tok.content_hash
    rows.append(("save_pretrained + from_pretrained", time.perf_counter() - t0, _rss_mib()))
    report = build_report(result.model, x, raw, assignment)

    print(f"{'phase':38s} {'seconds':>9s} {'peak RSS MiB':>13s}")  # RSS: process peak so far (monotonic)
    for name, sec, peak in rows:
        print(f"{name:38s} {sec:9.2f} {peak:13.0f}")
    print(f"items {len(x)} x {x.shape[1]}, codebooks {assignment.codebook_sizes}, epochs {cfg.rq_epochs}, "
          f"threads {args.threads or torch.get_num_threads()}; data {x.nbytes / 2**20:.0f} MiB")
    print(f"level-1 usage {report['level1_usage_pct']:.1f}%, collisions {report['collisions_before']} -> "
          f"{report['collisions_after']} ({report['items_moved']} moved), recon_mse {report['recon_mse']:.4g}")

    out = {
        "num_items": len(x), "dim": int(x.shape[1]), "threads": args.threads, "epochs": cfg.rq_epochs,
        "codebook_sizes": assignment.codebook_sizes,
        "phases": [{"phase": n, "seconds": round(s, 3), "peak_rss_mib_so_far": round(m, 1)} for n, s, m in rows],
        "train_seconds": round(rows[0][1], 3), "peak_rss_mib": round(_rss_mib(), 1),
        "level1_usage_pct": report["level1_usage_pct"], "collisions_before": report["collisions_before"],
        "collisions_after": report["collisions_after"], "items_moved": report["items_moved"],
        "recon_mse": report["recon_mse"], "torch": torch.__version__, "python": sys.version.split()[0],
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
