"""Quality tables: one run, an ablation (a row per lever, valid targets only), or a seed sweep with a paired
bootstrap vs SASRec.

    python scripts/bench_quality.py configs/amazon_scientific.yaml                    # one run: ours, SASRec, popularity
    python scripts/bench_quality.py configs/ablations/scientific_base.yaml --ablations configs/ablations/scientific.yaml
    python scripts/bench_quality.py configs/amazon_scientific.yaml --seeds 42,43,44

Every row: leave-one-out targets, full ranking over the catalogue, the same split, exclude_history for every
recommender, overall and by target popularity (head / torso / tail).

Selection never reads test. The ablation mode chooses between recipes, so every variant (and its baselines) is
evaluated on the **valid** targets (``evaluate.part: valid``, set for every variant; a spec may not change it)
and its table has valid columns only; a spec's ``reference:`` (a variant, or a baseline row such as ``sasrec``)
adds a paired bootstrap of every variant against it over the same valid users. Only the single run and ``--seeds`` (the final runs of the chosen config)
score the config's own ``evaluate.part`` (test in the shipped configs). Ablation variants are the config plus
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
from inference.report_tables import bootstrap_table, markdown_table, metric_label, seeds_table  # noqa: E402
from inference.significance import paired_bootstrap, seed_pooled_bootstrap, seed_summary  # noqa: E402
from recdata.config import load_yaml  # noqa: E402
from recdata.errors import ConfigError  # noqa: E402
from recdata.evaluation import load_per_user  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402
from trainer.callbacks import read_metrics  # noqa: E402

logger = logging.getLogger("bench_quality")
METRICS = [f"{m}@{k}" for m in ("recall", "ndcg") for k in (1, 5, 10, 20)]
SHORT = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]
BUCKETS = ("head", "torso", "tail")
VALID_METRIC = "eval_ranking_ndcg@10"  # ranking validation on valid users during training (never test)
SEED_KEYS = ("embeddings.sasrec_seed", "tokenizer.rq_seed", "tasks.seed", "train.seed")
PART_KEY = "evaluate.part"
SELECTION_PART = "valid"  # the ablation mode chooses recipes: it never reads test
SPEC_KEYS = {"base", "budget", "variants", "shipped", "reference"}
VARIANT_KEYS = {"name", "set", "note", "from"}


def run_and_read(run_cfg: RunConfig, source_dir: Path | None, until: str) -> dict[str, Any]:
    """Run (reusing the finished stages of the run in ``source_dir``) and read the evaluation + stage records."""
    if source_dir is not None and source_dir != run_cfg.run_dir:
        seed_from_base(source_dir, run_cfg.run_dir)
    run_pipeline(run_cfg, until=until)
    metrics = json.loads((run_cfg.run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]
    stages = {p.parent.name: json.loads(p.read_text()) for p in run_cfg.run_dir.glob("*/stage.json")}
    return {"metrics": metrics, "stages": stages, "run_dir": str(run_cfg.run_dir)}


def row_of(report: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A table row of an evaluation report; ``prefix`` (e.g. ``valid:``) names the part in every metric key."""
    pop = report["slices"]["target_popularity"]
    return {"n": report["n_examples"], **{f"{prefix}{m}": report["overall"].get(m) for m in METRICS},
            **{f"{prefix}{b}:{m}": pop.get(b, {}).get(m) for b in BUCKETS for m in ("recall@10", "ndcg@10")},
            f"{prefix}coverage@20": report["coverage"].get("@20")}


def train_info(result: dict[str, Any]) -> dict[str, Any]:
    train = result["stages"].get("train", {})
    evaluate = result["stages"].get("evaluate", {})
    return {"train_seconds": round(train.get("seconds", 0.0), 1), "evaluate_seconds": round(evaluate.get("seconds", 0.0), 1),
            "train_ran_here": train.get("started") is not None}


def selection_ndcg(result: dict[str, Any]) -> float | None:
    """The training's ranking validation NDCG@10 of the kept checkpoint (valid users, ``train.ranking_eval_users``)."""
    ranking = [r[VALID_METRIC] for r in read_metrics(Path(result["run_dir"]) / "train" / "model" / "metrics.jsonl")
               if VALID_METRIC in r]
    return max(ranking) if ranking else None


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    return markdown_table(columns, [[fmt(r.get(c)) for c in columns] for r in rows])


def evaluated_part(run_cfg: RunConfig) -> str:
    return str(run_cfg.sections.get("evaluate", {}).get("part", "test"))


