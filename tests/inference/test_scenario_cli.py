"""`alignrec evaluate` on a split with scenarios: the target-scenario slice and the within-scenario ranking."""

from __future__ import annotations

import json

import pytest

from recdata import RecDataset, leave_one_out_split
from tests.conftest import TINY_ITEMS, TINY_SEQUENCES
from tests.inference.test_cli import tiny_run  # noqa: F401 (fixture)

SCEN = {"i1": "lab", "i2": "safety", "i3": "safety", "i4": "lab", "i5": "lab", "i6": "safety", "i7": "safety",
        "i8": "lab"}


@pytest.fixture
def tiny_split():
    seqs = [{**s, "scenarios": [SCEN[i] for i in s["item_ids"]]} for s in TINY_SEQUENCES]
    return leave_one_out_split(RecDataset.from_records(TINY_ITEMS, seqs, name="tiny").validate(), max_history=20)


def test_evaluate_reports_both_rankings_per_scenario(tiny_split, tiny_run, tmp_path):  # noqa: F811
    from alignrec.cli import main

    tiny_split.save(tmp_path / "split")
    out = tmp_path / "eval"
    rc = main(["evaluate", "--model_dir", str(tmp_path / "run"), "--split_dir", str(tmp_path / "split"),
               "--out_dir", str(out), "--ks", "1", "3", "--num_beams", "4", "--exclude_history", "true"])
    assert rc == 0
    data = json.loads((out / "metrics.json").read_text())["recommenders"]
    targets = tiny_split.eval_examples("test")["target_scenario"]
    for name in ("alignrec", "popularity"):
        whole = data[name]["slices"]["target_scenario"]
        assert {s: v["n"] for s, v in whole.items()} == {s: targets.count(s) for s in set(targets)}
        within = data[name]["within_scenario"]
        assert within["ranking"] == "within_scenario" and within["invalid_rate"] == 0.0  # only scenario items
        assert {s: v["n"] for s, v in within["by_scenario"].items()} == {s: targets.count(s) for s in set(targets)}
    md = (out / "metrics.md").read_text()
    assert "| alignrec | within_scenario | lab |" in md and "| popularity | whole_catalogue | safety |" in md
