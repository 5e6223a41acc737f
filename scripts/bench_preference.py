"""SFT vs SFT+DPO on one finished pipeline run: a small sweep chosen on valid users, then test with a paired bootstrap.

    python scripts/bench_preference.py configs/amazon_scientific.yaml --runs_dir runs \\
        --points hard:1:0.1 hard:4:0.1 random:4:0.1 --valid_users 1000 --dpo "--max_steps 300 --learning_rate 1e-4"

Each point is STRATEGY:NEGATIVES:BETA. Pairs are built from the run's split, ItemTokenizer and tasks config (the
preference stage's builder), DPO starts from the run's ``train/model`` and writes ``--sweep_dir/<point>`` (the run is only read).
Selection reads only valid targets; the best point (valid NDCG@10) and SFT are then scored on the same test users,
with a paired bootstrap interval of the difference. Every row uses exclude_history=True and full ranking over the
catalogue (trie-constrained beam search). Results: bench_results/preference_<run>.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignrec.pipeline import load_run_config  # noqa: E402
from inference.report_tables import bootstrap_table, interval_cell, markdown_table  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402

logger = logging.getLogger("bench_preference")
METRICS = ("recall@10", "ndcg@10")


def build_pairs(run_cfg, strategy: str, negatives: int, out: Path) -> dict:
    from alignrec.llm.hf_tokenizer import load_hf_tokenizer
    from alignrec.pipeline.sections import stage_keys, train_model_dir
    from recdata import SplitDataset
    from recdata.config import parse_config
    from sft_tasks.config import TaskConfig
    from sft_tasks.preference import build_preference_pairs, save_preference_pairs
    from tokenization import ItemTokenizer

    run_dir = run_cfg.run_dir
    section = {**stage_keys("tasks", run_cfg.sections.get("tasks", {})),
               "preference_negatives": negatives, "negative_strategy": strategy}
    (cfg,) = parse_config([TaskConfig], [], config=section)
    pairs, info = build_preference_pairs(cfg, SplitDataset.load(run_dir / "data" / "split"),
                                         ItemTokenizer.from_pretrained(run_dir / "tokenizer" / "item_tokenizer"),
                                         load_hf_tokenizer(train_model_dir(run_cfg)))
    save_preference_pairs(pairs, info, out)
    return info


def train_point(sft_dir: Path, pairs_dir: Path, out: Path, beta: float, flags: list[str]) -> float:
    from inference.ranking_validation import ranking_validation_callback
    from trainer.dpo_config import parse_dpo_config
    from trainer.dpo_run import run_dpo

    argv = ["--sft_run_dir", str(sft_dir), "--pairs_dir", str(pairs_dir), "--output_dir", str(out),
            "--beta", str(beta), "--report_to", "none", "--save_strategy", "no", *flags]
    if (out / "alignrec_train.json").is_file():
        logger.info("%s already trained; reusing it", out)
        return float("nan")
    started = time.perf_counter()
    run_dpo(*parse_dpo_config(argv), ranking_validation=ranking_validation_callback)  # flags may set ranking_eval_users
    return time.perf_counter() - started


def per_user(model_dir: Path, examples, beams: int, batch_size: int, cache: Path) -> tuple[dict[str, np.ndarray], float]:
    """Recall/NDCG@10 of every example (same order as ``examples``), and the seconds it took.

    Cached in ``cache`` (.npz) so a sweep split over several short jobs resumes.
    """
    if cache.is_file():
        saved = np.load(cache)
        return {m: saved[m.replace("@", "_at_")] for m in METRICS}, float(saved["seconds"])
    from inference.metrics import ndcg_at_k, recall_at_k
    from inference.trained_run import TrainedRun

    fn = TrainedRun.load(model_dir, device="cpu").recommender(10, beams, exclude_history=True, batch_size=batch_size)
    out = {m: [] for m in METRICS}
    started = time.perf_counter()
    for start in range(0, len(examples), batch_size * 4):
        rows = examples[start:start + batch_size * 4]
        for target, rec in zip(rows["target"], fn(rows["user_id"], rows["history"]), strict=True):
            ranked = [item for item, _ in rec][:10]
            out["recall@10"].append(recall_at_k(ranked, target, 10))
            out["ndcg@10"].append(ndcg_at_k(ranked, target, 10))
    seconds = time.perf_counter() - started
    scores = {m: np.asarray(v) for m, v in out.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, seconds=seconds, **{m.replace("@", "_at_"): v for m, v in scores.items()})
    return scores, seconds


def bootstrap(examples, base: np.ndarray, new: np.ndarray) -> dict:
    """``inference.significance.paired_bootstrap`` of new - base over the same users (mean_diff, low, high, ...)."""
    from inference.significance import paired_bootstrap

    users = list(examples["user_id"])
    return paired_bootstrap(dict(zip(users, new.tolist(), strict=True)), dict(zip(users, base.tolist(), strict=True)))


def _subset(examples, n: int, seed: int = 0):
    if not n or n >= len(examples):
        return examples
    return examples.select(sorted(np.random.default_rng(seed).choice(len(examples), n, replace=False).tolist()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--runs_dir", default=None)
    parser.add_argument("--points", nargs="+", required=True, help="STRATEGY:NEGATIVES:BETA, e.g. hard:4:0.1")
    parser.add_argument("--dpo", default="", help="extra trainer/dpo.py flags for every point (quoted)")
    parser.add_argument("--valid_users", type=int, default=1000, help="valid users for selection (0 = all)")
    parser.add_argument("--test_users", type=int, default=0, help="test users for the final rows (0 = all)")
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--out", default=None)
    parser.add_argument("--sweep_dir", default=None, help="where pairs, DPO runs and scores go (default <run>/preference_sweep)")
    parser.add_argument("--skip_test", action="store_true", help="stop after the valid sweep (a short job)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from recdata import SplitDataset

    run_cfg = load_run_config(args.config, runs_dir=args.runs_dir)
    run_dir = run_cfg.run_dir
    sft_dir = run_dir / "train" / "model"
    split = SplitDataset.load(run_dir / "data" / "split")
    valid, test = _subset(split.eval_examples("valid"), args.valid_users), _subset(split.eval_examples("test"), args.test_users)
    sweep_dir = Path(args.sweep_dir) if args.sweep_dir else run_dir / "preference_sweep"
    flags = shlex.split(args.dpo)

    def scores_at(name: str, part: str) -> Path:
        n = len(valid if part == "valid" else test)
        return sweep_dir / "scores" / f"{name}_{part}_{n}_b{args.beams}.npz"

    rows: dict[str, dict] = {}
    sft_valid, sft_valid_s = per_user(sft_dir, valid, args.beams, args.batch_size, scores_at("sft", "valid"))
    rows["sft"] = {"valid": {m: float(v.mean()) for m, v in sft_valid.items()}, "eval_seconds": sft_valid_s}
    for point in args.points:
        strategy, negatives, beta = point.split(":")
        tag = f"{strategy}-n{negatives}-b{beta}"
        pairs_dir = sweep_dir / f"pairs-{strategy}-n{negatives}"
        info = build_pairs(run_cfg, strategy, int(negatives), pairs_dir) if not pairs_dir.is_dir() else {}
        seconds = train_point(sft_dir, pairs_dir, sweep_dir / tag, float(beta), flags)
        scores, eval_s = per_user(sweep_dir / tag, valid, args.beams, args.batch_size, scores_at(tag, "valid"))
        rows[tag] = {"valid": {m: float(v.mean()) for m, v in scores.items()}, "dpo_seconds": seconds,
                     "eval_seconds": eval_s, "pairs": info.get("train_pairs"),
                     "valid_delta_ci": {m: bootstrap(valid, sft_valid[m], scores[m]) for m in METRICS}}
        logger.info("%s: %s", tag, rows[tag])
    best = max((t for t in rows if t != "sft"), key=lambda t: rows[t]["valid"]["ndcg@10"])
    if args.skip_test:
        logger.info("valid sweep done; best point %s", best)
        return 0
    sft_test, _ = per_user(sft_dir, test, args.beams, args.batch_size, scores_at("sft", "test"))
    best_test, _ = per_user(sweep_dir / best, test, args.beams, args.batch_size, scores_at(best, "test"))
    final = {"best": best, "n_test": len(test), "sft": {m: float(v.mean()) for m, v in sft_test.items()},
             "sft+dpo": {m: float(v.mean()) for m, v in best_test.items()},
             "delta_ci": {m: bootstrap(test, sft_test[m], best_test[m]) for m in METRICS}}
    sweep_rows = [[tag, str(row.get("pairs", "-")), f"{row.get('dpo_seconds', float('nan')):.0f}",
                   f"{row['valid']['recall@10']:.4f}", f"{row['valid']['ndcg@10']:.4f}",
                   interval_cell(row.get("valid_delta_ci", {}).get("ndcg@10"))] for tag, row in rows.items()]
    lines = [f"# SFT vs SFT+DPO: {run_cfg.name}", "", f"Sweep on {len(valid)} valid users (selection by NDCG@10):", "",
             *markdown_table(["point", "pairs", "DPO s", "valid R@10", "valid N@10", "dN@10 [95% CI]"], sweep_rows),
             "", f"Test ({len(test)} users), best point {best}:", "", "| model | R@10 | N@10 |", "|---|---|---|",
             f"| SFT | {final['sft']['recall@10']:.4f} | {final['sft']['ndcg@10']:.4f} |",
             f"| SFT+DPO | {final['sft+dpo']['recall@10']:.4f} | {final['sft+dpo']['ndcg@10']:.4f} |", "",
             "Paired bootstrap over the same test users (95%, 2,000 resamples):", "",
             *bootstrap_table({"SFT+DPO - SFT": final["delta_ci"]}, METRICS, first="comparison")]
    markdown = "\n".join(lines) + "\n"
    out = Path(args.out or f"bench_results/preference_{run_cfg.name}.json")
    atomic_write_json(out, {"config": args.config, "run_dir": str(run_dir), "points": rows, "test": final,
                            "dpo_flags": flags})
    atomic_write_text(out.with_suffix(".md"), markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