def check_spec(spec: dict[str, Any], spec_path: str) -> list[dict[str, Any]]:
    """The variants of an ablation spec; unknown keys, a missing or repeated name, an unknown ``from:`` and any
    ``evaluate.part`` override (the mode scores valid targets only) are ConfigErrors naming the spec."""
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{spec_path}: unknown key(s) {unknown}; an ablation spec has {sorted(SPEC_KEYS)}")
    variants = spec.get("variants") or []
    if not variants:
        raise ConfigError(f"{spec_path}: no `variants:` list")
    if PART_KEY in (spec.get("budget") or {}):
        raise ConfigError(f"{spec_path}: budget sets {PART_KEY}; ablations are scored on valid targets only")
    seen: list[str] = []
    for variant in variants:
        name = variant.get("name") if isinstance(variant, dict) else None
        if not name:
            raise ConfigError(f"{spec_path}: every variant needs a `name:`, got {variant!r}")
        unknown = sorted(set(variant) - VARIANT_KEYS)
        if unknown:
            raise ConfigError(f"{spec_path}: variant {name!r}: unknown key(s) {unknown}; allowed {sorted(VARIANT_KEYS)}")
        if name in seen:
            raise ConfigError(f"{spec_path}: variant name {name!r} is repeated")
        if PART_KEY in (variant.get("set") or {}):
            raise ConfigError(f"{spec_path}: variant {name!r} sets {PART_KEY}; ablations are scored on valid "
                              "targets only (the seed mode scores the chosen config on test)")
        if variant.get("from") and variant["from"] not in seen:
            raise ConfigError(f"{spec_path}: variant {name!r} reuses `from: {variant['from']}`, not an earlier variant")
        seen.append(str(name))
    return variants


def spec_base(spec: dict[str, Any], spec_path: str | Path) -> Path | None:
    """The run config a spec's variants are written for (its ``base:``, relative to the spec file), if named."""
    return (Path(spec_path).parent / spec["base"]).resolve() if spec.get("base") else None


def variant_configs(run_cfg: RunConfig, spec: dict[str, Any], spec_path: str) -> list[tuple[dict, RunConfig]]:
    """``(variant, its run config)`` for every variant: base + budget + its ``set`` + ``evaluate.part: valid``."""
    budget = dict(spec.get("budget") or {})
    base = apply_overrides(run_cfg, {**budget, PART_KEY: SELECTION_PART}, name=f"{run_cfg.name}__base")
    return [(variant, apply_overrides(base, {**dict(variant.get("set") or {}), PART_KEY: SELECTION_PART},
                                      name=f"{run_cfg.name}__{variant['name']}"))
            for variant in check_spec(spec, spec_path)]


# ---- modes --------------------------------------------------------------------------------------------------
def single(run_cfg: RunConfig, until: str) -> tuple[dict, str]:
    result = run_and_read(run_cfg, None, until)
    part = evaluated_part(run_cfg)
    rows = [{"recommender": name, **row_of(rep)} for name, rep in result["metrics"].items()]
    cols = ["recommender", "n", *[m for m in METRICS], *[f"{b}:ndcg@10" for b in BUCKETS], "coverage@20"]
    md = [f"# Quality: {run_cfg.name} ({part} targets)", "", *table(rows, cols), "",
          "Stage wall times (s): " + ", ".join(f"{k} {round(v.get('seconds', 0), 1)}" for k, v in result["stages"].items())]
    return {"mode": "single", "part": part, "rows": rows, "run_dir": result["run_dir"]}, "\n".join(md) + "\n"


