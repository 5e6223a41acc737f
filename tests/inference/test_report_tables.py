"""The seeds / bootstrap Markdown writer of the benchmark scripts: exact output."""

from __future__ import annotations

import pytest

from inference.report_tables import (
    bootstrap_table,
    interval_cell,
    markdown_table,
    metric_label,
    seeds_table,
    summary_cell,
)
from inference.significance import seed_summary

CI = {"mean_diff": 0.0131, "low": 0.00976, "high": 0.01624}


def test_cells_and_labels():
    assert summary_cell(seed_summary([0.1, 0.2, 0.3])) == "0.2000 ± 0.1000"
    assert summary_cell(None) == "-" and interval_cell(None) == "-"
    assert interval_cell(CI) == "+0.0131 [+0.0098, +0.0162]"
    assert interval_cell({"mean_diff": -0.0055, "low": -0.0072, "high": -0.0037}) == "-0.0055 [-0.0072, -0.0037]"
    assert [metric_label(m) for m in ("recall@10", "ndcg@20", "tail:ndcg@10")] == ["Recall@10", "NDCG@20",
                                                                                  "tail NDCG@10"]


def test_seeds_table_exact():
    summaries = {"alignrec": {"recall@10": seed_summary([0.1, 0.12]), "tail:ndcg@10": seed_summary([0.03])},
                 "sasrec": {"recall@10": seed_summary([0.09, 0.09])}}
    assert seeds_table(summaries, ["recall@10", "tail:ndcg@10"]) == [
        "| recommender | Recall@10 | tail NDCG@10 |",
        "|---|---|---|",
        "| alignrec | 0.1100 ± 0.0141 | 0.0300 ± 0.0000 |",
        "| sasrec | 0.0900 ± 0.0000 | - |",
    ]
    lines = seeds_table(summaries, ["recall@10"], first="row", extra={"alignrec": [interval_cell(CI), "12/13"]},
                        extra_header=["vs SASRec", "seconds"])
    assert lines == [
        "| row | Recall@10 | vs SASRec | seconds |",
        "|---|---|---|---|",
        "| alignrec | 0.1100 ± 0.0141 | +0.0131 [+0.0098, +0.0162] | 12/13 |",
        "| sasrec | 0.0900 ± 0.0000 | - | - |",
    ]


def test_bootstrap_table_exact():
    pairs = {"seed 42": {"recall@10": CI, "ndcg@10": {"mean_diff": 0.0066, "low": 0.0041, "high": 0.0093}},
             "mean over seeds": {"recall@10": CI}}
    assert bootstrap_table(pairs, ["recall@10", "ndcg@10"]) == [
        "| pair | Recall@10 diff [low, high] | NDCG@10 diff [low, high] |",
        "|---|---|---|",
        "| seed 42 | +0.0131 [+0.0098, +0.0162] | +0.0066 [+0.0041, +0.0093] |",
        "| mean over seeds | +0.0131 [+0.0098, +0.0162] | - |",
    ]


def test_markdown_table_rejects_a_short_row():
    with pytest.raises(ValueError, match="has 1 cells, the header 2"):
        markdown_table(["a", "b"], [["x"]])
