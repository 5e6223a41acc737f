"""Quality tables: one run, an ablation (a row per lever), or a seed sweep with a paired bootstrap vs SASRec.

    python scripts/bench_quality.py configs/amazon_scientific.yaml                    # one run: ours, SASRec, popularity
    python scripts/bench_quality.py configs/amazon_scientific.yaml --ablations configs/ablations/scientific.yaml
    python scripts/bench_quality.py configs/amazon_scientific.yaml --seeds 42,43,44

Every row: leave-one-out test targets, full ranking over the catalogue, the same split, exclude_history for every
recommender, overall and by target popularity (head / torso / tail). Ablation variants are the config plus
``section.key: value`` overrides (and the file's shared ``budget``), run in ``<runs_dir>/<name>__<variant>``
after hard-linking the base run's (or a ``from:`` variant's) finished stages, so only the stages a lever changes
re-run. The seed sweep sets
``embeddings.sasrec_seed``, ``tokenizer.rq_seed``, ``tasks.seed`` and ``train.seed`` to each seed (so SASRec run i
pairs with ours run i), reports mean +- std and a paired bootstrap 95% interval of ours - SASRec over the same
users (per seed pair, and over the per-user mean across seeds). Writes ``--out`` JSON + a Markdown twin.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignrec.pipeline import load_run_config, run_pipeline  # noqa: E402
from alignrec.pipeline.config import RunConfig  # noqa: E402
from alignrec.pipeline.variants import apply_overrides, seed_from_base  # noqa: E402
from inference.evaluate import load_per_user  # noqa: E402
from inference.significance import paired_bootstrap, seed_pooled_bootstrap, seed_summary  # noqa: E402
from recdata.config import load_yaml  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402
from trainer.callbacks import read_metrics  # noqa: E402

logger = logging.getLogger("bench_quality")
METRICS = [f"{m}@{k}" for m in ("recall", "ndcg") for k in (1, 5, 10, 20)]
SHORT = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]
BUCKETS = ("head", "torso", "tail")
VALID_METRIC = "eval_ranking_ndcg@10"  # ranking validation on valid users during training (never test)
SEED_KEYS = ("embeddings.sasrec_seed", "tokenizer.rq_seed", "tasks.seed", "train.seed")


def run_and_read(run_cfg: RunConfig, base: RunConfig | None, until: str) -> dict[str, Any]:
    """Run (reusing ``base``'s finished stages) and read the evaluation + stage records."""
    if base is not None and base.run_dir != run_cfg.run_dir:
        seed_from_base(base.run_dir, run_cfg.run_dir)
    run_pipeline(run_cfg, until=until)
    metrics = json.loads((run_cfg.run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]
    stages = {p.parent.name: json.loads(p.read_text()) for p in run_cfg.run_dir.glob("*/stage.json")}
    return {"metrics": metrics, "stages": stages, "run_dir": str(run_cfg.run_dir)}


def row_of(report: dict[str, Any]) -> dict[str, Any]:
    pop = report["slices"]["target_popularity"]
    return {"n": report["n_examples"], **{m: report["overall"].get(m) for m in METRICS},
            **{f"{b}:{m}": pop.get(b, {}).get(m) for b in BUCKETS for m in ("recall@10", "ndcg@10")},
            "coverage@20": report["coverage"].get("@20")}


def train_info(result: dict[str, Any]) -> dict[str, Any]:
    train = result["stages"].get("train", {})
    evaluate = result["stages"].get("evaluate", {})
    ranking = [r[VALID_METRIC] for r in read_metrics(Path(result["run_dir"]) / "train" / "model" / "metrics.jsonl")
               if VALID_METRIC in r]
    return {"train_seconds": round(train.get("seconds", 0.0), 1), "evaluate_seconds": round(evaluate.get("seconds", 0.0), 1),
            "train_ran_here": train.get("started") is not None,
            # best validation NDCG@10 = the selected checkpoint's (load_best_model_at_end); rows are chosen by it
            "valid:ndcg@10": max(ranking) if ranking else None}


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return lines


# ---- modes --------------------------------------------------------------------------------------------------
def single(run_cfg: RunConfig, until: str) -> tuple[dict, str]:
    result = run_and_read(run_cfg, None, until)
    rows = [{"recommender": name, **row_of(rep)} for name, rep in result["metrics"].items()]
    cols = ["recommender", "n", *[m for m in METRICS], *[f"{b}:ndcg@10" for b in BUCKETS], "coverage@20"]
    md = [f"# Quality: {run_cfg.name}", "", *table(rows, cols), "",
          "Stage wall times (s): " + ", ".join(f"{k} {round(v.get('seconds', 0), 1)}" for k, v in result["stages"].items())]
    return {"mode": "single", "rows": rows, "run_dir": result["run_dir"]}, "\n".join(md) + "\n"


def ablations(run_cfg: RunConfig, spec_path: str, until: str, only: set[str]) -> tuple[dict, str]:
    spec = load_yaml(spec_path)
    budget = dict(spec.get("budget") or {})
    variants = spec.get("variants") or []
    if not variants:
        raise ValueError(f"{spec_path}: no `variants:` list")
    # every variant reuses the base variant's run (also when --only leaves `base` out of this invocation)
    base = apply_overrides(run_cfg, budget, name=f"{run_cfg.name}__base")
    rows, baselines = [], None
    for variant in variants:
        name = str(variant["name"])
        if only and name not in only:
            continue
        cfg = apply_overrides(base, dict(variant.get("set") or {}), name=f"{run_cfg.name}__{name}")
        logger.info("variant %s: %s", name, variant.get("set"))
        # reuse the finished stages of the base variant, or of the variant named by `from:` (evaluate-only rows)
        seed = apply_overrides(base, {}, name=f"{run_cfg.name}__{variant['from']}") if variant.get("from") else base
        result = run_and_read(cfg, seed, until)
        if name == "base":
            base = cfg
        ours = result["metrics"]["alignrec"]
        rows.append({"variant": name, "lever": variant.get("note", ""), **row_of(ours), **train_info(result)})
        baselines = baselines or {k: row_of(v) for k, v in result["metrics"].items() if k != "alignrec"}
    cols = ["variant", "lever", "valid:ndcg@10", *SHORT, *[f"{b}:{m}" for b in BUCKETS for m in ("recall@10", "ndcg@10")],
            "coverage@20", "train_seconds", "evaluate_seconds"]
    md = [f"# Ablations: {run_cfg.name} ({spec_path})", "", f"Shared budget: {budget or 'none'}", "", *table(rows, cols), "",
          "Baselines on the same split:", "",
          *table([{"recommender": k, **v} for k, v in (baselines or {}).items()],
                 ["recommender", *SHORT, *[f"{b}:ndcg@10" for b in BUCKETS], "coverage@20"])]
    return {"mode": "ablations", "spec": spec, "rows": rows, "baselines": baselines}, "\n".join(md) + "\n"


def seeds(run_cfg: RunConfig, seed_list: list[int], until: str) -> tuple[dict, str]:
    per_seed, pairs = [], []
    by_user: dict[str, tuple[list, list]] = {m: ([], []) for m in ("recall@10", "ndcg@10")}  # (ours, SASRec) per seed
    for seed in seed_list:
        cfg = apply_overrides(run_cfg, dict.fromkeys(SEED_KEYS, seed), name=f"{run_cfg.name}__seed{seed}")
        result = run_and_read(cfg, run_cfg, until)  # the config's own run: a seed equal to it re-runs nothing
        rows = {name: row_of(rep) for name, rep in result["metrics"].items()}
        per_seed.append({"seed": seed, "rows": rows, **train_info(result)})
        users = load_per_user(Path(result["run_dir"]) / "evaluate")
        ours, sasrec = users["alignrec"], users.get("sasrec")
        if sasrec is None:
            raise ValueError(f"{result['run_dir']}: no SASRec row; set embeddings.sasrec_baseline: true")
        pair = {"seed": seed}
        for m, (ours_seeds, sasrec_seeds) in by_user.items():
            a = dict(zip(ours["user_id"], ours[m], strict=True))
            b = dict(zip(sasrec["user_id"], sasrec[m], strict=True))
            pair[m] = paired_bootstrap(a, b, seed=seed)
            ours_seeds.append(a)
            sasrec_seeds.append(b)
        pairs.append(pair)
    summary = {name: {m: seed_summary([s["rows"][name][m] for s in per_seed]) for m in METRICS + [f"{b}:ndcg@10" for b in BUCKETS]}
               for name in per_seed[0]["rows"]}
    pooled = {m: seed_pooled_bootstrap(*sides) for m, sides in by_user.items()}  # over users, seeds averaged
    lines = [f"# Seeds: {run_cfg.name}, seeds {seed_list}", "", "| recommender | " + " | ".join(SHORT + [f'{b}:ndcg@10' for b in BUCKETS]) + " |",
             "|" + "---|" * (1 + len(SHORT) + len(BUCKETS))]
    for name, vals in summary.items():
        cells = [f"{vals[m]['mean']:.4f} ± {vals[m]['std']:.4f}" for m in SHORT + [f"{b}:ndcg@10" for b in BUCKETS]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sasrec_mean = summary.get("sasrec", {})
    lines += ["", "Ours / SASRec (means): " + ", ".join(
        f"{m} {summary['alignrec'][m]['mean'] / sasrec_mean[m]['mean']:.3f}x" for m in SHORT + ["tail:ndcg@10"]
        if sasrec_mean.get(m, {}).get("mean"))]
    lines += ["", "Paired bootstrap of ours - SASRec over the same test users (95%, 2,000 resamples):", "",
              "| pair | Recall@10 diff [low, high] | NDCG@10 diff [low, high] |", "|---|---|---|"]
    for p in pairs:
        lines.append(f"| seed {p['seed']} | " + " | ".join(
            f"{p[m]['mean_diff']:+.4f} [{p[m]['low']:+.4f}, {p[m]['high']:+.4f}]" for m in ("recall@10", "ndcg@10")) + " |")
    lines.append("| mean over seeds | " + " | ".join(
        f"{pooled[m]['mean_diff']:+.4f} [{pooled[m]['low']:+.4f}, {pooled[m]['high']:+.4f}]" for m in ("recall@10", "ndcg@10")) + " |")
    lines += ["", "Train seconds per seed: " + ", ".join(f"{s['seed']}: {s['train_seconds']}" for s in per_seed)]
    return ({"mode": "seeds", "seeds": seed_list, "per_seed": per_seed, "summary": summary, "pairs": pairs, "pooled": pooled},
            "\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--ablations", default=None,
                        help="YAML with `budget:` overrides and `variants:` [{name, set, note, from}]")
    parser.add_argument("--only", default="", help="comma-separated variant names to run (default all)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 42,43,44")
    parser.add_argument("--runs_dir", default=None, help="where variant runs go (default the config's runs_dir)")
    parser.add_argument("--out", default=None, help="JSON output (default bench_results/quality_<name>[_mode].json)")
    parser.add_argument("--until", default="evaluate", help="last stage to run (default evaluate: no cache/export)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override for every run of this call (YAML value; null removes the key); repeatable")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_cfg = load_run_config(args.config, runs_dir=args.runs_dir)
    if args.set:
        import yaml

        pairs = [item.partition("=") for item in args.set]
        bad = [item for item, (_, sep, _) in zip(args.set, pairs, strict=True) if not sep]
        if bad:
            parser.error(f"--set {bad[0]!r} must look like section.key=value")
        run_cfg = apply_overrides(run_cfg, {k: yaml.safe_load(v) for k, _, v in pairs})
    if args.ablations:
        data, markdown = ablations(run_cfg, args.ablations, args.until, {s for s in args.only.split(",") if s})
        suffix = "_ablations"
    elif args.seeds:
        data, markdown = seeds(run_cfg, [int(s) for s in args.seeds.split(",")], args.until)
        suffix = "_seeds"
    else:
        data, markdown = single(run_cfg, args.until)
        suffix = ""
    out = Path(args.out or f"bench_results/quality_{run_cfg.name}{suffix}.json")
    atomic_write_json(out, {"config": args.config, **data})
    atomic_write_text(out.with_suffix(".md"), markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
