"""Rows of different runs' evaluations, compared on the same users: means and paired bootstrap intervals.

    python scripts/compare_runs.py llm=runs/amazon_scientific_llm scratch=runs/scratch_test2000 --ours llm:alignrec \\
        --versus scratch:alignrec llm:sasrec_content --metrics ndcg@10 recall@10 --out bench_results/compare.json

(``runs/scratch_test2000``: ``alignrec evaluate --max_examples 2000`` on the scratch run, the LLM run's sample):
a claim that one run beats another needs the same per-user pairing across their ``evaluate`` folders.

Each ``NAME=PATH`` is an evaluate output folder (``metrics.json`` + ``per_user.parquet``, or an older run's
``per_user.json``) or a run folder (its ``evaluate/``); rows are ``NAME:row``. The per-user tables are read with
``recdata.per_user.load_per_user`` (only the named rows' columns), the values with
``inference.significance.per_user_metric``, the differences with ``inference.significance.paired_bootstrap``
(95% percentile interval, 2,000 resamples, seed 0: the one bootstrap of the project). Each row's per-user mean is
checked against its ``metrics.json`` value, so a stale per-user file is never compared.

Refused in one line, exit 2 (never intersected quietly): rows scoring other users, another part, a missing row or
metric, a user scored twice. Prints Markdown (means; ours - row with intervals and ratios); ``--out`` the same as
JSON (atomically; only over a previous output of this script).

Seeds: a NAME may list one folder per seed, comma-separated and paired by position (seed i of every name with
seed i of the others), e.g. a recipe's seed runs against a bar trained in earlier runs of the same seeds:

    python scripts/compare_runs.py new=runs/a__seed42,runs/a__seed43,runs/a__seed44 \
        old=runs/b__seed42,runs/b__seed43,runs/b__seed44 --ours new:alignrec --versus old:sasrec_content

Each seed's pair is checked and bootstrapped as above; every row of every seed must score the same users, and
the pooled pair "mean over seeds" bootstraps the per-user mean over seeds of ours - row
(``inference.significance.seed_pooled_bootstrap``, as ``bench_quality.py --seeds``); means are mean ± std over
seeds. JSON: ``sources``, ``rows`` (a record per seed), ``means`` (``seed_summary``), ``differences`` ``{row:
{"per_seed": [...], "pooled": ...}}``. One folder per name gives the single-folder output.

``--slice head|torso|tail|unseen``: all of it on the users whose target is in that popularity bucket, as the
evaluation assigned it (``compare_runs_slices.py``; checked against each ``metrics.json``); JSON adds it and n.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from compare_runs_slices import check_bucket, restrict_to_slice  # noqa: E402

from inference.report_tables import interval_cell, markdown_table, metric_label, seeds_table  # noqa: E402
from inference.significance import (  # noqa: E402
    paired_bootstrap,
    per_user_metric,
    seed_pooled_bootstrap,
    seed_summary,
)
from recdata.errors import ConfigError, InputFileError, UserError, cli_error_line  # noqa: E402
from recdata.io import atomic_write_json  # noqa: E402
from recdata.per_user import load_per_user  # noqa: E402

logger = logging.getLogger("compare_runs")
SCRIPT_TAG = "compare_runs"  # marks the JSON output, so --out only ever replaces a previous output of this script
RESAMPLES = 2000
SEED = 0
CONFIDENCE = 0.95
METRICS = ("ndcg@10", "recall@10")
MEAN_TOLERANCE = 1e-9  # per-user mean vs metrics.json: the same float64 values, so only rounding may differ


def evaluate_folder(path: str | Path) -> Path:
    """The evaluate output folder ``path`` names: itself when it holds ``metrics.json``, else its ``evaluate/``
    (a run folder), so both the pipeline's runs and ``alignrec evaluate --out_dir`` folders can be passed."""
    path = Path(path)
    for folder in (path, path / "evaluate"):
        if (folder / "metrics.json").is_file():
            return folder
    raise InputFileError(f"{path} holds no metrics.json, nor does {path / 'evaluate'}: pass an evaluate output "
                         "folder or a run folder whose evaluate stage has run")


