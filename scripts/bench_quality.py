"""Regenerate the quality comparison: run the pipeline for CONFIG, then print ours vs SASRec vs popularity.

    python scripts/bench_quality.py configs/amazon_scientific.yaml [--out bench_results/quality_scientific.json]

The pipeline skips stages that are already done, so a rerun only re-prints. Recall/NDCG@1,5,10,20 with full
ranking over the catalogue on the split's test targets, same split for every recommender.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignrec.pipeline import load_run_config, run_pipeline  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402

METRICS = [f"{m}@{k}" for m in ("recall", "ndcg") for k in (1, 5, 10, 20)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--out", default=None, help="JSON output (default bench_results/quality_<name>.json)")
    parser.add_argument("--until", default=None, help="stop after this stage (e.g. evaluate: no cache/export)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_cfg = load_run_config(args.config)
    run_pipeline(run_cfg, until=args.until or "evaluate")
    metrics = json.loads((run_cfg.run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]
    stages = {p.parent.name: json.loads(p.read_text()) for p in run_cfg.run_dir.glob("*/stage.json")}
    table = {name: {m: rep["overall"].get(m) for m in METRICS} | {"n": rep["n_examples"]} for name, rep in metrics.items()}
    head = ["recommender", "n", *[m.replace("recall", "Recall").replace("ndcg", "NDCG") for m in METRICS]]
    lines = [f"# Quality: {run_cfg.name} ({args.config})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in table.items():
        cells = [name, str(row["n"]), *["-" if row[m] is None else f"{row[m]:.4f}" for m in METRICS]]
        lines.append("| " + " | ".join(cells) + " |")
    seconds = {name: round(rec.get("seconds", 0.0), 1) for name, rec in stages.items()}
    lines += ["", "Stage wall times of the runs that produced these (s): " + ", ".join(f"{k} {v}" for k, v in seconds.items())]
    markdown = "\n".join(lines) + "\n"
    out = Path(args.out or f"bench_results/quality_{run_cfg.name}.json")
    atomic_write_json(out, {"config": args.config, "run_dir": str(run_cfg.run_dir), "metrics": table,
                            "stage_seconds": seconds})
    atomic_write_text(out.with_suffix(".md"), markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
