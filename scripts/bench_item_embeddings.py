"""Benchmark item embeddings on amazon18-scientific: SASRec (train time, test Recall/NDCG@10) and MiniLM speed.

    .venv/bin/python scripts/bench_item_embeddings.py --dataset_dir ../shared/datasets/amazon18-scientific \
        --out bench_item_embeddings.json

Leave-one-out, max_history 20, full ranking over all items with nothing excluded. Prints a table and
writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path

import torch

from alignrec.recommenders import full_ranking_metrics, train_sasrec
from recdata import atomic_write_json, leave_one_out_split
from recdata.loaders import load_dataset
from tokenization.embeddings import (
    EmbeddingConfig,
    compute_item_embeddings,
)

logger = logging.getLogger("bench_item_embeddings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", default="../shared/datasets/amazon18-scientific")
    parser.add_argument("--out", default="bench_results/bench_item_embeddings.json")
    parser.add_argument("--max_history", type=int, default=20)
    parser.add_argument("--skip_text", action="store_true")
    parser.add_argument("--skip_sasrec", action="store_true")
    parser.add_argument("--sasrec_loss", default="ce", choices=["ce", "bce"])
    parser.add_argument("--sasrec_epochs", type=int, default=200)
    parser.add_argument("--sasrec_dropout", type=float, default=0.3)
    parser.add_argument("--sasrec_patience", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    split = leave_one_out_split(load_dataset(Path(args.dataset_dir)), max_history=args.max_history)
    stats = split.dataset.stats()
    result: dict = {"dataset": stats["name"], "users": stats["users"], "items": stats["items"],
                    "interactions": stats["interactions"], "threads": args.threads, "cpu": platform.processor()}
    rows = []
    if not args.skip_sasrec:
        cfg = EmbeddingConfig(source="cf", sasrec_loss=args.sasrec_loss, sasrec_epochs=args.sasrec_epochs,
                              sasrec_dropout=args.sasrec_dropout, sasrec_patience=args.sasrec_patience,
                              use_cache=False)
        start = time.perf_counter()
        model = train_sasrec(split, cfg.sasrec_config())
        train_s = time.perf_counter() - start
        test = split.eval_examples("test")
        metrics = full_ranking_metrics(model, list(test["history"]), list(test["target"]), k=10)
        result["sasrec"] = {"train_seconds": train_s, **model.train_info, **{f"test_{k}": v for k, v in metrics.items()},
                            "config": cfg.sasrec_config().__dict__}
        rows.append(("SASRec train (s)", f"{train_s:.1f} ({model.train_info['epochs']} epochs)"))
        rows.append(("SASRec test Recall@10", f"{metrics['recall@10']:.4f}"))
        rows.append(("SASRec test NDCG@10", f"{metrics['ndcg@10']:.4f}"))
    if not args.skip_text:
        cfg = EmbeddingConfig(source="text", text_encoder="sentence", use_cache=False)
        start = time.perf_counter()
        emb = compute_item_embeddings(cfg, split)
        text_s = time.perf_counter() - start
        result["minilm"] = {"items": len(emb.item_ids), "dim": emb.dim, "seconds": text_s,
                            "items_per_second": len(emb.item_ids) / text_s}
        rows.append((f"MiniLM embed {len(emb.item_ids)} items (s)", f"{text_s:.1f} ({len(emb.item_ids) / text_s:.0f}/s)"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{stats['name']}: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
