"""How often the beam's top-K is the exhaustive top-K: a finished run decoded at its beam and exhaustively.

    python scripts/bench_beam_exactness.py runs/amazon_scientific_scratch__seed42 [--valid_users 1000] \\
        [--beams 20,30] [--k 20] [--out bench_results/beam_exactness.json]

Per-item scores of the trie-constrained beam search are exact (the model's log-probability of the item's codes,
plus the item head's term); the top-K is exact only when no beam prunes a prefix that holds a top-K item. A beam
as wide as the largest number of children at every level but the last keeps every prefix, so it scores every
item: for the shipped two-level codes (one RQ level + the item-id level) that is the number of first-level
clusters. This script decodes a seeded sample of valid users (never test) with each beam and with that
exhaustive width, and reports the share of users whose top-K list equals the exhaustive one (in order, and as a
set), the mean overlap, and Recall@K / NDCG@K both ways. Prints Markdown, writes JSON + Markdown.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from inference.trained_run import TrainedRun  # noqa: E402
from recdata import SplitDataset  # noqa: E402
from recdata.evaluation import evaluate_recommender, sample_examples  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402

logger = logging.getLogger("bench_beam_exactness")


def exhaustive_beam(codes: np.ndarray) -> int:
    """The widest level but the last: the number of distinct prefixes at any depth before the last token."""
    return max(len({tuple(row[: depth + 1]) for row in codes}) for depth in range(codes.shape[1] - 1))


def recording(fn, lists: dict[str, list[str]]):
    """``fn`` that also keeps each user's returned list (one decode serves the metrics and the comparison)."""
    def wrapped(user_ids, histories, **kwargs):
        rows = fn(user_ids, histories, **kwargs)
        lists.update({str(u): [item for item, _ in row] for u, row in zip(user_ids, rows, strict=True)})
        return rows
    return wrapped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--valid_users", type=int, default=1000, help="seeded sample of valid users (0 = all)")
    parser.add_argument("--beams", default="20,30", help="beam widths to compare with the exhaustive one")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = Path(args.run_dir)
    split = SplitDataset.load(run / "data" / "split")
    trained = TrainedRun.load(run / "train" / "model", device="cpu")
    valid = sample_examples(split.eval_examples("valid"), args.valid_users, seed=0)
    full = exhaustive_beam(np.asarray(trained.item_tokenizer.codes))
    widths = sorted({int(b) for b in args.beams.split(",")} | {full})
    catalogue = split.dataset.item_ids()
    lists, reports, seconds = {}, {}, {}
    for beams in widths:
        lists[beams] = {}
        fn = recording(trained.recommender(args.k, beams, True, args.batch_size), lists[beams])
        started = time.perf_counter()
        reports[beams] = evaluate_recommender(fn, valid, (10, args.k), catalogue, batch_size=args.batch_size,
                                              show_progress=False)
        seconds[beams] = time.perf_counter() - started
        logger.info("beam %d: %.0f s", beams, seconds[beams])
    exact = lists[full]
    k = args.k
    rows = []
    for beams in widths:
        pairs = [(lists[beams][u], exact[u]) for u in exact]
        same_order = float(np.mean([a == b for a, b in pairs]))
        same_set = float(np.mean([set(a) == set(b) for a, b in pairs]))
        overlap = float(np.mean([len(set(a) & set(b)) / max(len(b), 1) for a, b in pairs]))
        overall = reports[beams]["overall"]
        rows.append({"beams": beams, "exhaustive": beams == full, "same_order": same_order, "same_set": same_set,
                     "overlap": overlap, f"recall@{k}": overall[f"recall@{k}"], f"ndcg@{k}": overall[f"ndcg@{k}"],
                     "recall@10": overall["recall@10"], "ndcg@10": overall["ndcg@10"],
                     "decode_s": round(seconds[beams], 1)})
    lines = [f"# Beam vs exhaustive top-{k}: {run.name} ({len(valid)} valid users, exhaustive beam {full})", "",
             f"| beams | top-{k} identical (order) | same set | overlap@{k} | R@{k} | N@{k} | R@10 | N@10 | decode s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['beams']}{' (exhaustive)' if r['exhaustive'] else ''} | {r['same_order']:.3f} | "
                     f"{r['same_set']:.3f} | {r['overlap']:.4f} | {r[f'recall@{k}']:.4f} | {r[f'ndcg@{k}']:.4f} | "
                     f"{r['recall@10']:.4f} | {r['ndcg@10']:.4f} | {r['decode_s']} |")
    markdown = "\n".join(lines) + "\n"
    out = Path(args.out or f"bench_results/beam_exactness_{run.name}.json")
    atomic_write_json(out, {"run_dir": str(run), "valid_users": len(valid), "exhaustive_beam": full, "rows": rows})
    atomic_write_text(out.with_suffix(".md"), markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
