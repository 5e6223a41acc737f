"""Cold items: one config under the cold-item protocol, every row overall and on the cold targets, with 95% intervals.

    python scripts/bench_cold.py configs/amazon_scientific.yaml                       # valid targets, 10% cold
    python scripts/bench_cold.py configs/amazon_scientific.yaml --cold_item_fraction 0.05 --set train.seed=43
    python scripts/bench_cold.py configs/amazon_scientific.yaml --part test           # the final table only
    python scripts/bench_cold.py configs/amazon_scientific.yaml --requests_file R.jsonl   # + requests in words

The run is the config plus ``data.cold_item_fraction`` (a seeded share of items loses every training interaction,
``recdata.cold_items``; they stay valid/test targets), ``evaluate.text_retriever_baseline: true``,
``embeddings.learn_baseline: true`` (unless ``--no_learn``) and ``evaluate.part``, in
``<runs_dir>/<name>__cold<fraction>``: its data stage differs from the config's, so every stage runs there once
(``bench_quality.run_and_read``); another ``--part`` re-runs only the evaluate stage. Rows, all on the same split
and examples with ``exclude_history``: ours (``alignrec``: the cold items' codes come from cold-start assignment,
``tokenizer.cold_items: auto``), SASRec, LEARN (twin towers over the same text vectors, trained on the same
training part by the embeddings stage), the text retriever (cosine between the mean of the history items' MiniLM
vectors and every item), popularity, and any other row the config turns on.

The cold slice is the examples whose target has no training interaction (``items_without_training``: the drawn
items plus any item never bought in training; the evaluation's ``unseen`` popularity bucket, checked equal here,
and its ``cold_items`` slice). Per row and slice: Recall@10 / NDCG@10 (the largest K below 10 when ``evaluate.ks``
stops there) with a 95% percentile bootstrap over the slice's examples (``significance.bootstrap_interval``), and
the paired bootstrap of ours - row over the same examples (``significance.paired_bootstrap``; 2,000 resamples).
Valid targets by default; ``--part test`` only for the final table of a chosen config (sweeps never read test).
``--requests_file`` (``alignrec tasks requests`` output) adds one more table: the same run's model and the MiniLM
retriever on the part's requests, ``request`` and ``request_history`` (``bench_cold_requests``; the other part's
requests are not read). Writes ``--out`` JSON (default ``bench_results/cold_<name>_<part>.json``) and its Markdown
twin.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_cold_requests import render_requests, request_table  # noqa: E402
from bench_quality import PART_KEY, compared_metrics, run_and_read  # noqa: E402

from alignrec.pipeline import load_run_config  # noqa: E402
from alignrec.pipeline.config import RunConfig  # noqa: E402
from alignrec.pipeline.variants import apply_overrides  # noqa: E402
from inference.report_tables import bootstrap_table, estimate_cell, markdown_table, metric_label  # noqa: E402
from inference.significance import bootstrap_interval, paired_bootstrap  # noqa: E402
from recdata import SplitDataset  # noqa: E402
from recdata.cold_items import COLD_LABEL, items_without_training, uses_cold_protocol  # noqa: E402
from recdata.errors import ConfigError, UserError  # noqa: E402
from recdata.evaluation import load_per_user, sample_examples  # noqa: E402
from recdata.io import atomic_write_json, atomic_write_text  # noqa: E402

logger = logging.getLogger("bench_cold")
OURS = "alignrec"
SLICES = ("all", "cold")
RESAMPLES = 2000


def cold_run_config(run_cfg: RunConfig, fraction: float, part: str, learn: bool = True) -> RunConfig:
    """The config under the cold-item protocol with the text retriever (and LEARN) rows, scored on ``part``."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--cold_item_fraction must be in (0, 1), got {fraction}")
    if part not in ("valid", "test"):
        raise ConfigError(f"--part must be valid or test, got {part!r}")
    overrides: dict[str, Any] = {"data.cold_item_fraction": fraction, "evaluate.text_retriever_baseline": True,
                                 PART_KEY: part}
    if learn:
        overrides["embeddings.learn_baseline"] = True
    return apply_overrides(run_cfg, overrides, name=f"{run_cfg.name}__cold{fraction:g}")


