"""SASRec vs SASRec + knowledge rows over seeds, with a paired bootstrap of each row - SASRec.

    python scripts/bench_knowledge_rows.py --split_dir S --vectors collective=V1 individual=V2@item \
        --kinds item,user item user --seeds 42,43,44 --out bench_results/knowledge/sci_rows --sasrec_epochs 12

One plain SASRec per seed and, per seed, one ``SASRec + knowledge`` per (vectors, kinds) variant, all with the
same SASRec config and seed (any other flag is an `alignrec knowledge train` flag for every row, e.g.
``--sasrec_epochs 12``). Every
row: test targets, full ranking, history excluded. Each finished run is kept under ``--out/seed<s>/<variant>``
and reused by a rerun (resume). Prints a Markdown table (mean +- std over seeds; per-seed and seed-pooled
paired bootstrap 95% intervals over the same users) and writes ``--out/rows.json`` + ``rows.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignrec.knowledge.config import KnowledgeTrainConfig  # noqa: E402
from alignrec.knowledge.train import train_knowledge_recommender  # noqa: E402
from inference.report_tables import interval_cell, seeds_table  # noqa: E402
from inference.significance import paired_bootstrap, seed_pooled_bootstrap, seed_summary  # noqa: E402
from recdata.config import parse_config  # noqa: E402
from recdata.evaluation import load_per_user  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402
from recdata.split import SplitDataset  # noqa: E402

logger = logging.getLogger("bench_knowledge_rows")
METRICS = ("recall@10", "ndcg@10")


def run_one(split: SplitDataset, out: Path, row: str, common: KnowledgeTrainConfig, **cfg: Any) -> dict[str, Any]:
    """Train one row into ``out`` (or reuse it) -> {metric: value, tail ndcg, seconds, per-user metrics}."""
    if not (out / "metrics.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        train_knowledge_recommender(dataclasses.replace(common, out_dir=str(out), **cfg), split, out)
        atomic_write_json(out / "seconds.json", {"seconds": round(time.perf_counter() - started, 1)})
    report = json.loads((out / "metrics.json").read_text())["recommenders"][row]
    users = load_per_user(out)[row]
    return {**{m: report["overall"][m] for m in METRICS},
            "tail:ndcg@10": report["slices"]["target_popularity"].get("tail", {}).get("ndcg@10"),
            "seconds": json.loads((out / "seconds.json").read_text())["seconds"] if (out / "seconds.json").is_file()
            else None,
            "per_user": {m: dict(zip(users["user_id"], users[m], strict=True)) for m in METRICS}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split_dir", required=True)
    parser.add_argument("--vectors", nargs="+", required=True,
                        help="name=folder of `alignrec knowledge encode` [@kinds/kinds: this folder's own --kinds]")
    parser.add_argument("--kinds", nargs="+", default=["item,user"], help="knowledge_kinds of each variant")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--out", required=True)
    args, rest = parser.parse_known_args()  # the rest: `alignrec knowledge train` flags for every row
    (common,) = parse_config([KnowledgeTrainConfig], rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    split = SplitDataset.load(args.split_dir)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = {}
    for spec in args.vectors:  # name=folder, or name=folder@kinds/kinds (e.g. item-only knowledge: @item)
        name, _, rest = spec.partition("=")
        folder, _, own = rest.partition("@")
        for kinds in own.split("/") if own else args.kinds:
            variants[f"{name}:{kinds}"] = (folder, kinds)
    out = Path(args.out)
    rows: dict[str, list[dict[str, Any]]] = {"sasrec": []} | {v: [] for v in variants}
    for seed in seeds:
        base = {"sasrec_seed": seed, "split_dir": args.split_dir}
        rows["sasrec"].append(run_one(split, out / f"seed{seed}" / "sasrec", "sasrec", common, **base,
                                      baseline=True, knowledge_model=False))
        for variant, (folder, kinds) in variants.items():
            rows[variant].append(run_one(split, out / f"seed{seed}" / variant.replace(":", "__").replace(",", "+"),
                                         "sasrec+knowledge", common, **base, baseline=False, knowledge_model=True,
                                         vectors_dir=folder,
                                         knowledge_kinds=kinds))
    result: dict[str, Any] = {"seeds": seeds, "config": rest, "variants": {v: list(fk) for v, fk in variants.items()},
                              "rows": {}}
    shown = (*METRICS, "tail:ndcg@10")
    extra: dict[str, list[str]] = {}
    for name, runs in rows.items():
        summary = {m: seed_summary([r[m] for r in runs]) for m in shown}
        entry: dict[str, Any] = {"summary": summary, "seconds": [r["seconds"] for r in runs]}
        if name != "sasrec":
            entry["pairs"] = {m: [paired_bootstrap(r["per_user"][m], b["per_user"][m], seed=s)
                                  for r, b, s in zip(runs, rows["sasrec"], seeds, strict=True)] for m in METRICS}
            entry["pooled"] = {m: seed_pooled_bootstrap([r["per_user"][m] for r in runs],
                                                        [b["per_user"][m] for b in rows["sasrec"]]) for m in METRICS}
        result["rows"][name] = entry
        extra[name] = [interval_cell(entry.get("pooled", {}).get("ndcg@10")),
                       "/".join(f"{s:.0f}" for s in entry["seconds"] if s is not None) or "-"]
    lines = [f"# SASRec + knowledge rows, seeds {seeds} (test, full ranking, history excluded)", "",
             *seeds_table({name: entry["summary"] for name, entry in result["rows"].items()}, shown, first="row",
                          extra=extra, extra_header=["NDCG@10 - SASRec, seeds pooled [95%]", "seconds"])]
    text = "\n".join(lines) + "\n"
    atomic_write_json(out / "rows.json", result)
    atomic_write_text(out / "rows.md", text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
