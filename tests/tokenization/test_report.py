"""Report statistics: exact usage / perplexity on a hand-made table, and the JSON + PNG outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tokenization.report import level_stats, save_report


def test_level_stats_exact():
    codes = np.array([[0, 1], [0, 2], [1, 3], [1, 0]])
    lv0, lv1 = level_stats(codes, [4, 4])
    assert lv0["codes_used"] == 2 and lv0["usage_pct"] == 50.0 and lv0["max_items_per_code"] == 2
    assert lv0["perplexity"] == pytest.approx(2.0)  # two equally used codes
    assert lv1["usage_pct"] == 100.0 and lv1["perplexity"] == pytest.approx(4.0)
    skewed = level_stats(np.array([[0], [0], [0], [1]]), [2])[0]
    p = np.array([0.75, 0.25])
    assert skewed["perplexity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_save_report_writes_json_and_png(tmp_path):
    codes = np.array([[0, 1], [1, 0], [2, 1]])
    report = {"num_items": 3, "collisions_after": 0, "levels": level_stats(codes, [4, 2])}
    save_report(report, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["levels"][0]["usage_pct"] == 75.0
    assert (tmp_path / "code_usage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files
