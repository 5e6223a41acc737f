"""Cold rows of a finished cold-protocol run, as training left them against fitted (``train.cold_rows``), on valid.

    python scripts/bench_cold_rows.py runs/cold_llm/demo_ml100k__cold0.1 [--valid_users 0] [--beams 20]

The run's model is decoded twice on the same valid examples: with the cold items' own-token rows as training left
them (``start``: masked out of every training softmax, never moved) and with them replaced by the ridge map of
their item vectors fitted on the warm items' trained rows (``trainer.cold_rows.fill_cold_rows``, what
``train.cold_rows: fitted`` writes at the end of training: the same function on the same trained weights, so this
is that option's result without a second training). Rows: overall, cold-target and warm-target Recall@10 /
NDCG@10, and the paired bootstrap of fitted - start over the same examples. Valid only: the choice of the option
is made here; test is read by ``scripts/bench_cold.py --part test`` of the chosen config. Writes JSON + Markdown.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.report_tables import bootstrap_table, markdown_table  # noqa: E402
from inference.significance import paired_bootstrap, per_user_metric  # noqa: E402
from inference.trained_run import TrainedRun  # noqa: E402
from recdata import SplitDataset  # noqa: E402
from recdata.cold_items import items_without_training, uses_cold_protocol  # noqa: E402
from recdata.evaluation import evaluate_recommender, sample_examples  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402
from recdata.item_vectors import load_embeddings_dir  # noqa: E402
from recdata.popularity import train_popularity  # noqa: E402
from trainer.cold_rows import fill_cold_rows  # noqa: E402

logger = logging.getLogger("bench_cold_rows")
KS = (1, 5, 10, 20)
METRICS = ("recall@10", "ndcg@10")


def _cells(rep: dict) -> list[str]:
    sliced = rep["slices"]["cold_items"]
    return [f"{rep['overall'][m]:.4f}" for m in METRICS] + [
        f"{sliced[s][m]:.4f}" for s in ("cold", "warm") for m in METRICS] + [f"{rep['coverage']['@10']:.3f}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--valid_users", type=int, default=0, help="seeded sample of valid users (0 = all)")
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--out", default=None, help="default bench_results/cold_rows_<run>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = Path(args.run_dir)
    split = SplitDataset.load(run / "data" / "split")
    if not uses_cold_protocol(split):
        parser.error(f"{run}/data/split withholds no training interaction: not a cold-item protocol run")
    cold = items_without_training(split)
    trained = TrainedRun.load(run / "train" / "model", device="cpu")
    vectors = load_embeddings_dir(run / "embeddings")
    counts, catalogue = train_popularity(split), split.dataset.item_ids()
    valid = sample_examples(split.eval_examples("valid"), args.valid_users, seed=0)

    def score() -> dict:
        fn = trained.recommender(max(KS), args.beams, True, args.batch_size)
        return evaluate_recommender(fn, valid, KS, catalogue, counts, batch_size=args.batch_size * 4,
                                    cold_items=cold)

    reports = {"start": score()}
    record = fill_cold_rows(trained.model, trained.item_tokenizer, trained.hf_tokenizer, vectors.item_ids,
                            vectors.vectors, cold)
    reports["fitted"] = score()
    cold_set = set(cold)
    is_cold = {str(u): t in cold_set for u, t in zip(valid["user_id"][:], valid["target"][:], strict=True)}
    intervals: dict[str, dict] = {"fitted - start": {}}
    for metric in METRICS:
        ours, theirs = per_user_metric(reports["fitted"], metric), per_user_metric(reports["start"], metric)
        intervals["fitted - start"][metric] = paired_bootstrap(ours, theirs)
        keep = [u for u in ours if is_cold[str(u)]]
        intervals["fitted - start"][f"cold:{metric}"] = paired_bootstrap({u: ours[u] for u in keep},
                                                                         {u: theirs[u] for u in keep})
    n_cold = sum(is_cold.values())
    header = ["cold rows", "Recall@10", "NDCG@10", "cold Recall@10", "cold NDCG@10", "warm Recall@10",
              "warm NDCG@10", "coverage@10"]
    lines = [f"# Cold rows: {run.name}, valid ({len(valid)} examples, {n_cold} with a cold target; beams "
             f"{args.beams})", "", *markdown_table(header, [[name, *_cells(rep)] for name, rep in reports.items()]),
             "", f"Fitted map: {record}", "", "Paired bootstrap over the same examples (95%, 2,000 resamples):", "",
             *bootstrap_table(intervals, [*METRICS, *(f"cold:{m}" for m in METRICS)], first="comparison")]
    markdown = "\n".join(lines) + "\n"
    out = Path(args.out or f"bench_results/cold_rows_{run.name}.json")
    atomic_write_json(out, {"run_dir": str(run), "beams": args.beams, "examples": len(valid), "cold_examples": n_cold,
                            "fit": record, "bootstrap": intervals,
                            "valid": {k: {kk: vv for kk, vv in v.items() if kk != "per_user"}
                                      for k, v in reports.items()}})
    atomic_write_text(out.with_suffix(".md"), markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
