"""Time the data layer (load + clean, split, save + reload) on the real datasets and print a table.

    .venv/bin/python scripts/bench_data.py --out bench_data.json

Datasets that are not present (../shared/datasets, ML-100K under $ALIGNREC_HOME) are skipped and reported.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from recdata import SplitDataset, atomic_write_json, leave_one_out_split
from recdata.paths import ml100k_dir
from recdata.prepare import DataConfig, load_and_process

logger = logging.getLogger("bench_data")
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def bench(name: str, cfg: DataConfig, repeats: int) -> dict:
    best: dict[str, float] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        ds = load_and_process(cfg)
        t1 = time.perf_counter()
        split = leave_one_out_split(ds, cfg.max_history)
        split.eval_examples("valid"), split.eval_examples("test"), split.train_sequences()
        t2 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            split.save(tmp)
            SplitDataset.load(tmp)
        t3 = time.perf_counter()
        for key, value in (("load_clean_s", t1 - t0), ("split_s", t2 - t1), ("save_load_s", t3 - t2)):
            best[key] = min(best.get(key, float("inf")), value)
    stats = ds.stats()
    return {"dataset": name, "users": stats["users"], "items": stats["items"],
            "interactions": stats["interactions"], **best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_results/bench_data.json", help="JSON file for the results.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per dataset; the best time is reported.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cases = [
        ("amazon18-scientific", DataConfig(path=str(SHARED / "amazon18-scientific"))),
        ("amazon14-office", DataConfig(path=str(SHARED / "amazon14-office"))),
        ("ml-100k (5-core)", DataConfig(path=str(ml100k_dir()), kcore=5)),
    ]
    rows = []
    for name, cfg in cases:
        if not Path(cfg.path).is_dir():
            print(f"skipped {name}: {cfg.path} not present")
            continue
        rows.append(bench(name, cfg, args.repeats))
    header = f"{'dataset':22s} {'users':>7s} {'items':>7s} {'inter':>8s} {'load+clean s':>12s} {'split s':>8s} " \
             f"{'save+load s':>11s}"
    print(header)
    for r in rows:
        print(f"{r['dataset']:22s} {r['users']:7d} {r['items']:7d} {r['interactions']:8d} {r['load_clean_s']:12.2f} "
              f"{r['split_s']:8.2f} {r['save_load_s']:11.2f}")
    atomic_write_json(args.out, {"rows": rows, "repeats": args.repeats})


if __name__ == "__main__":
    main()