def ablations(run_cfg: RunConfig, spec_path: str, until: str, only: set[str]) -> tuple[dict, str]:
    """A row per variant, every one scored on the valid targets (``rows`` and ``baselines`` read no test target;
    wall times go to ``timings``, apart from the rows, so the rows are a pure function of config and data)."""
    spec = load_yaml(spec_path)
    configured = variant_configs(run_cfg, spec, spec_path)
    # every variant reuses the base variant's run (also when --only leaves `base` out of this invocation)
    base_dir = run_cfg.runs_dir / f"{run_cfg.name}__base"
    prefix = f"{SELECTION_PART}:"
    rows, timings, baselines = [], {}, None
    per_user: dict[str, dict[str, dict[str, list]]] = {}  # {variant: {recommender: per-user columns}}
    for variant, cfg in configured:
        name = str(variant["name"])
        if only and name not in only:
            continue
        logger.info("variant %s: %s", name, variant.get("set"))
        # reuse the finished stages of the base variant, or of the variant named by `from:` (evaluate-only rows)
        source = run_cfg.runs_dir / f"{run_cfg.name}__{variant['from']}" if variant.get("from") else base_dir
        result = run_and_read(cfg, source, until)
        ours = result["metrics"]["alignrec"]
        rows.append({"variant": name, "lever": variant.get("note", ""), **row_of(ours, prefix),
                     "selection:ndcg@10": selection_ndcg(result)})
        timings[name] = train_info(result)
        baselines = baselines or {k: row_of(v, prefix) for k, v in result["metrics"].items() if k != "alignrec"}
        per_user[name] = load_per_user(Path(result["run_dir"]) / "evaluate")
    metric_cols = [*(prefix + m for m in SHORT), *(f"{prefix}{b}:{m}" for b in BUCKETS for m in ("recall@10", "ndcg@10")),
                   f"{prefix}coverage@20"]
    cols = ["variant", "lever", "selection:ndcg@10", *metric_cols, "train_seconds", "evaluate_seconds"]
    md = [f"# Ablations: {run_cfg.name} ({spec_path}), valid targets only", "",
          f"Shared budget: {spec.get('budget') or 'none'}. Every row and baseline is scored on the valid targets "
          f"({PART_KEY}: {SELECTION_PART}); selection:ndcg@10 is the training's ranking validation of the kept "
          "checkpoint (a sample of valid users). Test is read only by the seed mode, for the chosen config.", "",
          *table([{**r, **timings[r["variant"]]} for r in rows], cols), "",
          "Baselines on the same split (valid targets):", "",
          *table([{"recommender": k, **v} for k, v in (baselines or {}).items()],
                 ["recommender", *(prefix + m for m in SHORT), *(f"{prefix}{b}:ndcg@10" for b in BUCKETS),
                  f"{prefix}coverage@20"])]
    versus = reference_bootstrap(per_user, spec.get("reference"))
    if versus:
        md += ["", f"Paired bootstrap of each variant - {spec['reference']} over the same valid users (95%, 2,000 "
               "resamples):", "", *bootstrap_table(versus, next(iter(versus.values())).keys())]
    return ({"mode": "ablations", "part": SELECTION_PART, "spec": spec, "rows": rows, "baselines": baselines,
             "timings": timings, "versus_reference": versus}, "\n".join(md) + "\n")


def reference_bootstrap(per_user: dict[str, dict[str, dict[str, list]]], reference: str | None) -> dict[str, dict]:
    """``{variant: {metric: paired bootstrap of ours(variant) - reference}}`` over the same valid users, where the
    spec's ``reference:`` names a variant (ours in it) or a baseline row (e.g. ``sasrec``, from the same run)."""
    if not reference:
        return {}
    out = {}
    for name, users in per_user.items():
        if name == reference:
            continue
        theirs = per_user[reference]["alignrec"] if reference in per_user else users.get(reference)
        if theirs is None:
            raise ConfigError(f"ablation spec: reference {reference!r} is neither a variant run here nor a row of "
                              f"{name}'s evaluation ({sorted(users)})")
        ours = users["alignrec"]
        out[name] = {m: paired_bootstrap(dict(zip(ours["user_id"], ours[m], strict=True)),
                                         dict(zip(theirs["user_id"], theirs[m], strict=True)))
                     for m in compared_metrics(ours)}
    return out


def compared_metrics(columns: dict[str, list]) -> tuple[str, ...]:
    """Recall and NDCG at 10, or at the largest K the evaluation computed when it stops below 10."""
    ks = sorted(int(c.split("@")[1]) for c in columns if c.startswith("ndcg@"))
    k = 10 if 10 in ks else ks[-1]
    return f"recall@{k}", f"ndcg@{k}"


BAR_ROWS = ("sasrec", "sasrec_tuned", "sasrec_content")  # library-default SASRec, then the bar (alignrec sasrec-tune)


def bar_valid(run_dir: Path) -> dict[str, float]:
    """Best valid NDCG@10 of each bar row this run trained (evaluate/bar.json): the bar is chosen by it."""
    path = run_dir / "evaluate" / "bar.json"
    if not path.is_file():
        return {}
    return {row: float(info["best_valid_ndcg@10"]) for row, info in json.loads(path.read_text()).items()}


