"""LEARN vs SASRec vs popularity, overall and on the cold slice, with the frozen encoder's cost and training time.

    python scripts/bench_learn.py ../shared/datasets/amazon18-scientific [--cold_item_fraction 0.1] \\
        [--models learn,sasrec,popularity] [--out bench_results/learn_scientific.json] [--learn_dim 128 ...]

One leave-one-out split with the cold-item protocol (a seeded share of items loses every training interaction);
the text vectors are MiniLM at 64 tokens (embedding cache); every row is scored by full ranking over the
catalogue on the test targets with ``exclude_history=True``. The cold slice is the evaluation's ``unseen``
target bucket (targets with no training interaction). Training uses the training part only; early stopping
reads the valid targets only.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignrec.recommenders import as_recommend_fn, train_learn, train_sasrec  # noqa: E402
from recdata.cli import split_stats  # noqa: E402
from recdata.config import parse_config  # noqa: E402
from recdata.evaluation import evaluate_recommender  # noqa: E402
from recdata.io import atomic_write_json  # noqa: E402
from recdata.popularity import popularity_recommender, train_popularity  # noqa: E402
from recdata.prepare import DataConfig, prepare_dataset  # noqa: E402
from tokenization.embeddings import EmbeddingConfig, text_embeddings  # noqa: E402

KS = (10, 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--cold_item_fraction", type=float, default=0.1)
    parser.add_argument("--cold_item_seed", type=int, default=0)
    parser.add_argument("--models", default="popularity,learn,sasrec")
    parser.add_argument("--out", default=None)
    args, rest = parser.parse_known_args()  # the rest: EmbeddingConfig flags, e.g. --learn_dim 128
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name = Path(args.dataset).name
    split = prepare_dataset(DataConfig(path=args.dataset, format="lcrec_json", max_history=20,
                                       cold_item_fraction=args.cold_item_fraction, cold_item_seed=args.cold_item_seed))
    (cfg,) = parse_config([EmbeddingConfig], ["--text_encoder", "sentence", "--text_max_length", "64", *rest])
    examples = split.eval_examples("test")
    catalogue = split.dataset.item_ids()
    popularity = train_popularity(split)
    out = Path(args.out or f"bench_results/learn_{name}.json")
    result = {"dataset": name, "split": split_stats(split), "flags": rest, "rows": {}}
    for row in args.models.split(","):  # each row is scored and written as soon as it is trained
        started = time.perf_counter()
        if row == "learn":
            content = text_embeddings(cfg, split)
            result["encoder"] = {"first_run_with_model_load": content.meta.get("encode"), **_encoder_speed(cfg, split)}
            started = time.perf_counter()
            model = train_learn(split, cfg.learn_config(), content.vectors)
        elif row == "sasrec":
            model = train_sasrec(split, cfg.sasrec_config())
        elif row == "popularity":
            model = None
        else:
            raise SystemExit(f"unknown model {row!r}; use learn, sasrec, popularity")
        if model is not None:
            result[f"{row}_train"] = {**model.train_info, "wall_seconds": time.perf_counter() - started}
            fn = as_recommend_fn(model, k=max(KS))
        else:
            fn = popularity_recommender(split, max(KS), exclude_history=True)
        rep = evaluate_recommender(fn, examples, KS, catalogue, popularity, batch_size=256, show_progress=False)
        cold = rep["slices"]["target_popularity"]["unseen"]
        result["rows"][row] = {"n": rep["n_examples"], **{m: rep["overall"][m] for m in rep["overall"]},
                               "cold_n": cold["n"], **{f"cold_{m}": cold[m] for m in rep["overall"]}}
        atomic_write_json(out, result)
        print(_table(result, args.cold_item_fraction), flush=True)
    return 0


def _encoder_speed(cfg: EmbeddingConfig, split, sample: int = 1024) -> dict:
    """Frozen MiniLM throughput on ``sample`` catalogue texts, model loaded and warmed up first (not cached)."""
    from sentence_transformers import SentenceTransformer

    from recdata.paths import default_sentence_encoder_dir
    from tokenization.embeddings import render_catalogue

    texts = render_catalogue(split.dataset.item_table(), split.dataset.item_ids()[:sample], cfg.text_template)
    model = SentenceTransformer(str(default_sentence_encoder_dir()), device="cpu", local_files_only=True)
    model.max_seq_length = cfg.text_max_length
    model.encode(texts[:64], batch_size=cfg.text_batch_size)
    started = time.perf_counter()
    model.encode(texts, batch_size=cfg.text_batch_size)
    seconds = time.perf_counter() - started
    return {"items": len(texts), "seconds": round(seconds, 2), "items_per_second": round(len(texts) / seconds, 1),
            "max_tokens": cfg.text_max_length}


def _table(result: dict, fraction: float) -> str:
    lines = [f"# {result['dataset']}: test, full ranking, exclude_history, cold fraction {fraction}", "",
             "| recommender | R@10 | N@10 | R@20 | cold R@10 | cold N@10 | cold R@20 | train s |", "|" + "---|" * 8]
    for row, r in result["rows"].items():
        train = result.get(f"{row}_train", {}).get("wall_seconds")
        lines.append(f"| {row} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | {r['recall@20']:.4f} | "
                     f"{_f(r['cold_recall@10'])} | {_f(r['cold_ndcg@10'])} | {_f(r['cold_recall@20'])} | "
                     f"{'-' if train is None else f'{train:.0f}'} |")
    first = next(iter(result["rows"].values()))
    lines.append(f"\nn test = {first['n']}, cold test targets = {first['cold_n']}; encoder: {result.get('encoder')}")
    return "\n".join(lines)


def _f(value) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())
