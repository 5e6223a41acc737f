"""Full-ranking evaluation of any ``recommend_fn``: Recall/NDCG@K, validity, coverage, cold-user and long-tail slices.

Slices (fixed so runs compare across datasets):
- history length (items the user had before the target, after ``max_history`` truncation): ``1-3`` (cold),
  ``4-9``, ``>=10``;
- target popularity by training interaction count: ``head`` = the most-bought items that together make the
  first 50% of training interactions, ``torso`` = the next 30% (to 80%), ``tail`` = the rest bought at least
  once, ``unseen`` = never bought in training. Thresholds are on counts, so tied items share a bucket.
- cold items (when the caller names them, ``cold_items``: a split under the cold-item protocol, see
  ``recdata.cold_items``): ``cold`` = targets with no training interaction, ``warm`` = the rest. With the
  catalogue's training counts as ``train_popularity`` it is the ``unseen`` popularity bucket under its own name,
  so a report on a cold-protocol split says which row it is.
- target scenario (when the examples carry ``target_scenario``): ranking within the whole catalogue, by the
  scenario of the target. ``evaluate_within_scenario`` adds the other ranking: within the target's scenario
  catalogue (the recommender is asked for that scenario's items only), labelled ``within_scenario``.

The evaluation protocol lives in the data layer (with the split that defines the targets and ``recdata.metrics``)
so every layer that reports a row (the knowledge and multi-scenario stages, inference, the pipeline) reads one
definition. Moved from ``inference.evaluate`` (kept one release as a deprecated alias; ``inference`` still
exports the names).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from tqdm.auto import tqdm

from recdata.io import atomic_write_json, atomic_write_text
from recdata.metrics import ndcg_from_rank, recall_from_rank  # the one definition (selection reads it too)
from recdata.per_user import LEGACY_PER_USER_FILE, PER_USER_FILE, load_per_user, per_user_path, write_per_user

logger = logging.getLogger(__name__)

__all__ = ["COLD_BUCKETS", "HISTORY_BUCKETS", "LEGACY_PER_USER_FILE", "PER_USER_FILE", "POPULARITY_SHARES",
           "RecommendFn", "choose_on_valid", "evaluate_recommender", "sample_examples", "evaluation_sample",
           "evaluate_within_scenario", "history_bucket", "load_per_user", "per_user_path", "popularity_buckets",
           "render_markdown", "render_scenario_table", "scenario_dataset_sentence", "write_report"]

RecommendFn = Callable[[Sequence[str], Sequence[Sequence[str]]], list[list[tuple[str, float]]]]
HISTORY_BUCKETS: tuple[tuple[str, int, int | None], ...] = (("1-3", 1, 3), ("4-9", 4, 9), (">=10", 10, None))
POPULARITY_SHARES = (("head", 0.5), ("torso", 0.8))  # cumulative share of training interactions
COLD_BUCKETS = ("cold", "warm")  # the cold_items slice: targets without / with training interactions


def choose_on_valid(make_fn: Callable[[float], RecommendFn], valid_examples: datasets.Dataset,
                    weights: Sequence[float], catalogue: Sequence[str], metric: str = "ndcg@10",
                    batch_size: int = 64) -> tuple[float, dict[float, float]]:
    """``(best weight, {weight: valid metric})``: the weight of a grid whose ``make_fn(weight)`` recommender scores
    best on ``valid_examples`` (ties: the smaller weight); ``metric``: ``recall@K`` or ``ndcg@K``. How a decoding
    knob (a retriever's mix weight, a prior's weight) is set without reading test."""
    if not weights:
        raise ValueError("weights is empty; give the grid to choose from")
    k = int(metric.split("@")[1])
    table = {}
    for w in weights:
        rep = evaluate_recommender(make_fn(float(w)), valid_examples, [k], catalogue, batch_size=batch_size,
                                   show_progress=False)
        table[float(w)] = float(rep["overall"][metric])
        logger.info("weight %g: valid %s %.4f", w, metric, table[float(w)])
    best = max(sorted(table), key=lambda w: table[w])  # max keeps the first (smallest) of equal scores
    return best, table


def sample_examples(examples, n: int, seed: int = 0):
    """A seeded sample of ``n`` evaluation rows in their original order (all rows when ``n`` is 0 or >= the
    number of rows): the same users for every row of a comparison, never just the first ``n``."""
    if not n or n >= len(examples):
        return examples
    return examples.select(sorted(np.random.default_rng(seed).choice(len(examples), n, replace=False).tolist()))


def evaluation_sample(examples, max_examples: int | None, seed: int = 0):
    """``(examples, record)``: at most ``max_examples`` rows as a seeded sample (``sample_examples``; None = all)
    and, for the report, what was scored: ``{"examples": n, "of": total, "sampled": bool, "seed": seed}``."""
    total = len(examples)
    if max_examples is None or max_examples >= total:
        return examples, {"examples": total, "of": total, "sampled": False, "seed": None}
    return sample_examples(examples, max_examples, seed), {"examples": max_examples, "of": total, "sampled": True,
                                                           "seed": seed}


def history_bucket(length: int) -> str:
    for name, low, high in HISTORY_BUCKETS:
        if length >= low and (high is None or length <= high):
            return name
    return "0"


def popularity_buckets(train_popularity: Mapping[str, int], catalogue: Sequence[str]) -> dict[str, str]:
    """``item_id -> head | torso | tail | unseen`` by training interaction count (see module docstring)."""
    counts = np.array([int(train_popularity.get(item, 0)) for item in catalogue], dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return dict.fromkeys(catalogue, "unseen")
    desc = np.sort(counts)[::-1]
    cum = np.cumsum(desc) / total
    thresholds = [int(desc[min(int(np.searchsorted(cum, share)), len(desc) - 1)]) for _, share in POPULARITY_SHARES]
    out = {}
    for item, c in zip(catalogue, counts.tolist(), strict=True):
        if c == 0:
            out[item] = "unseen"
        elif c >= thresholds[0]:
            out[item] = "head"
        elif c >= thresholds[1]:
            out[item] = "torso"
        else:
            out[item] = "tail"
    return out


def evaluate_recommender(
    recommend_fn: RecommendFn,
    examples: datasets.Dataset,
    ks: Sequence[int] = (1, 5, 10, 20),
    catalogue: Sequence[str] = (),
    train_popularity: Mapping[str, int] | None = None,
    *,
    batch_size: int = 64,
    show_progress: bool = True,
    cold_items: Collection[str] | None = None,
) -> dict[str, Any]:
    """Score ``recommend_fn(user_ids, histories)`` on ``examples`` (user_id, history, target).

    Invalid outputs (items outside ``catalogue``) count as misses and are reported as ``invalid_rate``;
    ``duplicate_rate`` counts repeated items within a list; ``short_list_rate`` lists shorter than max(ks).
    ``cold_items`` (the cold-item protocol's items without training, ``recdata.cold_items.items_without_training``)
    adds the ``cold_items`` slice family (``cold`` / ``warm`` targets); None leaves it out.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if not catalogue:
        raise ValueError("catalogue is empty; pass the item ids a recommender may return")
    missing = [c for c in ("user_id", "history", "target") if c not in examples.column_names]
    if missing:
        raise ValueError(f"examples lack column(s) {missing}; build them with SplitDataset.eval_examples(part)")
    if len(examples) == 0:
        raise ValueError("no evaluation examples; check the split part (valid/test) and the dataset")
    catalogue_set = set(catalogue)
    pop_bucket = popularity_buckets(train_popularity or {}, catalogue)
    max_k, n = ks[-1], len(examples)
    # per example: the target's first position in the list (max_k = not in it); every metric is a function of it
    ranks = np.empty(n, dtype=np.int64)
    history_len = np.empty(n, dtype=np.int64)
    pop_slice: list[str] = []
    cold_slice: list[str] = []
    cold_set = set(cold_items) if cold_items is not None else None
    # whole columns as ``column[:]``: iterating a datasets Column formats row by row (~0.2 ms per user)
    scen_slice: list[str] = examples["target_scenario"][:] if "target_scenario" in examples.column_names else []
    recommended_at: dict[int, set] = {k: set() for k in ks}  # what each cut-off showed (invalid items dropped below)
    invalid = duplicates = total = short = 0
    bar = tqdm(total=n, desc="evaluate", unit="user", disable=not show_progress)
    for start in range(0, n, batch_size):
        rows = examples[start:start + batch_size]
        recs = recommend_fn(rows["user_id"], rows["history"])
        if len(recs) != len(rows["user_id"]):
            raise ValueError(f"recommend_fn returned {len(recs)} lists for {len(rows['user_id'])} users")
        for i, (history, target, rec) in enumerate(zip(rows["history"], rows["target"], recs, strict=True)):
            ranked = [item for item, _ in rec[:max_k]]
            seen = set(ranked)
            total += len(ranked)
            invalid += len(ranked) - sum(map(catalogue_set.__contains__, ranked))
            duplicates += len(ranked) - len(seen)
            short += len(ranked) < max_k
            ranks[start + i] = ranked.index(target) if target in seen else max_k
            for k in ks:
                recommended_at[k].update(ranked[:k])
            history_len[start + i] = len(history)
            pop_slice.append(pop_bucket.get(target, "unseen"))
            if cold_set is not None:
                cold_slice.append(COLD_BUCKETS[0] if target in cold_set else COLD_BUCKETS[1])
        bar.update(len(recs))
    bar.close()
    arrays = _metrics_from_ranks(ranks, ks)
    hist_slice = [history_bucket(length) for length in history_len.tolist()]
    report: dict[str, Any] = {
        "n_examples": n,
        "ks": ks,
        "overall": {name: float(v.mean()) for name, v in arrays.items()},
        "invalid_rate": invalid / total if total else 0.0,
        "invalid_outputs": invalid,
        "total_outputs": total,
        "duplicate_rate": duplicates / total if total else 0.0,
        "short_list_rate": short / n,
        "coverage": {f"@{k}": len(recommended_at[k] & catalogue_set) / len(catalogue_set) for k in ks},
        "slices": {
            "history_length": _slice(arrays, hist_slice, [name for name, _, _ in HISTORY_BUCKETS]),
            "target_popularity": _slice(arrays, pop_slice, ["head", "torso", "tail", "unseen"]),
        },
        # per example (one per user in leave-one-out): paired bootstrap over the same users, seeds tables
        "per_user": {"user_id": [str(u) for u in examples["user_id"][:]], **{name: v.tolist() for name, v in arrays.items()}},
    }
    if cold_set is not None:
        report["slices"]["cold_items"] = _slice(arrays, cold_slice, list(COLD_BUCKETS))
    if scen_slice:  # ranking within the whole catalogue, by target scenario
        report["slices"]["target_scenario"] = _slice(arrays, scen_slice, sorted(set(scen_slice)))
    if invalid:
        logger.warning("%d of %d recommended items are not in the catalogue", invalid, total)
    return report


def _metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """``recall@k`` / ``ndcg@k`` per example from 0-based target ranks (``max(ks)`` = not in the list).

    Vectorised over examples through per-k tables built with ``recdata.metrics`` itself, so every value (and
    mean) is exactly what calling ``recall_at_k`` / ``ndcg_at_k`` per example gives.
    """
    max_k = max(ks)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"recall@{k}"] = np.array([recall_from_rank(r, k) for r in range(max_k)] + [0.0])[ranks]
        out[f"ndcg@{k}"] = np.array([ndcg_from_rank(r, k) for r in range(max_k)] + [0.0])[ranks]
    return {name: out[name] for k in ks for name in (f"recall@{k}", f"ndcg@{k}")}


