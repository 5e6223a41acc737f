"""Time `sft_tasks` on a real dataset and print per-task statistics.

    PYTHONPATH=. .venv/bin/python scripts/bench_sft_tasks.py --dataset ../shared/datasets/amazon18-scientific \
        --out bench_sft_tasks.json

Codes are random and unique (4 levels x 256) unless --item_tokenizer_dir names a trained ItemTokenizer, so the
timings and token lengths are those of the real pipeline. The HF tokenizer defaults to the converted SmolLM2.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from recdata import atomic_write_json, leave_one_out_split
from recdata.loaders import load_dataset
from recdata.paths import default_llm_dir, require
from sft_tasks import TaskConfig, build_tasks, compute_stats
from sft_tasks.stats import format_table

logger = logging.getLogger("bench_sft_tasks")


def random_item_tokenizer(item_ids: list[str], levels: int, size: int, seed: int):
    from tokenization import ItemTokenizer

    rng = np.random.default_rng(seed)
    flat = rng.choice(size**levels, len(item_ids), replace=False)  # unique codes
    codes = np.stack([(flat // size**k) % size for k in reversed(range(levels))], axis=1)
    return ItemTokenizer.from_codes(item_ids, codes, [size] * levels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="dataset folder (any recdata loader format)")
    parser.add_argument("--hf_tokenizer_dir", default="", help="default: the converted SmolLM2")
    parser.add_argument("--item_tokenizer_dir", default="", help="default: random unique codes, 4 x 256")
    parser.add_argument("--max_history", type=int, default=20)
    parser.add_argument("--stats_sample", type=int, default=10000, help="0 = exact token stats over everything")
    parser.add_argument("--out", default="bench_results/bench_sft_tasks.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from transformers import AutoTokenizer

    timings = {}
    t0 = time.perf_counter()
    split = leave_one_out_split(load_dataset(args.dataset), max_history=args.max_history)
    timings["load_split_s"] = time.perf_counter() - t0
    if args.item_tokenizer_dir:
        from tokenization import ItemTokenizer

        item_tokenizer = ItemTokenizer.from_pretrained(args.item_tokenizer_dir)
    else:
        item_tokenizer = random_item_tokenizer(split.dataset.item_ids(), 4, 256, seed=0)
    hf_dir = Path(args.hf_tokenizer_dir) if args.hf_tokenizer_dir else require(default_llm_dir(), "SmolLM2")
    hf_tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))

    t0 = time.perf_counter()
    cfg = TaskConfig(stats_sample=args.stats_sample)
    build = build_tasks(cfg, split, item_tokenizer, hf_tokenizer)
    timings["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = compute_stats(build, item_tokenizer, hf_tokenizer, cfg.stats_sample, cfg.seed)
    timings["stats_s"] = time.perf_counter() - t0
    timings = {k: round(v, 2) for k, v in timings.items()}

    print(f"dataset {split.dataset.name}: {split.dataset.stats()['users']} users, {len(split.dataset.items)} items; "
          f"tokenizer {hf_dir.name}")
    print(format_table(stats["train"]))
    print(f"validation: {stats['validation']['total']['count']} examples, prompt mean "
          f"{stats['validation']['total']['prompt_tokens']['mean']} tokens; preference pairs {len(build.preference or [])}")
    print("timings (s):", json.dumps(timings))
    atomic_write_json(args.out, {"dataset": str(args.dataset), "tokenizer": str(hf_dir), "timings": timings, "stats": stats})


if __name__ == "__main__":
    main()
