"""scripts/bench_scale.py: growth fits, failed / over-limit stages recorded (not raised), resume, and the
``--tiny`` run end to end through the real pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recdata.errors import ConfigError
from tests.scripts import SCRIPTS, loaded_script


@pytest.fixture(scope="module")
def bench():
    yield from loaded_script("bench_scale")


def test_fit_exponent_is_the_log_log_slope(bench):
    xs = [1e4, 1e5, 1e6]
    assert bench.fit_exponent(xs, [3 * x**1.5 for x in xs]) == pytest.approx(1.5)
    assert bench.fit_exponent([10, 10], [1, 2]) is None  # one size: no slope
    cells = {f"{n}x{u}/data": {"stage": "data", "items": n, "users": u, "status": "ok", "seconds": n * u / 100,
                               "cpu_seconds": n / 1e3, "peak_rss_mb": 100.0} for n, u in [(10, 5), (100, 5), (100, 50)]}
    cells["1000x5/data"] = {"stage": "data", "items": 1000, "users": 5, "status": "failed", "reason": "x"}
    fits = {(f["against"], f.get("users", f.get("items"))): f for f in bench.growth(cells, ["data"])}
    assert set(fits) == {("items", 5), ("users", 100)}  # the failed cell is left out of every fit
    assert fits[("items", 5)]["time_exponent"] == pytest.approx(1.0)
    assert fits[("users", 100)]["time_exponent"] == pytest.approx(1.0)
    assert fits[("users", 100)]["cpu_exponent"] == pytest.approx(0.0)
    assert fits[("items", 5)]["rss_exponent"] == pytest.approx(0.0)


def test_a_failing_or_slow_stage_is_recorded_not_raised(bench, tmp_path, monkeypatch):
    cfg = bench.BenchScaleConfig(out_dir=str(tmp_path), stage_limit_s=1.0)

    def boom(stage, cfg, size, work):
        raise ValueError("boom in the stage\nsecond line")

    def slow(stage, cfg, size, work):
        time.sleep(60)

    monkeypatch.setattr(bench, "_child", boom)
    failed = bench.run_cell("data", cfg, (10, 5), tmp_path)
    assert (failed["status"], failed["reason"]) == ("failed", "ValueError: boom in the stage")
    assert "Traceback" in Path(failed["log"]).read_text()
    monkeypatch.setattr(bench, "_child", slow)
    started = time.perf_counter()
    limited = bench.run_cell("train", cfg, (10, 5), tmp_path)
    assert limited["status"] == "limit" and time.perf_counter() - started < 20
    assert bench.cell_text(limited) == "> 1 s" and bench.cell_text(failed).startswith("failed: ValueError: boom")
    monkeypatch.setattr(bench, "_child", lambda stage, cfg, size, work: {"stage_seconds": 0.5})
    ok = bench.run_cell("tasks", cfg, (10, 5), tmp_path)
    assert ok["status"] == "ok" and ok["stage_seconds"] == 0.5 and ok["peak_rss_mb"] > 0 and ok["cpu_seconds"] >= 0


def test_downstream_is_skipped_and_a_rerun_keeps_finished_cells(bench, tmp_path, monkeypatch):
    calls = []

    def fake_cell(stage, cfg, size, work):
        calls.append((size[0], stage))
        status = "failed" if (size[0], stage) == (400, "tokenizer") else "ok"
        return {"items": size[0], "users": size[1], "stage": stage, "status": status, "reason": "Boom: x",
                "seconds": size[0] / 100, "cpu_seconds": size[0] / 200, "peak_rss_mb": 50.0 + size[0]}

    monkeypatch.setattr(bench, "run_cell", fake_cell)
    monkeypatch.setattr(bench, "preload", lambda: None)
    monkeypatch.setattr(bench, "plot", lambda results, stages, path: False)
    argv = ["--out_dir", str(tmp_path), "--items", "100", "400", "--users", "7", "--extra_sizes", "100x70",
            "--stages", "data", "tokenizer", "train"]
    assert bench.main(argv) == 0
    assert calls == [(100, "data"), (100, "tokenizer"), (100, "train"), (400, "data"), (400, "tokenizer"),
                     (100, "data"), (100, "tokenizer"), (100, "train")]
    results = json.loads((tmp_path / "scale.json").read_text())
    assert results["cells"]["400x7/train"]["status"] == "skipped"
    table = (tmp_path / "scale.md").read_text()
    assert "| tokenizer | 1.0 s (0.5 s CPU), 150 MB | failed: Boom: x | 1.0 s (0.5 s CPU), 150 MB |" in table
    assert "| train | 1.0 s (0.5 s CPU), 150 MB | skipped: tokenizer did not finish |" in table
    fits = {(f["stage"], f["against"]): f["time_exponent"] for f in results["growth"]}
    assert fits == {("data", "items"): 1.0, ("data", "users"): 0.0, ("tokenizer", "users"): 0.0,
                    ("train", "users"): 0.0}

    calls.clear()
    assert bench.main(argv) == 0
    assert calls == []  # every cell finished (the failed one too) or blocked by it
    assert bench.main([*argv, "--retry_failed", "true"]) == 0
    assert calls == [(400, "tokenizer")]  # fails again, so train stays skipped
    with pytest.raises(ConfigError, match="choose another --out_dir"):
        bench.main([*argv, "--train_steps", "7"])  # other settings never mix into one table


@pytest.mark.parametrize("bad, message", [(["--extra_sizes", "10x"], "ITEMSxUSERS"), (["--stages", "fly"], "unknown")])
def test_bad_flags_name_the_fix(bench, bad, message):
    from recdata.config import parse_config

    with pytest.raises(ConfigError, match=message):
        parse_config([bench.BenchScaleConfig], bad)


def test_tiny_run_end_to_end(tmp_path):
    """Two sizes, every stage through the real pipeline, in a fresh process (the benchmark forks its stages)."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_scale.py"), "--tiny", "true", "--out_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "scale.json").read_text())
    cells = results["cells"]
    assert sorted(cells) == sorted(f"{n}x150/{s}" for n in (300, 600) for s in
                                   ("generate", "data", "embeddings", "tokenizer", "tasks", "train", "evaluate",
                                    "cache"))
    assert all(c["status"] == "ok" and c["seconds"] > 0 and c["peak_rss_mb"] > 0 for c in cells.values()), cells
    assert cells["600x150/data"]["summary"]["items"] == 600  # the whole catalogue reaches the split
    assert cells["300x150/evaluate"]["summary"]["alignrec"]["n"] == 20
    train = cells["300x150/train"]["summary"]
    assert train["last_loss"] < train["first_loss"]  # the tiny model trained, for exactly --train_steps steps
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "work" / "runs" / "300x150" / "train" / "model" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 4
    assert {(f["stage"], f["against"]) for f in results["growth"]} == {(s, "items") for s in
                                                                      ("generate", "data", "embeddings", "tokenizer",
                                                                       "tasks", "train", "evaluate", "cache")}
    table = (tmp_path / "scale.md").read_text()
    assert "| stage | 300 items x 150 users | 600 items x 150 users |" in table and "| cache | " in table
    assert (tmp_path / "scale.png").stat().st_size > 0