def _slice(arrays: dict[str, np.ndarray], labels: list[str], names: list[str]) -> dict[str, dict[str, Any]]:
    labels_arr = np.asarray(labels)
    out = {}
    for name in names + sorted(set(labels) - set(names)):
        sel = labels_arr == name
        count = int(sel.sum())
        out[name] = {"n": count, **{m: (float(v[sel].mean()) if count else None) for m, v in arrays.items()}}
    return out


def render_markdown(reports: Mapping[str, Mapping[str, Any]], title: str = "Evaluation") -> str:
    """One overall table (a row per recommender) and one table per slice family."""
    first = next(iter(reports.values()))
    ks = first["ks"]
    metric_cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    head = ["recommender", "n", *[c.replace("recall", "Recall").replace("ndcg", "NDCG") for c in metric_cols],
            "invalid rate", f"coverage@{ks[-1]}"]
    lines = [f"# {title}", "", _row(head), _row(["---"] * len(head))]
    for name, rep in reports.items():
        if "overall" not in rep:  # a within-scenario-only row (e.g. a per-scenario router): scenario table only
            continue
        lines.append(_row([name, str(rep["n_examples"]), *[_fmt(rep["overall"][c]) for c in metric_cols],
                           _fmt(rep["invalid_rate"]), _fmt(rep["coverage"][f"@{ks[-1]}"])]))
    for family, caption in (("history_length", "History length (items before the target)"),
                            ("target_popularity", "Target popularity (training interactions)"),
                            ("cold_items", "Cold items (cold-item protocol: cold = targets with no training "
                                           "interaction, the unseen popularity bucket)"),
                            ("target_scenario", "Target scenario (ranking within the whole catalogue)")):
        if not any(family in rep.get("slices", {}) for rep in reports.values()):
            continue
        lines += ["", f"## {caption}", "", _row(["recommender", "bucket", "n", *head[2:2 + len(metric_cols)]]),
                  _row(["---"] * (3 + len(metric_cols)))]
        for name, rep in reports.items():
            for bucket, vals in rep.get("slices", {}).get(family, {}).items():
                lines.append(_row([name, bucket, str(vals["n"]), *[_fmt(vals[c]) for c in metric_cols]]))
    if any("within_scenario" in rep for rep in reports.values()):
        lines += ["", render_scenario_table(reports, ks).rstrip("\n")]
    return "\n".join(lines) + "\n"


