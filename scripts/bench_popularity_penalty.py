"""Popularity-adjusted decoding of a finished run: sweep the penalty on valid users, then test the chosen one.

    python scripts/bench_popularity_penalty.py runs/amazon_scientific_scratch \\
        [--penalties 0,0.25,0.5,0.75,1] [--valid_users 1000] [--beams 30] [--out bench_results/penalty.json]

Decoding ranks by ``log p(item | user) - penalty * log p_train(item)`` inside the trie-constrained beam search
(``ItemTrie.popularity_bias``: the adjustment is spread over the code path, so it steers every depth). The
penalty is chosen on a seeded sample of valid users only (NDCG@10); the test part is then scored for penalty 0
and the chosen one on every test user, with target-popularity slices and paired bootstrap intervals against
penalty 0 and against the run's own evaluated SASRec row (``evaluate/per_user.parquet``), same users.
Every row: full ranking over the catalogue, ``exclude_history=True``. Prints Markdown, writes JSON + Markdown.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from inference.report_tables import bootstrap_table  # noqa: E402
from inference.significance import paired_bootstrap, per_user_metric  # noqa: E402
from inference.trained_run import TrainedRun  # noqa: E402
from recdata import SplitDataset  # noqa: E402
from recdata.evaluation import evaluate_recommender, load_per_user, per_user_path, sample_examples  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402
from recdata.popularity import train_popularity  # noqa: E402

logger = logging.getLogger("bench_popularity_penalty")
KS = (1, 5, 10, 20)
SLICES = ("head", "torso", "tail")


def _row(name: str, rep: dict) -> str:
    cells = [name, f"{rep['overall']['recall@10']:.4f}", f"{rep['overall']['ndcg@10']:.4f}",
             *(f"{rep['slices']['target_popularity'][s]['ndcg@10']:.4f}" for s in SLICES),
             f"{rep['coverage']['@10']:.3f}", f"{rep['timing_s']:.0f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--penalties", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--valid_users", type=int, default=1000, help="seeded sample of valid users (0 = all)")
    parser.add_argument("--beams", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--valid_only", action="store_true", help="stop after the valid sweep (a short job)")
    parser.add_argument("--item_head_weight", type=float, default=None,
                        help="decoding weight of a run's item head (default: the run's own)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = Path(args.run_dir)
    split = SplitDataset.load(run / "data" / "split")
    trained = TrainedRun.load(run / "train" / "model", device="cpu")
    counts = train_popularity(split)
    catalogue = split.dataset.item_ids()
    valid = sample_examples(split.eval_examples("valid"), args.valid_users, seed=0)
    test = split.eval_examples("test")

    def score(penalty: float, examples) -> dict:
        fn = trained.recommender(max(KS), args.beams, True, args.batch_size, item_head_weight=args.item_head_weight,
                                 popularity_penalty=penalty, item_counts=counts)
        started = time.perf_counter()
        rep = evaluate_recommender(fn, examples, KS, catalogue, counts, batch_size=args.batch_size * 4,
                                   show_progress=False)
        rep["timing_s"] = time.perf_counter() - started
        return rep

    penalties = [float(p) for p in args.penalties.split(",")]
    sweep = {}
    for p in penalties:
        sweep[p] = score(p, valid)
        logger.info("valid penalty %.2f: N@10 %.4f", p, sweep[p]["overall"]["ndcg@10"])
    best = max(penalties, key=lambda p: sweep[p]["overall"]["ndcg@10"])
    if args.valid_only:
        test = test.select([])
    tests = {} if args.valid_only else {0.0: score(0.0, test)} | ({best: score(best, test)} if best != 0.0 else {})
    header = ["| penalty | R@10 | N@10 | head N@10 | torso N@10 | tail N@10 | coverage@10 | s |",
              "|---|---|---|---|---|---|---|---|"]
    lines = [f"# Popularity-adjusted decoding: {run.name} (beams {args.beams})", "",
             f"Valid sweep ({len(valid)} users, selection by N@10):", "", *header,
             *(_row(f"{p:g}", sweep[p]) for p in penalties), "",
             f"Test ({len(test)} users), chosen penalty {best:g}:", "", *header,
             *(_row(f"{p:g}", rep) for p, rep in tests.items()), ""]
    result = {"run_dir": str(run), "beams": args.beams, "chosen": best,
              "valid": {str(p): _strip(r) for p, r in sweep.items()},
              "test": {str(p): _strip(r) for p, r in tests.items()}, "bootstrap": {}}
    ours = tests.get(best)
    baselines = {"penalty 0": tests[0.0]} if ours else {}
    evaluated = run / "evaluate"
    if ours and per_user_path(evaluated) is not None:
        baselines |= {name: {"per_user": table} for name, table in load_per_user(evaluated).items()
                      if name.startswith("sasrec")}
    intervals: dict[str, dict] = {}
    for name, rep in baselines.items():
        if rep is ours:
            continue
        for metric in ("recall@10", "ndcg@10"):
            ci = paired_bootstrap(per_user_metric(ours, metric), per_user_metric(rep, metric))
            result["bootstrap"][f"{name}/{metric}"] = ci
            intervals.setdefault(f"penalty {best:g} - {name}", {})[metric] = ci
    if intervals:
        lines += [f"Paired bootstrap over the same {len(test)} test users (95%, 2,000 resamples):", "",
                  *bootstrap_table(intervals, ("recall@10", "ndcg@10"), first="comparison")]
    markdown = "\n".join(lines) + "\n"
    out = Path(args.out or f"bench_results/popularity_penalty_{run.name}.json")
    atomic_write_json(out, result)
    atomic_write_text(out.with_suffix(".md"), markdown)
    print(markdown)
    return 0


def _strip(rep: dict) -> dict:
    return {k: v for k, v in rep.items() if k != "per_user"}


if __name__ == "__main__":
    sys.exit(main())