def test_sizes_grid_plus_extra_sizes(bench):
    from recdata.config import parse_config

    (cfg,) = parse_config([bench.BenchScaleConfig], ["--items", "20", "10", "--users", "5", "--extra_sizes", "10x50"])
    assert cfg.sizes() == [(10, 5), (20, 5), (10, 50)]
    (cfg,) = parse_config([bench.BenchScaleConfig], ["--extra_sizes", "none"])
    assert cfg.sizes() == [(10_000, 100_000), (100_000, 100_000), (1_000_000, 100_000)]


def test_two_rq_levels_from_100k_items_unless_fixed(bench, tmp_path):
    from recdata.config import parse_config

    (cfg,) = parse_config([bench.BenchScaleConfig], [])
    assert [cfg.levels(n) for n in (10_000, 99_999, 100_000, 1_000_000)] == [1, 1, 2, 2]
    assert bench.base_config(cfg, tmp_path, tmp_path, 1_000_000)["tokenizer"]["num_levels"] == 2
    assert bench.base_config(cfg, tmp_path, tmp_path, 10_000)["tokenizer"]["num_levels"] == 1
    (fixed,) = parse_config([bench.BenchScaleConfig], ["--num_levels", "1"])
    assert fixed.levels(1_000_000) == 1 and fixed.settings()["num_levels"] == "1" != cfg.settings()["num_levels"]
    with pytest.raises(ConfigError, match="num_levels"):
        parse_config([bench.BenchScaleConfig], ["--num_levels", "0"])