# ---- multi-scenario: ranking within the target's scenario catalogue ------------------------------------------
WITHIN_SCENARIO = "within_scenario"
WHOLE_CATALOGUE = "whole_catalogue"


def evaluate_within_scenario(
    recommend_fn: Callable[..., list[list[tuple[str, float]]]],
    examples: datasets.Dataset,
    scenario_catalogues: Mapping[str, Sequence[str]],
    ks: Sequence[int] = (1, 5, 10, 20),
    train_popularity: Mapping[str, int] | None = None,
    *,
    batch_size: int = 64,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Rank each target within its scenario's catalogue: ``recommend_fn(user_ids, histories, scenarios=[s, ...])``
    must return items of scenario ``s`` only (anything else counts as invalid and a miss).

    Reuses ``evaluate_recommender`` per scenario (catalogue = that scenario's items); ``overall`` is the mean
    over all examples (each example counts once, as in the whole-catalogue report); ``per_user`` is in the
    order of ``examples``, like ``evaluate_recommender``'s (``write_report`` saves it as ``<name>/within_scenario``).
    """
    if "target_scenario" not in examples.column_names:
        raise ValueError("examples lack 'target_scenario'; build them from a split with scenarios "
                         "(data prepare with scenario_column or scenario_item_field)")
    labels = examples["target_scenario"][:]
    unknown = sorted(set(labels) - set(scenario_catalogues))
    if unknown:
        raise ValueError(f"target scenario(s) {unknown} have no catalogue; scenario_catalogues has "
                         f"{sorted(scenario_catalogues)}")
    by_scenario: dict[str, dict[str, Any]] = {}
    rows_of: dict[str, list[int]] = {}
    for name in sorted(set(labels)):
        rows = rows_of[name] = [i for i, label in enumerate(labels) if label == name]

        def scoped(user_ids, histories, _name=name):
            return recommend_fn(user_ids, histories, scenarios=[_name] * len(user_ids))

        by_scenario[name] = evaluate_recommender(scoped, examples.select(rows), ks, scenario_catalogues[name],
                                                 train_popularity, batch_size=batch_size, show_progress=show_progress)
    n = len(labels)
    first = next(iter(by_scenario.values()))
    overall = {m: sum(r["overall"][m] * r["n_examples"] for r in by_scenario.values()) / n for m in first["overall"]}
    invalid = sum(r["invalid_outputs"] for r in by_scenario.values())
    total = sum(r["total_outputs"] for r in by_scenario.values())
    per_user: dict[str, list] = {column: [None] * n for column in first["per_user"]}
    for name, r in by_scenario.items():
        for column, values in r["per_user"].items():
            for row, value in zip(rows_of[name], values, strict=True):
                per_user[column][row] = value
    return {
        "ranking": WITHIN_SCENARIO,
        "n_examples": n,
        "ks": first["ks"],
        "overall": overall,
        "invalid_rate": invalid / total if total else 0.0,
        "by_scenario": {name: {"n": r["n_examples"], **r["overall"], "invalid_rate": r["invalid_rate"],
                               "catalogue_size": len(scenario_catalogues[name])} for name, r in by_scenario.items()},
        "per_user": per_user,
    }


def render_scenario_table(reports: Mapping[str, Mapping[str, Any]], ks: Sequence[int] | None = None) -> str:
    """Per-scenario table: one row per (recommender, ranking, scenario), ``all`` first.

    A report may hold the whole-catalogue ranking (``overall`` + ``slices.target_scenario``), the within-scenario
    ranking (``within_scenario``, from ``evaluate_within_scenario``) or both; a missing one is left out.
    """
    ks = list(ks or next(iter(reports.values())).get("ks") or next(iter(reports.values()))[WITHIN_SCENARIO]["ks"])
    cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    head = ["recommender", "ranking", "scenario", "n",
            *[c.replace("recall", "Recall").replace("ndcg", "NDCG") for c in cols]]
    lines = ["## Per scenario (whole catalogue vs within the target's scenario catalogue)", "",
             _row(head), _row(["---"] * len(head))]
    for name, rep in reports.items():
        if rep.get("overall") is not None and "target_scenario" in rep.get("slices", {}):
            lines.append(_row([name, WHOLE_CATALOGUE, "all", str(rep["n_examples"]),
                               *[_fmt(rep["overall"][c]) for c in cols]]))
            for scen, vals in rep["slices"]["target_scenario"].items():
                lines.append(_row([name, WHOLE_CATALOGUE, scen, str(vals["n"]), *[_fmt(vals[c]) for c in cols]]))
        within = rep.get(WITHIN_SCENARIO)
        if within:
            lines.append(_row([name, WITHIN_SCENARIO, "all", str(within["n_examples"]),
                               *[_fmt(within["overall"][c]) for c in cols]]))
            for scen, vals in within["by_scenario"].items():
                lines.append(_row([name, WITHIN_SCENARIO, scen, str(vals["n"]), *[_fmt(vals[c]) for c in cols]]))
    return "\n".join(lines) + "\n"


def scenario_dataset_sentence(stats: Mapping[str, Any], kcore: int, test_targets: int) -> str:
    """What a per-scenario table was measured on, in one line (bench_scenarios' header, the results page's)."""
    scenarios = ", ".join(f"{s}: {v['items']:,} items / {v['interactions']:,} interactions"
                          for s, v in stats.get("scenarios", {}).items())
    return (f"{stats['name']} (kcore {kcore}; {stats['users']:,} users, {stats['items']:,} items, "
            f"{stats['interactions']:,} interactions; {scenarios}; {test_targets:,} test targets)")


def write_report(reports: Mapping[str, Mapping[str, Any]], out_dir: str | Path, extra: Mapping[str, Any] | None = None,
                 title: str = "Evaluation") -> tuple[Path, Path]:
    """Atomically write ``metrics.json`` (reports + ``extra``, e.g. the resolved config), ``metrics.md`` and
    ``per_user.parquet`` (each recommender's per-user metrics, for paired bootstraps: ``recdata.per_user``)."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "metrics.json", out_dir / "metrics.md"
    atomic_write_json(json_path, {"recommenders": {name: _without_per_user(rep) for name, rep in reports.items()},
                                  **dict(extra or {})})
    per_user = {name: rep["per_user"] for name, rep in reports.items() if "per_user" in rep}
    per_user.update({f"{name}/{WITHIN_SCENARIO}": rep[WITHIN_SCENARIO]["per_user"] for name, rep in reports.items()
                     if "per_user" in rep.get(WITHIN_SCENARIO, {})})
    if per_user:
        write_per_user(out_dir / PER_USER_FILE, per_user)
    atomic_write_text(md_path, render_markdown(reports, title))
    return json_path, md_path


def _without_per_user(report: Mapping[str, Any]) -> dict[str, Any]:
    """A report for ``metrics.json``: per-user tables go to ``per_user.parquet`` (also a within-scenario one)."""
    out = {k: v for k, v in report.items() if k != "per_user"}
    if isinstance(out.get(WITHIN_SCENARIO), Mapping):
        out[WITHIN_SCENARIO] = {k: v for k, v in out[WITHIN_SCENARIO].items() if k != "per_user"}
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