def seeds(run_cfg: RunConfig, seed_list: list[int], until: str) -> tuple[dict, str]:
    """Seed i of ours paired with seed i of every SASRec row (default, tuned, content) over the same users; the
    bar of the claim is the better of the tuned and content rows by their mean valid NDCG@10."""
    per_seed, pairs = [], {}
    by_user: dict[str, dict[str, tuple[list, list]]] = {}  # {row: {metric: (ours per seed, row per seed)}}
    valid: dict[str, list[float]] = {}
    for seed in seed_list:
        cfg = apply_overrides(run_cfg, dict.fromkeys(SEED_KEYS, seed), name=f"{run_cfg.name}__seed{seed}")
        result = run_and_read(cfg, run_cfg.run_dir, until)  # the config's own run: a seed equal to it re-runs nothing
        rows = {name: row_of(rep) for name, rep in result["metrics"].items()}
        per_seed.append({"seed": seed, "rows": rows, **train_info(result)})
        for row, score in bar_valid(Path(result["run_dir"])).items():
            valid.setdefault(row, []).append(score)
        users = load_per_user(Path(result["run_dir"]) / "evaluate")
        bars = [row for row in BAR_ROWS if row in users]
        if not bars:
            raise ValueError(f"{result['run_dir']}: no SASRec row; set embeddings.sasrec_baseline: true or "
                             "evaluate.sasrec_tuned (alignrec sasrec-tune)")
        ours = users["alignrec"]
        for row in bars:
            pair = {"seed": seed}
            for m in ("recall@10", "ndcg@10"):
                a = dict(zip(ours["user_id"], ours[m], strict=True))
                b = dict(zip(users[row]["user_id"], users[row][m], strict=True))
                pair[m] = paired_bootstrap(a, b, seed=seed)
                sides = by_user.setdefault(row, {}).setdefault(m, ([], []))
                sides[0].append(a)
                sides[1].append(b)
            pairs.setdefault(row, []).append(pair)
    shown = SHORT + [f"{b}:ndcg@10" for b in BUCKETS]
    summary = {name: {m: seed_summary([s["rows"][name][m] for s in per_seed]) for m in METRICS + [f"{b}:ndcg@10" for b in BUCKETS]}
               for name in per_seed[0]["rows"]}
    pooled = {row: {m: seed_pooled_bootstrap(*sides) for m, sides in metrics.items()}  # over users, seeds averaged
              for row, metrics in by_user.items()}
    tuned = {row: sum(v) / len(v) for row, v in valid.items()}
    bar = max(tuned, key=tuned.get) if tuned else "sasrec"
    part = evaluated_part(run_cfg)
    lines = [f"# Seeds: {run_cfg.name}, seeds {seed_list} ({part} targets)", "", *seeds_table(summary, shown)]
    if tuned:
        lines += ["", "The bar (chosen by mean valid NDCG@10 over seeds): " + ", ".join(
            f"{row} {score:.4f}" for row, score in tuned.items()) + f" -> **{bar}**"]
    for row in pairs:
        means = summary.get(row, {})
        label = "the bar" if row == bar else "library-default SASRec" if row == "sasrec" else row
        lines += ["", f"Ours / {row} ({label}, means): " + ", ".join(
            f"{metric_label(m)} {summary['alignrec'][m]['mean'] / means[m]['mean']:.3f}x" for m in SHORT + ["tail:ndcg@10"]
            if means.get(m, {}).get("mean"))]
        lines += ["", f"Paired bootstrap of ours - {row} over the same {part} users (95%, 2,000 resamples):", "",
                  *bootstrap_table({**{f"seed {p['seed']}": p for p in pairs[row]}, "mean over seeds": pooled[row]},
                                   ("recall@10", "ndcg@10"))]
    lines += ["", "Train seconds per seed: " + ", ".join(f"{s['seed']}: {s['train_seconds']}" for s in per_seed)]
    return ({"mode": "seeds", "part": part, "seeds": seed_list, "per_seed": per_seed, "summary": summary,
             "bar": bar, "bar_valid": valid, "pairs": pairs, "pooled": pooled}, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--ablations", default=None,
                        help="YAML with `budget:` overrides and `variants:` [{name, set, note, from}]; scored on "
                             "valid targets only")
    parser.add_argument("--only", default="", help="comma-separated variant names to run (default all)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 42,43,44")
    parser.add_argument("--runs_dir", default=None, help="where variant runs go (default the config's runs_dir)")
    parser.add_argument("--out", default=None, help="JSON output (default bench_results/quality_<name>[_mode].json)")
    parser.add_argument("--until", default="evaluate", help="last stage to run (default evaluate: no cache/export)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override for every run of this call, as `alignrec run --set` (YAML value; null "
                             "removes the key); repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_cfg = load_run_config(args.config, runs_dir=args.runs_dir, overrides=args.set)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.ablations:
        base = spec_base(load_yaml(args.ablations), args.ablations)
        if base is not None and base != Path(args.config).resolve():
            logger.warning("%s is written for %s, not %s", args.ablations, base, args.config)
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