def parse_sources(specs: list[str]) -> dict[str, list[Path]]:
    """``{NAME: [evaluate folder per seed]}`` from ``NAME=PATH[,PATH...]`` arguments (names unique, without ``:``,
    which splits rows; every name lists as many folders, paired by position)."""
    sources: dict[str, list[Path]] = {}
    for spec in specs:
        name, sep, paths = spec.partition("=")
        if not sep or not name or not paths or ":" in name or "" in paths.split(","):
            raise ConfigError(f"source {spec!r} is not NAME=PATH[,PATH...] (a name without ':' and a folder per "
                              "seed), e.g. llm=runs/amazon_scientific_llm")
        if name in sources:
            raise ConfigError(f"source name {name!r} is given twice; give each folder its own name")
        folders = [evaluate_folder(path) for path in paths.split(",")]
        repeated = sorted({str(f) for f in folders if folders.count(f) > 1})
        if repeated:
            raise ConfigError(f"source {name} lists {repeated} twice; give one folder per seed")
        sources[name] = folders
    counts = {name: len(folders) for name, folders in sources.items()}
    if len(set(counts.values())) > 1:
        raise ConfigError(f"the sources list different numbers of folders {counts}; every NAME lists one folder "
                          "per seed, the same seeds in the same order")
    return sources


def parse_row(ref: str, sources: dict[str, Any]) -> tuple[str, str]:
    """``(source name, row)`` of ``NAME:row`` (the row name may itself hold ``:`` or ``/``)."""
    name, sep, row = ref.partition(":")
    if not sep or not row:
        raise ConfigError(f"row {ref!r} is not NAME:row, e.g. {next(iter(sources), 'llm')}:alignrec")
    if name not in sources:
        raise ConfigError(f"row {ref!r} names source {name!r}; the sources are {sorted(sources)}")
    return name, row


def _read_source(name: str, folder: Path, rows: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, list]]]:
    """``(metrics.json, {row: per-user table})`` of one folder, through the project's reader (one read per folder,
    only these rows' columns); a missing row is refused with the rows the folder has."""
    record = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    try:
        tables = load_per_user(folder, names=rows)
    except KeyError as exc:  # load_per_user names the file, the missing rows and the rows it has
        raise ConfigError(f"unknown row of {name}: {exc.args[0]}") from None
    except FileNotFoundError as exc:
        raise InputFileError(str(exc)) from None
    return record, tables


def _row_values(ref: str, folder: Path, table: dict[str, list], record: dict[str, Any],
                metrics: list[str]) -> dict[str, dict[str, float]]:
    """``{metric: {user_id: value}}`` of one row, after the checks that make a pairing by user id sound."""
    users = table.get("user_id") or []
    missing = [m for m in metrics if m not in table]
    if missing:
        available = sorted(c for c in table if c != "user_id")
        raise ConfigError(f"{ref} ({folder}) has no per-user {missing}; it has {available}")
    if len(set(users)) != len(users):
        raise ConfigError(f"{ref} ({folder}) scores {len(users)} examples of {len(set(users))} users (a user "
                          "scored twice, e.g. a temporal split); this script pairs rows by user id")
    values = {m: per_user_metric({"per_user": table}, m) for m in metrics}
    report = (record.get("recommenders") or {}).get(ref.partition(":")[2])
    for m in metrics:
        arr = np.asarray(table[m], dtype=np.float64)  # [users], in the order metrics.json averaged them
        if not np.isfinite(arr).all():
            raise ConfigError(f"{ref} ({folder}): {int((~np.isfinite(arr)).sum())} per-user {m} values are missing "
                              "or not finite; re-run its evaluation")
        stored = (report or {}).get("overall", {}).get(m)
        if stored is not None and not math.isclose(float(arr.mean()), stored, rel_tol=MEAN_TOLERANCE,
                                                   abs_tol=MEAN_TOLERANCE):
            raise ConfigError(f"{ref} ({folder}): the per-user {m} mean {float(arr.mean()):.6f} is not "
                              f"metrics.json's {stored:.6f}; the per-user file is stale, re-run the evaluation")
    return values


def _evaluate_config(record: dict[str, Any]) -> dict[str, Any]:
    """The resolved ``EvaluateConfig`` an evaluation saved in ``metrics.json`` (empty when an old run has none)."""
    return (record.get("config") or {}).get("EvaluateConfig") or {}


