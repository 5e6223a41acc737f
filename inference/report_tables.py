"""Markdown for seed sweeps and paired bootstraps: the results tables of the benchmark scripts, written once.

A seeds table has a row per recommender and a ``mean ± std`` cell per metric (``significance.seed_summary``); a
bootstrap table has a row per comparison (a seed pair, the seed-pooled row, a chosen point against its baseline)
and a ``+diff [low, high]`` cell per metric (``significance.paired_bootstrap``). Any table is
``markdown_table(header, rows)``; the cell formats are ``summary_cell``, ``interval_cell`` and ``estimate_cell``
(one row's mean with its ``significance.bootstrap_interval``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["bootstrap_table", "estimate_cell", "interval_cell", "markdown_table", "metric_label", "seeds_table",
           "summary_cell"]

MISSING = "-"


def metric_label(metric: str) -> str:
    """``recall@10`` -> ``Recall@10``, ``tail:ndcg@10`` -> ``tail NDCG@10`` (a column heading)."""
    label = metric.replace("recall@", "Recall@").replace("ndcg@", "NDCG@")
    return label.replace(":", " ")


def summary_cell(summary: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``0.0750 ± 0.0016`` from a ``seed_summary`` dict (``-`` when missing)."""
    if not summary or summary.get("mean") is None:
        return MISSING
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def interval_cell(interval: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``+0.0131 [+0.0098, +0.0162]`` from a ``paired_bootstrap`` dict (``-`` when missing)."""
    if not interval:
        return MISSING
    return f"{interval['mean_diff']:+.{digits}f} [{interval['low']:+.{digits}f}, {interval['high']:+.{digits}f}]"


def estimate_cell(interval: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``0.0750 [0.0712, 0.0790]`` from a ``bootstrap_interval`` dict (``-`` when missing or empty)."""
    if not interval or interval.get("mean") is None:
        return MISSING
    return f"{interval['mean']:.{digits}f} [{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Lines of a Markdown table; every row has the header's number of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table row {list(row)} has {len(row)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def seeds_table(summaries: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], first: str = "recommender",
                extra: Mapping[str, Sequence[str]] | None = None, extra_header: Sequence[str] = ()) -> list[str]:
    """A row per name of ``summaries`` (``{name: {metric: seed_summary}}``), a ``mean ± std`` cell per metric.

    ``extra`` (``{name: cells}``) appends cells under ``extra_header`` (e.g. a pooled interval, seconds).
    """
    header = [first, *(metric_label(m) for m in metrics), *extra_header]
    rows = [[name, *(summary_cell(vals.get(m)) for m in metrics), *((extra or {}).get(name) or
                                                                    [MISSING] * len(extra_header))]
            for name, vals in summaries.items()]
    return markdown_table(header, rows)


def bootstrap_table(intervals: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], first: str = "pair") -> list[str]:
    """A row per comparison of ``intervals`` (``{label: {metric: paired_bootstrap}}``), a ``diff [low, high]`` cell
    per metric."""
    header = [first, *(f"{metric_label(m)} diff [low, high]" for m in metrics)]
    return markdown_table(header, [[label, *(interval_cell(vals.get(m)) for m in metrics)]
                                   for label, vals in intervals.items()])