def cold_examples(run_dir: Path, part: str) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """``(user ids, is_cold [examples], split facts)`` of the examples the run's evaluation scored, in its order."""
    split = SplitDataset.load(run_dir / "data" / "split")
    if not uses_cold_protocol(split):
        raise ValueError(f"{run_dir}/data/split withholds no training interaction (no cold-item protocol, or a "
                         "cold_item_fraction too small for the catalogue); raise --cold_item_fraction")
    record = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    scored = record["config"]["EvaluateConfig"]["part"]
    if scored != part:
        raise ValueError(f"{run_dir}/evaluate scored {scored!r} targets, not {part!r}; re-run its evaluate stage")
    examples = split.eval_examples(part)
    sample = record.get("sample") or {}
    if sample.get("sampled"):  # the same seeded sample as the evaluation (recdata.evaluation.evaluation_sample)
        examples = sample_examples(examples, sample["examples"], sample["seed"])
    cold = set(items_without_training(split))
    seqs = split.dataset.sequences
    withheld = {item for items, labels in zip(seqs["item_ids"], seqs["split"], strict=True)
                for item, label in zip(items, labels, strict=True) if label == COLD_LABEL}
    targets = examples["target"][:]
    is_cold = np.array([t in cold for t in targets], dtype=bool)  # [examples]
    facts = {"examples": len(targets), "exclude_history": record["config"]["EvaluateConfig"].get("exclude_history"),
             "cold_targets": int(is_cold.sum()),
             "cold_targets_of_withheld_items": sum(t in withheld for t in targets),
             "items": len(split.dataset.item_ids()), "items_without_training": len(cold),
             "withheld_items": len(withheld)}
    return [str(u) for u in examples["user_id"][:]], is_cold, facts


def cold_rows(run_dir: Path, part: str, resamples: int = RESAMPLES) -> dict[str, Any]:
    """Every row of the run's evaluation, overall and on the cold slice: mean with its 95% bootstrap interval per
    metric, and the paired bootstrap of ours - row over the same examples (keyed by example, so a user with two
    examples in a temporal split counts twice)."""
    users, is_cold, facts = cold_examples(run_dir, part)
    reports = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["recommenders"]
    tables = {name: table for name, table in load_per_user(run_dir / "evaluate").items() if "/" not in name}
    metrics = compared_metrics(next(iter(tables.values())))
    masks = {"all": np.ones(len(users), dtype=bool), "cold": is_cold}
    rows: dict[str, Any] = {}
    for name, table in tables.items():
        if list(table["user_id"]) != users:
            raise ValueError(f"{run_dir}/evaluate: row {name!r} scored other examples than the split's {part} part")
        unseen = reports.get(name, {}).get("slices", {}).get("target_popularity", {}).get("unseen", {}).get("n")
        if unseen is not None and unseen != facts["cold_targets"]:  # the unseen bucket is the cold slice
            raise ValueError(f"row {name!r}: unseen bucket n {unseen} != {facts['cold_targets']} cold targets")
        values = {m: np.asarray(table[m], dtype=np.float64) for m in metrics}
        rows[name] = {s: {"n": int(mask.sum()), **{m: bootstrap_interval(values[m][mask], resamples=resamples)
                                                   for m in metrics}} for s, mask in masks.items()}
    versus = {}
    if OURS in tables:
        for name in tables:
            if name == OURS:
                continue
            versus[name] = {_column(s, m): _paired(tables[OURS][m], tables[name][m], masks[s], resamples)
                            for s in SLICES for m in metrics if masks[s].any()}
    return {"part": part, "metrics": list(metrics), "split": facts, "rows": rows, "versus_ours": versus}


def _column(slice_name: str, metric: str) -> str:
    """``recall@10`` overall, ``cold:recall@10`` on the cold slice (``metric_label``: "cold Recall@10")."""
    return metric if slice_name == "all" else f"{slice_name}:{metric}"


def _paired(ours: list[float], theirs: list[float], mask: np.ndarray, resamples: int) -> dict[str, Any]:
    keys = [str(i) for i in np.flatnonzero(mask)]
    return paired_bootstrap({k: ours[int(k)] for k in keys}, {k: theirs[int(k)] for k in keys}, resamples=resamples)


def cold_table(rows: dict[str, Any], metrics: list[str]) -> list[str]:
    """Markdown lines: a row per recommender, overall and on the cold slice, n and mean [95%] per metric."""
    header = ["recommender", "n", *(f"{metric_label(m)} [95%]" for m in metrics),
              "cold n", *(f"cold {metric_label(m)} [95%]" for m in metrics)]
    body = [[name, str(row["all"]["n"]), *(estimate_cell(row["all"][m]) for m in metrics),
             str(row["cold"]["n"]), *(estimate_cell(row["cold"][m]) for m in metrics)]
            for name, row in rows.items()]
    return markdown_table(header, body)