def load_rows(sources: dict[str, Path], refs: list[str], metrics: list[str]) -> dict[str, dict[str, Any]]:
    """``{ref: {"folder", "part", "split_dir", "sample", "values": {metric: {user: value}}}}`` for every ``NAME:row``
    (``split_dir`` and ``sample`` as ``metrics.json`` records them, kept in the output for the reader)."""
    wanted: dict[str, list[str]] = {}
    for ref in refs:
        name, row = parse_row(ref, sources)
        wanted.setdefault(name, []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for name, rows in wanted.items():
        folder = sources[name]
        logger.info("reading %s (%s): rows %s", name, folder, rows)
        record, tables = _read_source(name, folder, rows)
        for row in rows:
            ref = f"{name}:{row}"
            cfg = _evaluate_config(record)
            out[ref] = {"folder": str(folder), "part": cfg.get("part"), "split_dir": cfg.get("split_dir"),
                        "sample": record.get("sample"),
                        "slices": ((record.get("recommenders") or {}).get(row) or {}).get("slices"),
                        "values": _row_values(ref, folder, tables[row], record, metrics)}
    return out


def split_fingerprints(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{ref: sha256}`` of what each row was scored on: its split part's examples (user, history, target, in
    order) and the catalogue's item ids, from the recorded split folder (rows whose folder is gone are left out).
    User ids in the per-user tables are positions, so equal user sets alone cannot show two runs scored the same
    examples; item text may differ (e.g. cleaned by a later loader) without changing what is paired."""
    from recdata import SplitDataset

    by_dir: dict[tuple[str, Any], str] = {}
    out: dict[str, str] = {}
    for ref, row in rows.items():
        split_dir = row["split_dir"]
        if not split_dir or not Path(split_dir).is_dir():
            logger.warning("%s (%s): split folder %s not found; only its users are checked", ref, row["folder"],
                           split_dir)
            continue
        key = (str(Path(split_dir).resolve()), row["part"])
        if key not in by_dir:
            split = SplitDataset.load(split_dir)
            digest = hashlib.sha256()
            for example in split.iter_eval_examples(row["part"] or "test"):
                digest.update(json.dumps([example["user_id"], list(example["history"]), example["target"]]).encode())
            digest.update(json.dumps(split.dataset.item_ids()).encode())
            by_dir[key] = digest.hexdigest()
        out[ref] = by_dir[key]
    return out


def check_same_users(ours: str, rows: dict[str, dict[str, Any]]) -> None:
    """Refuse unless every row scored the same split part and exactly ours's users: a paired comparison over an
    intersection would hide that two runs were evaluated on different samples or splits (with seeds, the rows
    of every seed, labelled ``ref (seed i)``, against ours of the first seed)."""
    base = rows[ours]
    users = set(next(iter(base["values"].values())))
    prints = split_fingerprints(rows)
    for ref, row in rows.items():
        if row["part"] is None:
            logger.warning("%s (%s): metrics.json records no split part; only its users are checked", ref,
                           row["folder"])
        elif row["part"] != base["part"] and base["part"] is not None:
            raise ConfigError(f"{ours} ({base['folder']}) scored the {base['part']} part and {ref} "
                              f"({row['folder']}) the {row['part']} part; evaluate both on the same --part")
        if ref in prints and ours in prints and prints[ref] != prints[ours]:
            raise ConfigError(f"{ours} ({base['split_dir']}) and {ref} ({row['split_dir']}) were evaluated on "
                              f"different splits (example fingerprints {prints[ours][:12]} vs {prints[ref][:12]}); "
                              "compare runs of one split")
        theirs = set(next(iter(row["values"].values())))
        if theirs != users:
            raise ConfigError(f"{ours} ({base['folder']}, {len(users)} users) and {ref} ({row['folder']}, "
                              f"{len(theirs)} users) score different users ({len(users & theirs)} shared): another "
                              "sample or split; re-evaluate with the same split, --part and --max_examples")


def _pair(ours: dict[str, float], theirs: dict[str, float], ours_mean: float, their_mean: float,
          resamples: int, seed: int) -> dict[str, Any]:
    """``paired_bootstrap`` of ours - row with the ``ours/row`` ratio of the means (None when the row's mean is 0)."""
    interval = paired_bootstrap(ours, theirs, resamples=resamples, seed=seed, confidence=CONFIDENCE)
    return {**interval, "ratio": ours_mean / their_mean if their_mean else None}


def _row_info(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in ("folder", "part", "split_dir", "sample")}


def compare(sources: dict[str, list[Path]], ours: str, versus: list[str], metrics: list[str],
            resamples: int = RESAMPLES, seed: int = SEED, bucket: str | None = None) -> dict[str, Any]:
    """Means of every row over the (common) users, and ours - row paired bootstraps with ours/row ratios; with
    several folders per name, per seed (paired by position) and pooled over seeds ("mean over seeds"); with
    ``bucket``, over the users whose target is in that target-popularity bucket only."""
    if ours in versus or len(set(versus)) != len(versus):
        raise ConfigError(f"--versus {versus} repeats a row or holds --ours {ours}; name each row once")
    if len(set(metrics)) != len(metrics):
        raise ConfigError(f"--metrics {metrics} repeats a metric")
    check_bucket(bucket)
    n_seeds = len(next(iter(sources.values())))
    per_seed = [load_rows({name: folders[i] for name, folders in sources.items()}, [ours, *versus], metrics)
                for i in range(n_seeds)]
    if n_seeds == 1:
        check_same_users(ours, per_seed[0])
    else:  # every row of every seed against ours of the first seed: the per-seed pairs and the users across seeds
        check_same_users(f"{ours} (seed 1)", {f"{ref} (seed {i + 1})": rows[ref] for ref in (ours, *versus)
                                              for i, rows in enumerate(per_seed)})
    users = len(next(iter(per_seed[0][ours]["values"].values())))
    n = restrict_to_slice(per_seed, ours, bucket, metrics, MEAN_TOLERANCE) if bucket is not None else None
    seed_means, seed_pairs = [], []
    for i, rows in enumerate(per_seed):
        means = {ref: {m: float(np.mean(list(row["values"][m].values()))) for m in metrics} for ref, row in rows.items()}
        pairs: dict[str, dict[str, Any]] = {}
        for ref in versus:
            logger.info("paired bootstrap %s - %s, seed %d of %d (%d resamples)", ours, ref, i + 1, n_seeds, resamples)
            pairs[ref] = {m: _pair(rows[ours]["values"][m], rows[ref]["values"][m], means[ours][m], means[ref][m],
                                   resamples, seed) for m in metrics}
        seed_means.append(means)
        seed_pairs.append(pairs)
    first = per_seed[0]
    result = {"script": SCRIPT_TAG, "ours": ours, "versus": list(versus), "metrics": list(metrics),
              "users": users, "part": first[ours]["part"], "resamples": resamples, "seed": seed,
              "confidence": CONFIDENCE, **({} if bucket is None else {"slice": bucket, "n": n})}
    if n_seeds == 1:
        return {**result, "sources": {name: str(folders[0]) for name, folders in sources.items()},
                "rows": {ref: _row_info(row) for ref, row in first.items()}, "means": seed_means[0],
                "differences": seed_pairs[0]}
    summary = {ref: {m: {**seed_summary([means[ref][m] for means in seed_means]),
                         "per_seed": [means[ref][m] for means in seed_means]} for m in metrics} for ref in first}
    differences: dict[str, dict[str, Any]] = {}
    for ref in versus:
        logger.info("paired bootstrap %s - %s, mean over %d seeds (%d resamples)", ours, ref, n_seeds, resamples)
        pooled = {}
        for m in metrics:
            interval = seed_pooled_bootstrap([rows[ours]["values"][m] for rows in per_seed],
                                             [rows[ref]["values"][m] for rows in per_seed],
                                             resamples=resamples, seed=seed, confidence=CONFIDENCE)
            their_mean = summary[ref][m]["mean"]
            pooled[m] = {**interval, "ratio": summary[ours][m]["mean"] / their_mean if their_mean else None}
        differences[ref] = {"per_seed": [pairs[ref] for pairs in seed_pairs], "pooled": pooled}
    return {**result, "seeds": n_seeds,
            "sources": {name: [str(folder) for folder in folders] for name, folders in sources.items()},
            "rows": {ref: [_row_info(rows[ref]) for rows in per_seed] for ref in first}, "means": summary,
            "differences": differences}


def _differences_table(ours: str, metrics: list[str], pairs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """A row per ``(label, {metric: pair})``: the difference [95%] and the ours/row ratio per metric."""
    header = [f"{ours} - row"]
    for m in metrics:
        header += [f"{metric_label(m)} diff [low, high]", f"{metric_label(m)} ours/row"]
    body = []
    for label, cells in pairs:
        row = [label]
        for m in metrics:
            ratio = cells[m]["ratio"]
            row += [interval_cell(cells[m]), "-" if ratio is None else f"{ratio:.3f}"]
        body.append(row)
    return markdown_table(header, body)


def render(result: dict[str, Any]) -> str:
    """The means table (a row per recommender) and the ours - row table (difference [95%], ours/row ratio); with
    seeds, mean ± std over seeds and a row per seed and pooled pair."""
    metrics, ours, n_seeds = result["metrics"], result["ours"], result.get("seeds", 1)
    bootstrap = (f"({result['confidence']:.0%} percentile interval, {result['resamples']:,} resamples, seed "
                 f"{result['seed']})")
    users = f"{result['users']:,} {result['part'] or 'unknown-part'} users"
    title = "" if result.get("slice") is None else f", {result['slice']} slice (n = {result['n']:,})"
    users = f"{result['n']:,} of the {users} with a {result['slice']} target (training popularity)" if title else users
    if n_seeds == 1:
        sources = ", ".join(f"{name} = `{folder}`" for name, folder in result["sources"].items())
        means = markdown_table(["recommender", *(metric_label(m) for m in metrics)],
                               [[ref, *(f"{result['means'][ref][m]:.4f}" for m in metrics)]
                                for ref in (ours, *result["versus"])])
        pairs = list(result["differences"].items())
        lines = [f"# {ours} against {len(result['versus'])} rows{title}", "",
                 f"{users}, the same in every row ({sources}). Paired bootstrap of ours - row over these users "
                 f"{bootstrap}; ours/row is the ratio of the means."]
    else:
        sources = "; ".join(f"{name} = " + ", ".join(f"`{folder}`" for folder in folders)
                            for name, folders in result["sources"].items())
        means = seeds_table({ref: result["means"][ref] for ref in (ours, *result["versus"])}, metrics)
        pairs = [(f"{ref}, {label}", cells) for ref, diff in result["differences"].items()
                 for label, cells in [*((f"seed {i + 1}", p) for i, p in enumerate(diff["per_seed"])),
                                      ("mean over seeds", diff["pooled"])]]
        lines = [f"# {ours} against {len(result['versus'])} rows, {n_seeds} seeds{title}", "",
                 f"{users}, the same in every row and seed ({sources}; seed i of each name pairs with seed i of "
                 f"the others). Means are mean ± std over the seeds. Paired bootstrap of ours - row over these "
                 f"users {bootstrap}, per seed and on the per-user means over seeds (mean over seeds); ours/row is "
                 "the ratio of the means (over seeds for the pooled pair)."]
    lines += ["", *means, "", *_differences_table(ours, metrics, pairs)]
    return "\n".join(lines) + "\n"


def check_out(path: Path) -> None:
    """Refuse to replace a file that is not a previous output of this script (it could be anyone's results)."""
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        previous = None
    if not isinstance(previous, dict) or previous.get("script") != SCRIPT_TAG:
        raise UserError(f"--out {path} exists and is not an output of compare_runs.py; choose another path")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", metavar="NAME=PATH[,PATH...]",
                        help="two or more evaluate output folders (or run folders: their evaluate/), each named; "
                             "a name may list one folder per seed, comma-separated, paired by position")
    parser.add_argument("--ours", required=True, metavar="NAME:row", help="the row the others are compared to")
    parser.add_argument("--versus", required=True, nargs="+", metavar="NAME:row", help="rows to compare ours with")
    parser.add_argument("--metrics", nargs="+", default=list(METRICS),
                        help=f"per-user columns to compare (default {' '.join(METRICS)})")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"bootstrap seed (default {SEED})")
    parser.add_argument("--slice", metavar="BUCKET", help="only users whose target is in this popularity bucket")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default: print only)")
    args = parser.parse_args(argv)
    if len(args.sources) < 2:
        parser.error("give two or more NAME=PATH sources (one evaluation's rows: see the benchmark scripts)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.out is not None:
            check_out(args.out)
        result = compare(parse_sources(args.sources), args.ours, args.versus, args.metrics, args.resamples, args.seed,
                         args.slice)
        if args.out is not None:
            atomic_write_json(args.out, result)
            logger.info("wrote %s", args.out)
    except (UserError, OSError) as exc:
        line = cli_error_line(exc)
        if line is None:
            raise
        print(f"compare_runs: error: {line[0]}", file=sys.stderr)
        return line[1]
    print(render(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
