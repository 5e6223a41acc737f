"""SASRec vs SASRec + knowledge rows over seeds, with a paired bootstrap of each row - SASRec.

    python scripts/bench_knowledge_rows.py --split_dir S --vectors collective=V1 individual=V2@item \
        --kinds item,user item user --seeds 42,43,44 --out bench_results/knowledge/sci_rows

One plain SASRec per seed and, per seed, one ``SASRec + knowledge`` per (vectors, kinds) variant, all with the
same SASRec config and seed (``--set key=value`` sets KnowledgeTrainConfig fields, e.g. sasrec_epochs=12). Every
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignrec.knowledge.config import KnowledgeTrainConfig  # noqa: E402
from alignrec.knowledge.train import train_knowledge_recommender  # noqa: E402
from inference.evaluate import load_per_user  # noqa: E402
from inference.significance import paired_bootstrap, seed_summary  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402
from recdata.split import SplitDataset  # noqa: E402

logger = logging.getLogger("bench_knowledge_rows")
METRICS = ("recall@10", "ndcg@10")


def _set(values: list[str]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(KnowledgeTrainConfig)}
    out: dict[str, Any] = {}
    for item in values:
        key, _, raw = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--set {item}: {key!r} is not a KnowledgeTrainConfig field")
        kind = type(getattr(KnowledgeTrainConfig(), key))
        out[key] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
    return out


def run_one(split: SplitDataset, out: Path, row: str, **cfg: Any) -> dict[str, Any]:
    """Train one row into ``out`` (or reuse it) -> {metric: value, tail ndcg, seconds, per-user metrics}."""
    if not (out / "metrics.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        train_knowledge_recommender(KnowledgeTrainConfig(out_dir=str(out), **cfg), split, out)
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
    parser.add_argument("--set", nargs="*", default=[], help="KnowledgeTrainConfig field=value for every row")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    split = SplitDataset.load(args.split_dir)
    seeds = [int(s) for s in args.seeds.split(",")]
    common = _set(args.set)
    variants = {}
    for spec in args.vectors:  # name=folder, or name=folder@kinds/kinds (e.g. item-only knowledge: @item)
        name, _, rest = spec.partition("=")
        folder, _, own = rest.partition("@")
        for kinds in own.split("/") if own else args.kinds:
            variants[f"{name}:{kinds}"] = (folder, kinds)
    out = Path(args.out)
    rows: dict[str, list[dict[str, Any]]] = {"sasrec": []} | {v: [] for v in variants}
    for seed in seeds:
        base = {**common, "sasrec_seed": seed, "split_dir": args.split_dir}
        rows["sasrec"].append(run_one(split, out / f"seed{seed}" / "sasrec", "sasrec", **base, knowledge_model=False))
        for variant, (folder, kinds) in variants.items():
            rows[variant].append(run_one(split, out / f"seed{seed}" / variant.replace(":", "__").replace(",", "+"),
                                         "sasrec+knowledge", **base, baseline=False, vectors_dir=folder,
                                         knowledge_kinds=kinds))
    result: dict[str, Any] = {"seeds": seeds, "config": common, "variants": {v: list(fk) for v, fk in variants.items()},
                              "rows": {}}
    lines = [f"# SASRec + knowledge rows, seeds {seeds} (test, full ranking, history excluded)", "",
             "| row | Recall@10 | NDCG@10 | tail NDCG@10 | NDCG@10 - SASRec, seeds pooled [95%] | seconds |",
             "|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        summary = {m: seed_summary([r[m] for r in runs]) for m in (*METRICS, "tail:ndcg@10")}
        entry: dict[str, Any] = {"summary": summary, "seconds": [r["seconds"] for r in runs]}
        pooled_cell = "-"
        if name != "sasrec":
            entry["pairs"] = {m: [paired_bootstrap(r["per_user"][m], b["per_user"][m], seed=s)
                                  for r, b, s in zip(runs, rows["sasrec"], seeds, strict=True)] for m in METRICS}
            entry["pooled"] = {}
            for m in METRICS:  # per-user mean over seeds of (row_i - SASRec_i), bootstrapped over users
                users = sorted(runs[0]["per_user"][m])
                diff = np.mean([[r["per_user"][m][u] - b["per_user"][m][u] for u in users]
                                for r, b in zip(runs, rows["sasrec"], strict=True)], axis=0)
                entry["pooled"][m] = paired_bootstrap(dict(zip(users, diff, strict=True)), dict.fromkeys(users, 0.0))
            p = entry["pooled"]["ndcg@10"]
            pooled_cell = f"{p['mean_diff']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}]"
        result["rows"][name] = entry
        cells = [f"{summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}" for m in (*METRICS, "tail:ndcg@10")]
        seconds = "/".join(f"{s:.0f}" for s in entry["seconds"] if s is not None) or "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {pooled_cell} | {seconds} |")
    text = "\n".join(lines) + "\n"
    atomic_write_json(out / "rows.json", result)
    atomic_write_text(out / "rows.md", text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