def split_sentence(facts: dict[str, Any], part: str) -> str:
    """What was scored: examples, cold targets and where they come from, the ranking protocol."""
    return (f"{facts['examples']} {part} examples, {facts['cold_targets']} with a cold target (no training "
            f"interaction): {facts['cold_targets_of_withheld_items']} of them a withheld item "
            f"({facts['withheld_items']} items withheld in all), the rest an item never bought in training; "
            f"{facts['items_without_training']} of {facts['items']} items have no training interaction. Full "
            f"ranking{', history excluded' if facts['exclude_history'] else ''}; 95% percentile bootstrap over the "
            "examples.")


def versus_lines(versus: dict[str, Any], metrics: list[str], ours: str = OURS) -> list[str]:
    """The paired bootstrap of ours - row over the same examples, overall and on the cold slice."""
    return [f"Paired bootstrap of ours ({ours}) - row over the same examples (95%, {RESAMPLES:,} resamples; "
            "`cold` = the cold targets only):", "",
            *bootstrap_table(versus, [_column(s, m) for s in SLICES for m in metrics], first=f"{ours} - row")]


def render(result: dict[str, Any], title: str) -> str:
    """One table (a row per recommender: overall and cold, n and mean [95%]) and the paired table vs ours."""
    metrics = result["metrics"]
    lines = [f"# {title}", "", split_sentence(result["split"], result["part"]), "",
             *cold_table(result["rows"], metrics)]
    if result["versus_ours"]:
        lines += ["", *versus_lines(result["versus_ours"], metrics)]
    if "requests" in result:
        lines += ["", *render_requests(result["requests"], RESAMPLES)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--cold_item_fraction", type=float, default=0.1, help="share of items withheld (default 0.1)")
    parser.add_argument("--part", default="valid", choices=["valid", "test"],
                        help="targets to score (default valid; test only for the final table of a chosen config)")
    parser.add_argument("--no_learn", action="store_true", help="leave the LEARN row out (no LEARN training)")
    parser.add_argument("--runs_dir", default=None, help="where the cold run goes (default the config's runs_dir)")
    parser.add_argument("--out", default=None, help="JSON output (default bench_results/cold_<name>_<part>.json)")
    parser.add_argument("--requests_file", default="",
                        help="`alignrec tasks requests` output: add the request / request_history table (default none)")
    parser.add_argument("--request_prior_weights", type=float, nargs="*", default=[],
                        help="with --requests_file: add the 'alignrec + request prior' row, its weight chosen on the "
                             "valid requests from these (`alignrec evaluate --request_prior_weights`; default none)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override, as `alignrec run --set` (YAML value; null removes the key); repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_cfg = load_run_config(args.config, runs_dir=args.runs_dir, overrides=args.set)
        cold_cfg = cold_run_config(run_cfg, args.cold_item_fraction, args.part, learn=not args.no_learn)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.request_prior_weights and not args.requests_file:
        parser.error("--request_prior_weights needs --requests_file (the request table it adds a row to)")
    if any(not w > 0 for w in args.request_prior_weights):
        parser.error(f"--request_prior_weights must be > 0, got {args.request_prior_weights}")
    if args.requests_file and not Path(args.requests_file).is_file():
        parser.error(f"--requests_file {args.requests_file} does not exist; write it with `alignrec tasks requests`")
    result = run_and_read(cold_cfg, None, "evaluate")
    rows = cold_rows(Path(result["run_dir"]), args.part)
    if args.requests_file:
        try:
            rows["requests"] = request_table(cold_cfg, Path(args.requests_file), args.part, RESAMPLES,
                                             args.request_prior_weights)
        except UserError as exc:
            parser.exit(exc.exit_code, f"{parser.prog}: error: {exc}\n")
    markdown = render(rows, f"Cold items: {run_cfg.name}, {args.part} targets, cold fraction {args.cold_item_fraction:g}")
    out = Path(args.out or f"bench_results/cold_{run_cfg.name}_{args.part}.json")
    atomic_write_json(out, {"config": args.config, "overrides": args.set, "cold_item_fraction": args.cold_item_fraction,
                            "run_dir": result["run_dir"], **rows})
    atomic_write_text(out.with_suffix(".md"), markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
